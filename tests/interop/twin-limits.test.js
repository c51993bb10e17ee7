// Twin updates that must be refused before anything is written: a stale
// etag (412), and patches beyond the limits of design.md §3 (400 with a
// message naming the rule), from the back end and from the device.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Client } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { Registry } = require('azure-iothub');
const { Server, deviceCs, rest, withTimeout, report } = require('./lib/server');

let server;
let registry;
let key;

before(async () => {
  server = await new Server({ name: 'limits' }).start();
  registry = Registry.fromConnectionString(server.ownerCs());
  key = (await registry.create({ deviceId: 'lim-1' })).responseBody.authentication.symmetricKey.primaryKey;
});

after(async () => {
  await server?.stop();
});

async function twinNow() {
  return (await registry.getTwin('lim-1')).responseBody;
}

function nested(levels) {
  let o = { leaf: 1 };
  for (let i = 1; i < levels; i++) o = { [`l${i}`]: o };
  return o;
}

test('a stale twin etag is refused with 412 and nothing changes', async () => {
  const t0 = await twinNow();
  const r1 = (await registry.updateTwin('lim-1', { properties: { desired: { a: 1 } } }, t0.etag)).responseBody;
  assert.notEqual(r1.etag, t0.etag);
  await assert.rejects(registry.updateTwin('lim-1', { properties: { desired: { a: 2 } } }, t0.etag),
    (e) => e.name === 'InvalidEtagError');
  const t2 = await twinNow();
  assert.equal(t2.properties.desired.a, 1);
  assert.equal(t2.version, r1.version);
});

test('back-end patches beyond the limits are refused with the rule named', async () => {
  const before = await twinNow();
  const cases = [
    [{ properties: { desired: nested(11) } }, /deeper than 10/],
    [{ properties: { desired: Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`k${i}`, 'x'.repeat(4000)])) } }, /limit of 32768/],
    [{ properties: { desired: { s: 'y'.repeat(5000) } } }, /longer than 4096/],
    [{ properties: { desired: { 'bad$key': 1 } } }, /contains '\.', '\$'/],
    [{ properties: { desired: { 'a.b': 1 } } }, /contains '\.'/],
    [{ tags: { big: Object.fromEntries(Array.from({ length: 3 }, (_, i) => [`t${i}`, 'z'.repeat(3000)])) } }, /tags would be/],
    [{ properties: { desired: { n: 4503599627370496 } } }, /integer outside/],
  ];
  for (const [patch, rule] of cases) {
    const r = await rest(server.ownerCs(), 'PATCH', '/twins/lim-1?api-version=2021-04-12', patch, { 'If-Match': '"*"' });
    assert.equal(r.status, 400, `status for ${JSON.stringify(patch).slice(0, 60)}`);
    assert.equal(r.body.errorCode, 400004);
    assert.match(r.body.message, rule);
  }
  const bad = await rest(server.ownerCs(), 'PATCH', '/twins/lim-1?api-version=2021-04-12', '{"properties":', { 'If-Match': '"*"' });
  assert.equal(bad.status, 400);
  const after = await twinNow();
  assert.equal(after.version, before.version, 'nothing was written');
  assert.deepEqual(after.properties.desired, before.properties.desired);
});

test('device reported patches beyond the limits are refused', async () => {
  const client = Client.fromConnectionString(deviceCs('localhost', 'lim-1', key), Mqtt);
  await withTimeout(client.open(), 10000, 'open');
  try {
    const twin = await client.getTwin();
    await report(twin, { ok: 1 });
    const v = (await twinNow()).properties.reported.$version;
    await assert.rejects(report(twin, Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`r${i}`, 'x'.repeat(4000)]))));
    await assert.rejects(report(twin, nested(12)));
    await assert.rejects(report(twin, { 'no space': 1 }));
    const t = await twinNow();
    assert.equal(t.properties.reported.$version, v, 'nothing was written');
    await report(twin, { ok: 2 });
    assert.equal((await twinNow()).properties.reported.ok, 2, 'the session still works');
  } finally {
    await client.close();
  }
});

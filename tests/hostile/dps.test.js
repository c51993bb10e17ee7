// Hostile input to the DPS device API, byte-exact: CONNECT user names that
// are not "<idScope>/registrations/<id>/...", register and poll topics with
// injected or missing $rid, bodies that are not the register object, and
// HTTPS device paths with hostile registration ids. Each is refused (a
// CONNACK refusal, a closed session, a 400 on the response topic, or a 4xx);
// after each, a real SDK registration still succeeds.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { interop, Server, withTimeout, rawConnect, expectClose, connect, publish, subscribe } = require('./lib');
const { rest } = require('../interop/lib/server');

const { ProvisioningDeviceClient } = interop('azure-iot-provisioning-device');
const { Mqtt } = interop('azure-iot-provisioning-device-mqtt');
const { SymmetricKeySecurityClient } = interop('azure-iot-security-symmetric-key');
const { SharedAccessSignature } = interop('azure-iot-common');

const KEY = Buffer.alloc(32, 0x61).toString('base64');
let server;
let scope;
let rounds = 0;

before(async () => {
  server = await new Server({ name: 'hostile-dps' }).start();
  scope = server.idScope;
  assert.ok(scope, 'the default DPS prints its id scope');
  const r = await rest(server.dpsCs, 'PUT', '/enrollments/dev-1?api-version=2021-10-01', {
    registrationId: 'dev-1', attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: KEY, secondaryKey: KEY } },
  });
  assert.equal(r.status, 200, r.text);
});

after(async () => {
  await server?.stop();
});

function sas(regId) {
  return SharedAccessSignature.create(encodeURIComponent(`${scope}/registrations/${regId}`), 'registration', KEY,
    Math.floor(Date.now() / 1000) + 3600).toString();
}

const username = (regId) => `${scope}/registrations/${regId}/api-version=2019-03-31`;

async function stillServing(what) {
  assert.equal(server.proc.exitCode, null, `server exited after ${what}`);
  const t = new Mqtt();
  t.on('error', () => {});
  const client = ProvisioningDeviceClient.create('localhost:8883', scope, t, new SymmetricKeySecurityClient('dev-1', KEY));
  const s = await withTimeout(client.register(), 15000, `registration after ${what}`);
  assert.equal(s.status, 'assigned', what);
  rounds++;
}

test('CONNECTs that are not a registration are refused', async () => {
  const cases = {
    'empty registration id': [username(''), ''],
    'dot-dot registration id': [username('..'), '..'],
    'upper-case registration id': [username('Dev-1'), 'Dev-1'],
    'NUL in the user name': [`${scope}/registrations/dev\u00001/api-version=2019-03-31`, 'dev\u00001'],
    'client id differs': [username('dev-1'), 'dev-2'],
    'another id scope': [username('dev-1').replace(scope, '0ne00000000'), 'dev-1'],
    'no password': [username('dev-1'), 'dev-1', null],
    'token for another registration': [username('dev-1'), 'dev-1', sas('dev-2')],
  };
  for (const [what, [user, clientId, password]] of Object.entries(cases)) {
    const bytes = connect({ clientId, username: user, ...(password === null ? {} : { password: password ?? sas(clientId) }) });
    const r = await expectClose(server, bytes, 5000, what);
    if (r.received.length) {
      assert.equal(r.received[0], 0x20, `${what}: only a CONNACK`);
      assert.notEqual(r.received[3], 0, `${what}: not accepted`);
    }
  }
  await stillServing('refused CONNECTs');
});

test('bad register and poll publishes: 400 on the response topic or a closed session', async () => {
  const regTopic = (rid) => `$dps/registrations/PUT/iotdps-register/?$rid=${rid}`;
  const closes = {
    'no $rid': publish('$dps/registrations/PUT/iotdps-register/?x=1', '{}'),
    '$rid with #': publish(regTopic('1#'), '{}'),
    '$rid with /': publish(regTopic('1/../2'), '{}'),
    '$rid with +': publish(regTopic('+'), '{}'),
    'NUL in the topic': publish(Buffer.from(`${regTopic('1')}\u0000x`), '{}'),
    'unknown topic': publish('$dps/registrations/DELETE/x/?$rid=1', ''),
    'hub topic on the DPS': publish('$iothub/twin/GET/?$rid=1', ''),
    'QoS 2': publish(regTopic('1'), '{}', { qos: 2 }),
  };
  for (const [what, bytes] of Object.entries(closes)) {
    await expectClose(server, [connect({ clientId: 'dev-1', username: username('dev-1'), password: sas('dev-1') }), bytes], 5000, what);
  }
  const bad400 = {
    'array body': '[1,2]',
    'string body': '"x"',
    'nested 100,000 deep': '{"payload":' + '['.repeat(100000) + ']'.repeat(100000) + '}',
    'duplicate keys': '{"payload":1,"payload":2}',
    'other registrationId': '{"registrationId":"dev-2"}',
    'truncated': '{"registrationId":',
    'invalid UTF-8': Buffer.concat([Buffer.from('{"payload":"'), Buffer.from([0xff]), Buffer.from('"}')]),
  };
  let rid = 0;
  for (const [what, body] of Object.entries(bad400)) {
    const c = await rawConnect(server);
    try {
      await c.write(connect({ clientId: 'dev-1', username: username('dev-1'), password: sas('dev-1') }));
      await c.write(subscribe(['$dps/registrations/res/#']));
      rid++;
      await c.write(publish(regTopic(rid), body));
      const topic = Buffer.from(`$dps/registrations/res/400/?$rid=${rid}`);
      await withTimeout((async () => {
        while (!c.received.includes(topic) && !c.sock.destroyed) await new Promise((r) => setTimeout(r, 20));
      })(), 5000, `400 for ${what}`);
      assert.ok(c.received.includes(topic), `${what}: a 400 on the response topic`);
    } finally {
      c.end();
    }
  }
  await stillServing('bad publishes');
});

test('hostile HTTPS device paths and bodies get a 4xx', async () => {
  const auth = sas('dev-1');
  const path = (id, tail = '/register') => `/${scope}/registrations/${id}${tail}?api-version=2019-03-31`;
  const cases = [
    ['PUT', path('a%00b'), '{}', 400],
    ['PUT', path('%FF'), '{}', 400],
    ['PUT', path('..'), '{}', 400],
    ['PUT', path('x'.repeat(200)), '{}', 400],
    ['GET', path('dev-1', '/operations/..%2F..%2Fx'), undefined, 404],
    ['GET', path('dev-1', '/operations/' + 'a'.repeat(100)), undefined, 404],
    ['PUT', path('dev-1'), '[1]', 400],
    ['PUT', path('dev-1'), '{"registrationId":"dev-2"}', 400],
    ['PUT', path('dev-1'), '{"payload":' + '['.repeat(100000) + ']'.repeat(100000) + '}', 400],
  ];
  for (const [method, p, body, status] of cases) {
    const r = await rest(server.dpsCs, method, p, body, { Authorization: auth });
    assert.equal(r.status, status, `${method} ${p.slice(0, 80)}: ${r.status} ${r.text.slice(0, 160)}`);
  }
  await stillServing('hostile HTTPS device requests');
  assert.equal(rounds, 3);
});

// Durability: an acknowledged reported patch survives SIGKILL of the
// server; devices and twins survive a clean restart.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Client } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { NoRetry } = require('azure-iot-common');
const { Registry } = require('azure-iothub');
const { Server, deviceCs, withTimeout, report } = require('./lib/server');

let server;

before(async () => {
  server = await new Server({ name: 'persist' }).start();
});

after(async () => {
  await server?.stop();
});

test('an acknowledged reported patch survives kill -9', async () => {
  let registry = Registry.fromConnectionString(server.ownerCs());
  const key = (await registry.create({ deviceId: 'p-1' })).responseBody.authentication.symmetricKey.primaryKey;
  for (let round = 1; round <= 3; round++) {
    const client = Client.fromConnectionString(deviceCs('localhost', 'p-1', key), Mqtt);
    client.setRetryPolicy(new NoRetry());
    await withTimeout(client.open(), 10000, 'open');
    const twin = await client.getTwin();
    // Patches are acknowledged one after the other; the kill follows the
    // last acknowledgement at once.
    for (let i = 1; i <= 5; i++) await report(twin, { round, counter: i });
    await server.kill();
    await client.close().catch(() => {});
    await server.start();
    registry = Registry.fromConnectionString(server.ownerCs());
    const t = (await registry.getTwin('p-1')).responseBody;
    assert.equal(t.properties.reported.round, round);
    assert.equal(t.properties.reported.counter, 5);
    assert.equal(t.properties.reported.$version, 1 + 5 * round);
  }
});

test('devices, keys and twins survive a clean restart', async () => {
  let registry = Registry.fromConnectionString(server.ownerCs());
  const ownerBefore = server.ownerCs();
  await registry.create({ deviceId: 'p-2' });
  await registry.updateTwin('p-2', { tags: { a: 1 }, properties: { desired: { b: { c: 2 } } } }, '*');
  const t0 = (await registry.getTwin('p-2')).responseBody;
  await server.stop();
  await server.start();
  assert.equal(server.ownerCs(), ownerBefore, 'the generated owner key is kept');
  registry = Registry.fromConnectionString(server.ownerCs());
  const t1 = (await registry.getTwin('p-2')).responseBody;
  assert.deepEqual(t1.tags, t0.tags);
  assert.deepEqual(t1.properties, t0.properties);
  assert.equal(t1.etag, t0.etag);
  const d = (await registry.get('p-2')).responseBody;
  assert.equal(d.deviceId, 'p-2');
});

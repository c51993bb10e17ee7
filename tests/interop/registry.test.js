// Identity registry through azure-iothub's Registry: create with generated
// keys, get, list, update, disable (a connected device is dropped and
// cannot come back), enable, delete, and the errors the SDK maps.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Client } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { NoRetry } = require('azure-iot-common');
const { Registry } = require('azure-iothub');
const { Server, deviceCs, rest, withTimeout, waitFor } = require('./lib/server');

let server;
let registry;

before(async () => {
  server = await new Server({ name: 'registry' }).start();
  registry = Registry.fromConnectionString(server.ownerCs());
});

after(async () => {
  await server?.stop();
});

function deviceClient(id, key) {
  const c = Client.fromConnectionString(deviceCs('localhost', id, key), Mqtt);
  c.setRetryPolicy(new NoRetry());
  return c;
}

test('create, get, list, delete', async () => {
  const dev = (await registry.create({ deviceId: 'reg-1' })).responseBody;
  assert.equal(dev.deviceId, 'reg-1');
  assert.equal(dev.status, 'enabled');
  assert.match(dev.authentication.symmetricKey.primaryKey, /^[A-Za-z0-9+/]{43}=$/);
  assert.notEqual(dev.authentication.symmetricKey.primaryKey, dev.authentication.symmetricKey.secondaryKey);
  assert.ok(dev.etag && dev.generationId);

  const given = Buffer.alloc(32, 7).toString('base64');
  const dev2 = (await registry.create({ deviceId: 'reg:2#x', authentication: { symmetricKey: { primaryKey: given, secondaryKey: given } } })).responseBody;
  assert.equal(dev2.authentication.symmetricKey.primaryKey, given, 'given keys are kept');

  const got = (await registry.get('reg-1')).responseBody;
  assert.deepEqual(got.authentication, dev.authentication);
  const list = (await registry.list()).responseBody.map((d) => d.deviceId);
  assert.deepEqual(list.sort(), ['reg-1', 'reg:2#x']);

  await assert.rejects(registry.create({ deviceId: 'reg-1' }), (e) => e.name === 'DeviceAlreadyExistsError');
  await registry.delete('reg:2#x');
  await assert.rejects(registry.get('reg:2#x'), (e) => e.name === 'DeviceNotFoundError');
  await assert.rejects(registry.delete('nobody'), (e) => e.name === 'DeviceNotFoundError');
});

test('a stale device etag is refused with 412 and changes nothing', async () => {
  const dev = (await registry.create({ deviceId: 'reg-etag' })).responseBody;
  const ok = await rest(server.ownerCs(), 'PUT', '/devices/reg-etag?api-version=2021-04-12',
    { ...dev, status: 'disabled' }, { 'If-Match': `"${dev.etag}"` });
  assert.equal(ok.status, 200);
  assert.notEqual(ok.body.etag, dev.etag);
  const stale = await rest(server.ownerCs(), 'PUT', '/devices/reg-etag?api-version=2021-04-12',
    { ...dev, status: 'enabled' }, { 'If-Match': `"${dev.etag}"` });
  assert.equal(stale.status, 412);
  assert.match(stale.body.Message, /^ErrorCode:PreconditionFailed;/);
  assert.equal((await registry.get('reg-etag')).responseBody.status, 'disabled');
});

test('disabling drops the live connection and refuses new ones; enabling lets it back', async () => {
  const dev = (await registry.create({ deviceId: 'reg-dis' })).responseBody;
  const key = dev.authentication.symmetricKey.primaryKey;
  const client = deviceClient('reg-dis', key);
  await withTimeout(client.open(), 10000, 'open');
  let dropped = false;
  client.on('disconnect', () => { dropped = true; });
  client.on('error', () => { dropped = true; });
  assert.equal((await registry.get('reg-dis')).responseBody.connectionState, 'Connected');

  await registry.update({ deviceId: 'reg-dis', status: 'disabled' });
  await waitFor(() => dropped, 10000, 'the device to be disconnected');
  await client.close().catch(() => {});

  const again = deviceClient('reg-dis', key);
  await assert.rejects(withTimeout(again.open(), 10000, 'open while disabled'));
  await again.close().catch(() => {});

  await registry.update({ deviceId: 'reg-dis', status: 'enabled' });
  const back = deviceClient('reg-dis', key);
  await withTimeout(back.open(), 10000, 'open after enabling');
  await back.close();
});

test('statistics count enabled and disabled devices', async () => {
  const stats = await rest(server.ownerCs(), 'GET', '/statistics/devices?api-version=2021-04-12');
  assert.equal(stats.status, 200);
  // reg-1 and reg-dis (enabled again) remain enabled, reg-etag was disabled.
  assert.deepEqual(stats.body, { totalDeviceCount: 3, enabledDeviceCount: 2, disabledDeviceCount: 1 });
});

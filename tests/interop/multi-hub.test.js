// Two hubs in one process are fully separate: a device of one is unknown
// to the other, and the same device id on both has two independent twins.
// Also: a client that dials an IP address (no SNI) reaches the hub of that
// listener, and may name it by that address.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Client } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { NoRetry } = require('azure-iot-common');
const { Registry } = require('azure-iothub');
const { Server, deviceCs, withTimeout } = require('./lib/server');

const H1 = 'hub1.fleethub.test';
const H2 = 'hub2.fleethub.test';
const KEY1 = Buffer.alloc(32, 0x11).toString('base64');
let server;

before(async () => {
  server = await new Server({
    name: 'multihub', mqtt: '', https: '',
    hubs: [
      { name: H1, ownerKey: KEY1, mqtt: '127.0.0.4:8883', https: '127.0.0.4:443' },
      { name: H2, mqtt: '127.0.0.5:8883', https: '127.0.0.5:443' },
    ],
  }).start();
});

after(async () => {
  await server?.stop();
});

test('a device of one hub is unknown to the other', async () => {
  assert.equal(server.ownerCs(H1), `HostName=${H1};SharedAccessKeyName=iothubowner;SharedAccessKey=${KEY1}`, 'configured owner key');
  const r1 = Registry.fromConnectionString(server.ownerCs(H1));
  const r2 = Registry.fromConnectionString(server.ownerCs(H2));
  const key = (await r1.create({ deviceId: 'only-on-1' })).responseBody.authentication.symmetricKey.primaryKey;
  await assert.rejects(r2.get('only-on-1'), (e) => e.name === 'DeviceNotFoundError');

  const ok = Client.fromConnectionString(deviceCs(H1, 'only-on-1', key), Mqtt);
  await withTimeout(ok.open(), 10000, 'open on hub1');
  await ok.close();
  const wrong = Client.fromConnectionString(deviceCs(H2, 'only-on-1', key), Mqtt);
  wrong.setRetryPolicy(new NoRetry());
  await assert.rejects(withTimeout(wrong.open(), 10000, 'open on hub2'));
  await wrong.close().catch(() => {});

  // hub1's owner key does not open hub2's REST API.
  const forged = Registry.fromConnectionString(server.ownerCs(H1).replace(H1, H2));
  await assert.rejects(forged.get('only-on-1'), (e) => e.name === 'UnauthorizedError');
});

test('the same device id on both hubs has independent twins', async () => {
  const r1 = Registry.fromConnectionString(server.ownerCs(H1));
  const r2 = Registry.fromConnectionString(server.ownerCs(H2));
  await r1.create({ deviceId: 'twice' });
  await r2.create({ deviceId: 'twice' });
  await r1.updateTwin('twice', { properties: { desired: { where: 'one' } } }, '*');
  const t2 = (await r2.getTwin('twice')).responseBody;
  assert.equal(t2.properties.desired.where, undefined);
  await r2.delete('twice');
  assert.equal((await r1.getTwin('twice')).responseBody.properties.desired.where, 'one');
});

test('an IP address names the hub of its listener', async () => {
  const viaIp = Registry.fromConnectionString(server.ownerCs(H1).replace(H1, '127.0.0.4'));
  const dev = (await viaIp.create({ deviceId: 'by-ip' })).responseBody;
  const r1 = Registry.fromConnectionString(server.ownerCs(H1));
  assert.equal((await r1.get('by-ip')).responseBody.deviceId, 'by-ip');
  const key = dev.authentication.symmetricKey.primaryKey;
  const c = Client.fromConnectionString(deviceCs('127.0.0.4', 'by-ip', key), Mqtt);
  await withTimeout(c.open(), 10000, 'open by IP');
  await c.close();
});

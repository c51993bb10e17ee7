// Authentication and authorization of devices and services: wrong keys,
// expired tokens, unknown devices, another device's topics, and policy
// rights on the REST routes.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const mqtt = require('mqtt');
const { Client } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { NoRetry, SharedAccessSignature } = require('azure-iot-common');
const { Registry } = require('azure-iothub');
const { Server, deviceCs, rest, withTimeout } = require('./lib/server');

let server;
let registry;
const keys = {};

before(async () => {
  server = await new Server({ name: 'auth' }).start();
  registry = Registry.fromConnectionString(server.ownerCs());
  for (const id of ['auth-a', 'auth-b']) {
    keys[id] = (await registry.create({ deviceId: id })).responseBody.authentication.symmetricKey.primaryKey;
  }
});

after(async () => {
  await server?.stop();
});

function token(resource, key, expiry, keyName) {
  return SharedAccessSignature.create(encodeURIComponent(resource), keyName, key, expiry).toString();
}

async function openFails(client) {
  client.setRetryPolicy(new NoRetry());
  await assert.rejects(withTimeout(client.open(), 10000, 'open'), (e) => /Unauthorized|Not authorized|Bad user/i.test(`${e.name} ${e.message}`));
  await client.close().catch(() => {});
}

test('a wrong key is refused', async () => {
  const wrong = Buffer.alloc(32, 1).toString('base64');
  await openFails(Client.fromConnectionString(deviceCs('localhost', 'auth-a', wrong), Mqtt));
});

test('an expired token is refused, a fresh one accepted', async () => {
  const past = Math.floor(Date.now() / 1000) - 60;
  await openFails(Client.fromSharedAccessSignature(token('localhost/devices/auth-a', keys['auth-a'], past), Mqtt));
  const fresh = Client.fromSharedAccessSignature(token('localhost/devices/auth-a', keys['auth-a'], past + 3600), Mqtt);
  await withTimeout(fresh.open(), 10000, 'open with a fresh token');
  await fresh.close();
});

test('an unknown device and another device\'s key are refused', async () => {
  await openFails(Client.fromConnectionString(deviceCs('localhost', 'nobody', keys['auth-a']), Mqtt));
  await openFails(Client.fromConnectionString(deviceCs('localhost', 'auth-b', keys['auth-a']), Mqtt));
});

function rawConnect(id) {
  const password = token(`localhost/devices/${id}`, keys[id], Math.floor(Date.now() / 1000) + 3600);
  const c = mqtt.connect('mqtts://localhost:8883', {
    clientId: id, username: `localhost/${id}/?api-version=2021-04-12`, password,
    protocolVersion: 4, clean: true, reconnectPeriod: 0, ca: require('fs').readFileSync(server.caPath),
  });
  return new Promise((resolve, reject) => {
    c.once('connect', () => resolve(c));
    c.once('error', reject);
  });
}

test('a device cannot subscribe to or publish on another device\'s topics', async () => {
  const c = await rawConnect('auth-a');
  const granted = await new Promise((resolve, reject) => c.subscribe({
    'devices/auth-b/messages/devicebound/#': { qos: 1 },
    'devices/auth-a/messages/devicebound/#': { qos: 1 },
    '$iothub/twin/res/#': { qos: 0 },
    '#': { qos: 0 },
  }, (err, g) => (err ? reject(err) : resolve(g))));
  const byTopic = Object.fromEntries(granted.map((g) => [g.topic, g.qos]));
  assert.equal(byTopic['devices/auth-b/messages/devicebound/#'], 128, 'another device: refused');
  assert.equal(byTopic['#'], 128, 'wildcard: refused');
  assert.equal(byTopic['devices/auth-a/messages/devicebound/#'], 1);
  assert.equal(byTopic['$iothub/twin/res/#'], 0);

  // The twin the device gets has no tags.
  await registry.updateTwin('auth-a', { tags: { secret: 'back-end only' } }, '*');
  const body = await new Promise((resolve) => {
    c.on('message', (topic, payload) => {
      if (topic.startsWith('$iothub/twin/res/200/?$rid=r1')) resolve(payload.toString());
    });
    c.publish('$iothub/twin/GET/?$rid=r1', ' ');
  });
  assert.equal(body.includes('secret'), false);
  assert.ok(JSON.parse(body).desired.$version >= 1);

  // Publishing as another device closes the connection.
  const closed = new Promise((resolve) => c.once('close', resolve));
  c.publish('devices/auth-b/messages/events/', 'x', { qos: 1 });
  await withTimeout(closed, 5000, 'connection closed after a forbidden publish');
  c.end(true);
});

test('service policies: rights are enforced on every route', async () => {
  const owner = server.ownerCs();
  const cs = (name, key) => owner.replace(/SharedAccessKeyName=[^;]+/, `SharedAccessKeyName=${name}`).replace(/SharedAccessKey=.*$/, `SharedAccessKey=${key}`);
  // Only the owner's key is printed; other policies are refused with it.
  const wrongPolicy = cs('registryRead', owner.split('SharedAccessKey=')[1]);
  const r = await rest(wrongPolicy, 'GET', '/devices/auth-a?api-version=2021-04-12');
  assert.equal(r.status, 401);
  assert.match(r.body.Message, /^ErrorCode:IotHubUnauthorizedAccess;/);
  const none = await rest(owner, 'GET', '/devices/auth-a?api-version=2021-04-12', undefined, { Authorization: 'SharedAccessSignature sr=localhost&sig=AAAA&se=1' });
  assert.equal(none.status, 401);
  const expired = token('localhost', owner.split('SharedAccessKey=')[1], Math.floor(Date.now() / 1000) - 5, 'iothubowner');
  const e = await rest(owner, 'GET', '/devices/auth-a?api-version=2021-04-12', undefined, { Authorization: expired });
  assert.equal(e.status, 401);
  // A device token does not open service routes.
  const dev = token('localhost/devices/auth-a', keys['auth-a'], Math.floor(Date.now() / 1000) + 600);
  const d = await rest(owner, 'GET', '/devices/auth-a?api-version=2021-04-12', undefined, { Authorization: dev });
  assert.equal(d.status, 401);
});

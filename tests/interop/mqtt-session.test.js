// MQTT session rules seen from a raw client (the mqtt package the Node SDK
// is built on): MQTT 3.1 CONNECTs (the C SDK's fallback), a second
// connection replacing the first, clean-session 0 keeping subscriptions,
// and packets a device must not send.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('fs');
const { SharedAccessSignature } = require('azure-iot-common');
const { Registry } = require('azure-iothub');
const { Server, withTimeout, waitFor, mqttDevice } = require('./lib/server');

let server;
let registry;
let key;

before(async () => {
  server = await new Server({ name: 'session' }).start();
  registry = Registry.fromConnectionString(server.ownerCs());
  key = (await registry.create({ deviceId: 'ses-1' })).responseBody.authentication.symmetricKey.primaryKey;
});

after(async () => {
  await server?.stop();
});

function connect(opts = {}) {
  return mqttDevice(server, 'ses-1', key, opts);
}

test('an MQTT 3.1 (MQIsdp) CONNECT is accepted', async () => {
  const { c } = await withTimeout(connect({ protocolId: 'MQIsdp', protocolVersion: 3 }), 5000, 'connect 3.1');
  c.end(true);
});

test('a second connection for the same device replaces the first', async () => {
  const first = (await connect()).c;
  const closed = new Promise((resolve) => first.once('close', resolve));
  const second = (await connect()).c;
  await withTimeout(closed, 5000, 'the first connection to close');
  assert.equal((await registry.get('ses-1')).responseBody.connectionState, 'Connected');
  second.end(true);
});

test('clean session 0 keeps subscriptions across reconnects; clean session 1 drops them', async () => {
  let { c, connack } = await connect({ clean: false });
  assert.equal(connack.sessionPresent, false);
  await new Promise((resolve, reject) => c.subscribe('$iothub/twin/PATCH/properties/desired/#', { qos: 0 }, (e) => (e ? reject(e) : resolve())));
  c.end(true);
  await waitFor(async () => (await registry.get('ses-1')).responseBody.connectionState === 'Disconnected', 5000, 'disconnect');

  ({ c, connack } = await connect({ clean: false }));
  assert.equal(connack.sessionPresent, true);
  const got = new Promise((resolve) => c.on('message', (topic, payload) => resolve({ topic, body: JSON.parse(payload) })));
  await registry.updateTwin('ses-1', { properties: { desired: { kept: true } } }, '*');
  const msg = await withTimeout(got, 5000, 'a desired notification without subscribing again');
  assert.match(msg.topic, /^\$iothub\/twin\/PATCH\/properties\/desired\/\?\$version=\d+$/);
  assert.equal(msg.body.kept, true);
  c.end(true);

  ({ c, connack } = await connect({ clean: true }));
  assert.equal(connack.sessionPresent, false);
  c.end(true);
});

test('QoS 2 and unknown topics close the connection; the server stays up', async () => {
  for (const [topic, qos] of [['devices/ses-1/messages/events/', 2], ['$iothub/unknown', 0], ['$iothub/twin/GET/', 0]]) {
    const { c } = await connect();
    const closed = new Promise((resolve) => c.once('close', resolve));
    c.publish(topic, 'x', { qos });
    await withTimeout(closed, 5000, `close after publishing to ${topic} at QoS ${qos}`);
    c.end(true);
  }
  const { c } = await connect();
  c.end(true);
});

test('keep-alive is enforced at 1.5 times the CONNECT keep-alive', async () => {
  const tls = require('tls');
  const packet = require('mqtt-packet');
  const password = SharedAccessSignature.create(encodeURIComponent('localhost/devices/ses-1'), null, key,
    Math.floor(Date.now() / 1000) + 3600).toString();
  const bytes = packet.generate({
    cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 1,
    clientId: 'ses-1', username: 'localhost/ses-1/?api-version=2021-04-12', password: Buffer.from(password),
  });
  const sock = tls.connect({ host: 'localhost', port: 8883, servername: 'localhost', ca: fs.readFileSync(server.caPath) });
  const started = Date.now();
  let got = Buffer.alloc(0);
  sock.on('data', (d) => { got = Buffer.concat([got, d]); });
  sock.once('secureConnect', () => sock.write(bytes));
  const closedAt = await withTimeout(new Promise((resolve) => sock.once('close', () => resolve(Date.now()))), 6000, 'idle close');
  assert.deepEqual([...got.subarray(0, 4)], [0x20, 0x02, 0x00, 0x00], 'CONNACK accepted');
  const idle = closedAt - started;
  assert.ok(idle >= 1400 && idle < 3000, `closed after ${idle} ms of silence (want about 1500)`);
});

test('an MQTT 5 CONNECT gets CONNACK 1 (unacceptable protocol version)', async () => {
  const tls = require('tls');
  const packet = require('mqtt-packet');
  const bytes = packet.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, keepalive: 60, clientId: 'ses-1' }, { protocolVersion: 5 });
  const sock = tls.connect({ host: 'localhost', port: 8883, servername: 'localhost', ca: fs.readFileSync(server.caPath) });
  let got = Buffer.alloc(0);
  sock.on('data', (d) => { got = Buffer.concat([got, d]); });
  sock.once('secureConnect', () => sock.write(bytes));
  await withTimeout(new Promise((resolve) => sock.once('close', resolve)), 5000, 'close');
  assert.deepEqual([...got], [0x20, 0x02, 0x00, 0x01]);
});

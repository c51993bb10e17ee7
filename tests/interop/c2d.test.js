// Cloud-to-device messages (issue 18) and the device HTTPS transport: the
// per-device queue filled through fleethub's REST path and CLI (the AMQP
// Client.send is issue 19), delivered to azure-iot-device over MQTT
// (client.on('message'), complete) and over HTTPS (receive, complete,
// reject, abandon); queued while offline, expiry, the 50-message limit,
// redelivery after a dropped connection, purge, feedback records,
// cloudToDeviceMessageCount; telemetry over HTTPS; a flood of
// unacknowledged messages.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('fs');
const { Client, Message } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
const { Http } = require('azure-iot-device-http');
const { Registry } = require('azure-iothub');
const { Server, deviceCs, rest, withTimeout, waitFor, mqttDevice } = require('./lib/server');

let server;
let registry;
const API = 'api-version=2021-04-12';

before(async () => {
  server = await new Server({ name: 'c2d' }).start();
  registry = Registry.fromConnectionString(server.ownerCs());
});

after(async () => {
  await server?.stop();
});

async function createDevice(deviceId) {
  const created = (await registry.create({ deviceId })).responseBody;
  return created.authentication.symmetricKey.primaryKey;
}

function send(deviceId, msg) {
  return rest(server.ownerCs(), 'POST', `/fleethub/devices/${encodeURIComponent(deviceId)}/messages?${API}`, msg);
}

async function queued(deviceId) {
  return (await registry.get(deviceId)).responseBody.cloudToDeviceMessageCount;
}

async function feedback() {
  const r = await rest(server.ownerCs(), 'GET', `/fleethub/feedback?${API}`);
  assert.equal(r.status, 200, r.text);
  return r.body;
}

function listen(client) {
  const got = [];
  client.on('message', (m) => {
    got.push(m);
    client.complete(m).catch(() => {});
  });
  return got;
}

for (const [label, transport] of [['MQTT', Mqtt], ['MQTT over WebSockets', MqttWs]]) {
  test(`a message to an online device over ${label}, with its properties; queued ones on connect`, async () => {
    const deviceId = `c2d-${label.length}`;
    const key = await createDevice(deviceId);
    // Queued while offline.
    for (let i = 0; i < 3; i++) {
      const r = await send(deviceId, { body: `early ${i}`, messageId: `early-${i}`, properties: { n: String(i) } });
      assert.equal(r.status, 201, r.text);
      assert.equal(r.body.messageId, `early-${i}`);
    }
    assert.equal(await queued(deviceId), 3, 'cloudToDeviceMessageCount counts the queue');
    const client = Client.fromConnectionString(deviceCs('localhost', deviceId, key), transport);
    await withTimeout(client.open(), 10000, 'device open');
    try {
      const got = listen(client);
      await waitFor(() => got.length === 3, 10000, 'the queued messages on connect');
      assert.deepEqual(got.map((m) => m.data.toString()), ['early 0', 'early 1', 'early 2']);
      assert.deepEqual(got.map((m) => m.messageId), ['early-0', 'early-1', 'early-2']);
      const r = await send(deviceId, {
        body: '{"cmd":"blink"}', messageId: 'live-1', correlationId: 'corr-9', contentType: 'application/json',
        contentEncoding: 'utf-8', properties: { color: 'red & blue', 'spaced key': 'a=b' },
      });
      assert.equal(r.status, 201, r.text);
      await waitFor(() => got.length === 4, 10000, 'the live message');
      const m = got[3];
      assert.equal(m.data.toString(), '{"cmd":"blink"}');
      assert.equal(m.messageId, 'live-1');
      assert.equal(m.correlationId, 'corr-9');
      assert.equal(m.contentType, 'application/json');
      assert.equal(m.contentEncoding, 'utf-8');
      assert.equal(m.to, `/devices/${deviceId}/messages/devicebound`);
      assert.ok(Date.parse(m.expiryTimeUtc) > Date.now(), 'expiry in the future');
      const props = Object.fromEntries(m.properties.propertyList.map((p) => [p.key, p.value]));
      assert.deepEqual(props, { color: 'red & blue', 'spaced key': 'a=b' });
      await waitFor(async () => (await queued(deviceId)) === 0, 5000, 'the queue drained by the PUBACKs');
    } finally {
      await client.close();
    }
  });
}

test('redelivery after a connection dropped without PUBACK; a flood of unacknowledged messages', async () => {
  const deviceId = 'c2d-noack';
  const key = await createDevice(deviceId);
  for (let i = 0; i < 20; i++) assert.equal((await send(deviceId, { body: `m${i}` })).status, 201);
  // A device that takes messages and never acknowledges them.
  const { c } = await mqttDevice(server, deviceId, key, { clean: true });
  const seen = [];
  c.on('message', (topic, payload) => seen.push(payload.toString()));
  const sendPacket = c._sendPacket.bind(c);
  c._sendPacket = (packet, cb, ...rest) => { // mqtt.js: its PUBACKs are dropped
    if (packet.cmd === 'puback') { if (cb) cb(); return; }
    sendPacket(packet, cb, ...rest);
  };
  await new Promise((r, j) => c.subscribe(`devices/${deviceId}/messages/devicebound/#`, { qos: 1 }, (e) => (e ? j(e) : r())));
  await waitFor(() => seen.length >= 8, 5000, 'the first deliveries');
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(seen.length, 8, 'at most 8 unacknowledged deliveries per device at a time');
  c.end(true);
  assert.equal(await queued(deviceId), 20, 'nothing unacknowledged was removed');
  // The SDK device gets all 20, in order, from the first.
  const client = Client.fromConnectionString(deviceCs('localhost', deviceId, key), Mqtt);
  await withTimeout(client.open(), 10000, 'device open');
  try {
    const got = listen(client);
    await waitFor(() => got.length === 20, 10000, 'every message again');
    assert.deepEqual(got.map((m) => m.data.toString()), Array.from({ length: 20 }, (_, i) => `m${i}`));
    await waitFor(async () => (await queued(deviceId)) === 0, 5000, 'drained');
  } finally {
    await client.close();
  }
});

test('the 50-message limit, expiry and purge, with feedback as the sender asked', async () => {
  const deviceId = 'c2d-limits';
  await createDevice(deviceId);
  for (let i = 0; i < 50; i++) {
    const r = await send(deviceId, { body: `q${i}`, messageId: `q${i}`, ack: i < 3 ? 'full' : 'none' });
    assert.equal(r.status, 201, r.text);
  }
  const full = await send(deviceId, { body: 'one too many' });
  assert.equal(full.status, 403);
  assert.equal(full.body.errorCode, 403004);
  assert.match(full.body.Message, /^ErrorCode:DeviceMaximumQueueDepthExceeded;/);
  assert.equal(await queued(deviceId), 50);
  const before = (await feedback()).length;
  const purge = await rest(server.ownerCs(), 'DELETE', `/devices/${deviceId}/commands?${API}`);
  assert.equal(purge.status, 200, purge.text);
  assert.deepEqual(purge.body, { totalMessagesPurged: 50, deviceId, moduleId: null });
  assert.equal(await queued(deviceId), 0);
  const purged = (await feedback()).slice(before);
  assert.deepEqual(purged.map((f) => [f.originalMessageId, f.statusCode]), [['q0', 'Purged'], ['q1', 'Purged'], ['q2', 'Purged']]);
  assert.equal(purged[0].deviceId, deviceId);
  assert.ok(purged[0].deviceGenerationId);

  // Expiry: a 1-second message to an offline device goes within the sweep.
  assert.equal((await send(deviceId, { body: 'short', messageId: 'short-1', ttlSeconds: 1, ack: 'negative' })).status, 201);
  assert.equal((await send(deviceId, { body: 'kept', messageId: 'kept-1', ack: 'negative' })).status, 201);
  await waitFor(async () => (await queued(deviceId)) === 1, 15000, 'the expired message deleted');
  await waitFor(async () => (await feedback()).some((f) => f.originalMessageId === 'short-1' && f.statusCode === 'Expired'), 5000, 'Expired feedback');
  const bad = await send(deviceId, { body: 'x', ttlSeconds: 0 });
  assert.equal(bad.status, 400);
  assert.equal((await send('no-such-device', { body: 'x' })).status, 404);
  const big = await send(deviceId, { body: 'x'.repeat(65 * 1024) });
  assert.equal(big.status, 413);
});

test('the device HTTPS transport: telemetry, receive, complete, reject, abandon', async () => {
  const deviceId = 'c2d-http';
  const key = await createDevice(deviceId);
  const client = Client.fromConnectionString(deviceCs(server.httpsHost ?? 'localhost', deviceId, key), Http);
  client.setOptions({ ca: fs.readFileSync(server.caPath, 'utf8'), http: { receivePolicy: { interval: 1 } } });
  // Telemetry with properties.
  const since = new Date(Date.now() - 1000).toISOString();
  const ev = new Message('{"t":1}');
  ev.messageId = 'http-ev-1';
  ev.contentType = 'application/json';
  ev.properties.add('alert', 'high temp');
  await withTimeout(client.sendEvent(ev), 10000, 'sendEvent over HTTPS');
  const stream = await rest(server.ownerCs(), 'GET', `/fleethub/events?from=${since}&wait=2&${API}`);
  const mine = stream.text.split('\n').filter((l) => l).map((l) => JSON.parse(l)).filter((e) => e.deviceId === deviceId);
  assert.equal(mine.length, 1);
  assert.equal(mine[0].body, '{"t":1}');
  assert.equal(mine[0].systemProperties.messageId, 'http-ev-1');
  assert.equal(mine[0].systemProperties.contentType, 'application/json');
  assert.deepEqual(mine[0].properties, { alert: 'high temp' });

  // complete, reject, abandon (then redelivered, completed).
  for (const [i, body] of ['done', 'refuse', 'later'].entries()) {
    assert.equal((await send(deviceId, { body, messageId: `h${i}`, ack: 'full', properties: { k: body } })).status, 201);
  }
  const seen = [];
  const fbBefore = (await feedback()).length;
  client.on('message', (m) => {
    seen.push(m);
    const text = m.data.toString();
    const first = seen.filter((x) => x.data.toString() === text).length === 1;
    if (text === 'refuse') client.reject(m).catch((e) => seen.push(e));
    else if (text === 'later' && first) client.abandon(m).catch((e) => seen.push(e));
    else client.complete(m).catch((e) => seen.push(e));
  });
  await waitFor(async () => (await queued(deviceId)) === 0, 20000, 'every message settled');
  client.removeAllListeners('message');
  await client.close();
  const texts = seen.map((m) => (m instanceof Error ? `error ${m.message}` : m.data.toString()));
  assert.deepEqual(texts, ['done', 'refuse', 'later', 'later'], 'abandoned: delivered again');
  assert.equal(seen[0].messageId, 'h0');
  assert.ok(seen[0].lockToken, 'the lock token from the ETag');
  assert.equal(seen[0].properties.getValue ? undefined : undefined, undefined);
  const fb = (await feedback()).slice(fbBefore);
  assert.deepEqual(fb.map((f) => [f.originalMessageId, f.statusCode]).sort(),
    [['h0', 'Success'], ['h1', 'Rejected'], ['h2', 'Success']]);

  // A stale lock: 412.
  const stale = await new Promise((resolve) => {
    const https = require('https');
    const { SharedAccessSignature } = require('azure-iot-common');
    const sas = SharedAccessSignature.create(encodeURIComponent(`localhost/devices/${deviceId}`), null, key, Math.floor(Date.now() / 1000) + 600).toString();
    const req = https.request({ host: 'localhost', port: 443, method: 'DELETE', path: `/devices/${deviceId}/messages/devicebound/no-such-lock?${API}`, headers: { Authorization: sas, 'If-Match': 'no-such-lock' } },
      (res) => { let t = ''; res.on('data', (d) => { t += d; }); res.on('end', () => resolve({ status: res.statusCode, text: t })); });
    req.end();
  });
  assert.equal(stale.status, 412, stale.text);
  assert.match(stale.text, /settled, or its lock ran out/);
});

test('the CLI sends and purges; hub stats counts', async () => {
  const deviceId = 'c2d-cli';
  await createDevice(deviceId);
  const r = server.cli(['c2d', 'send', deviceId, '--body', 'hello', '--prop', 'color=red', '--prop', 'size=L', '--ack', 'full', '--message-id', 'cli-1']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).messageId, 'cli-1');
  assert.equal(await queued(deviceId), 1);
  const stats = server.cli(['hub', 'stats']);
  assert.equal(stats.code, 0, stats.stderr);
  const s = JSON.parse(stats.stdout);
  assert.ok(s.cloudToDevice.queued >= 1);
  assert.ok(s.cloudToDevice.enqueued >= 1);
  assert.equal(s.telemetry.partitions.length, 4);
  assert.ok('appended' in s.telemetry && 'invoked' in s.methods);
  const p = server.cli(['c2d', 'purge', deviceId]);
  assert.equal(p.code, 0, p.stderr);
  assert.equal(JSON.parse(p.stdout).totalMessagesPurged, 1);
  const fb = server.cli(['c2d', 'feedback']);
  assert.equal(fb.code, 0);
  assert.ok(JSON.parse(fb.stdout).some((f) => f.originalMessageId === 'cli-1' && f.statusCode === 'Purged'));
  const bad = server.cli(['c2d', 'send', deviceId]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--body is required/);
});

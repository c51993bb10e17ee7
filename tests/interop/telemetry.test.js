// Telemetry (issue 18): what devices send with the official SDK over MQTT,
// MQTT over WebSockets and HTTPS is stored durably before it is
// acknowledged, and read back through fleethub's event stream
// (GET /fleethub/events) in order, with its properties and the hub's
// system properties. Hostile input gets a clear refusal and loses nothing.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Client, Message } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
const { Registry } = require('azure-iothub');
const { Server, deviceCs, rest, withTimeout, waitFor, mqttDevice } = require('./lib/server');

let server;
let registry;

before(async () => {
  server = await new Server({ name: 'telemetry' }).start();
  registry = Registry.fromConnectionString(server.ownerCs());
});

after(async () => {
  await server?.stop();
});

async function createDevice(deviceId) {
  const created = (await registry.create({ deviceId })).responseBody;
  return created.authentication.symmetricKey.primaryKey;
}

// The events of the stream from `from`, until `limit` arrived or `wait`
// seconds passed without one.
async function readEvents(query) {
  const r = await rest(server.ownerCs(), 'GET', `/fleethub/events?${query}&api-version=2021-04-12`);
  assert.equal(r.status, 200, r.text);
  assert.match(r.headers['content-type'], /application\/x-ndjson/);
  return r.text.split('\n').filter((l) => l).map((l) => JSON.parse(l));
}

function message(i, deviceId) {
  const m = new Message(JSON.stringify({ temperature: 20 + i, n: i }));
  m.messageId = `${deviceId}-msg-${i}`;
  m.correlationId = `corr-${i}`;
  m.contentType = 'application/json';
  m.contentEncoding = 'utf-8';
  m.properties.add('alert', i % 2 ? 'high temp' : 'ok');
  m.properties.add('level', String(i));
  return m;
}

for (const [label, transport] of [['MQTT', Mqtt], ['MQTT over WebSockets', MqttWs]]) {
  test(`sendEvent over ${label}: stored, then read back in order with properties`, async () => {
    const deviceId = `sensor-${label.replace(/\W/g, '')}`;
    const key = await createDevice(deviceId);
    const client = Client.fromConnectionString(deviceCs('localhost', deviceId, key), transport);
    await withTimeout(client.open(), 10000, 'device open');
    const startedAt = new Date(Date.now() - 1000).toISOString();
    try {
      for (let i = 0; i < 5; i++) await withTimeout(client.sendEvent(message(i, deviceId)), 10000, `send ${i}`);
    } finally {
      await client.close();
    }
    const events = (await readEvents(`from=${startedAt}&wait=2`)).filter((e) => e.deviceId === deviceId);
    assert.equal(events.length, 5, 'every acknowledged message is in the log once');
    const part = events[0].partition;
    for (let i = 0; i < 5; i++) {
      const e = events[i];
      assert.equal(e.partition, part, 'one device, one partition');
      if (i) assert.equal(e.sequenceNumber, events[i - 1].sequenceNumber + 1, 'in order, no gaps');
      assert.deepEqual(JSON.parse(e.body), { temperature: 20 + i, n: i });
      assert.deepEqual(e.properties, { alert: i % 2 ? 'high temp' : 'ok', level: String(i) });
      const sys = e.systemProperties;
      assert.equal(sys.messageId, `${deviceId}-msg-${i}`);
      assert.equal(sys.correlationId, `corr-${i}`);
      assert.equal(sys.contentType, 'application/json');
      assert.equal(sys.contentEncoding, 'utf-8');
      assert.equal(sys['iothub-connection-device-id'], deviceId);
      assert.equal(sys['iothub-message-source'], 'Telemetry');
      assert.ok(sys['iothub-connection-auth-generation-id']);
      assert.match(sys['iothub-connection-auth-method'], /"type":"sas"/);
      assert.equal(sys['iothub-enqueuedtime'], e.enqueuedTime);
      assert.ok(Date.parse(e.enqueuedTime) >= Date.parse(startedAt));
      assert.equal(typeof e.offset, 'string');
    }
    // From a sequence number of that partition, inclusive.
    const from = await readEvents(`partition=${part}&from=${events[2].sequenceNumber}&limit=3`);
    assert.deepEqual(from.map((e) => e.systemProperties.messageId), events.slice(2).map((e) => e.systemProperties.messageId));
  });
}

test('a stream waits for what is sent after it opened; consumer group positions', async () => {
  const deviceId = 'live-sensor';
  const key = await createDevice(deviceId);
  const reading = readEvents('from=end&limit=3&wait=20');
  await new Promise((r) => setTimeout(r, 500));
  const client = Client.fromConnectionString(deviceCs('localhost', deviceId, key), Mqtt);
  await withTimeout(client.open(), 10000, 'device open');
  try {
    for (let i = 0; i < 3; i++) await client.sendEvent(message(i, deviceId));
  } finally {
    await client.close();
  }
  const events = await withTimeout(reading, 15000, 'the live stream');
  assert.deepEqual(events.map((e) => e.systemProperties.messageId), [0, 1, 2].map((i) => `${deviceId}-msg-${i}`));

  // A group's checkpoint: a stream of that group without `from` starts after it.
  const part = events[0].partition;
  const put = await rest(server.ownerCs(), 'PUT', '/fleethub/events/groups/dashboard?api-version=2021-04-12',
    { partition: part, sequenceNumber: events[0].sequenceNumber });
  assert.equal(put.status, 200, put.text);
  const got = await rest(server.ownerCs(), 'GET', '/fleethub/events/groups/dashboard?api-version=2021-04-12');
  assert.equal(got.body.partitions[part].sequenceNumber, events[0].sequenceNumber);
  const resumed = await readEvents(`partition=${part}&group=dashboard&limit=2&wait=3`);
  assert.deepEqual(resumed.map((e) => e.sequenceNumber), [events[1].sequenceNumber, events[2].sequenceNumber]);
  const bad = await rest(server.ownerCs(), 'GET', '/fleethub/events?from=yesterday&api-version=2021-04-12');
  assert.equal(bad.status, 400);
  assert.match(bad.body.message, /from must be start, end, a time/);
});

test('kill -9 after PUBACK loses no acknowledged message', async () => {
  const deviceId = 'crash-sensor';
  const key = await createDevice(deviceId);
  // The device runs in a process of its own, killed at the end: the SDK's
  // client, its connection gone with the server, may never finish closing.
  const { spawn } = require('child_process');
  const script = `
    const { Client, Message } = require('azure-iot-device');
    const { Mqtt } = require('azure-iot-device-mqtt');
    const { NoRetry } = require('azure-iot-common');
    const client = Client.fromConnectionString(process.env.CS, Mqtt);
    client.setRetryPolicy(new NoRetry());
    client.open().then(async () => {
      for (let i = 0; ; i++) {
        const m = new Message(JSON.stringify({ temperature: 20 + i, n: i }));
        m.messageId = '${deviceId}-msg-' + i;
        await client.sendEvent(m);
        process.stdout.write('acked ' + (i + 1) + '\\n');
      }
    }).catch((e) => process.stdout.write('failed ' + e.message + '\\n'));`;
  const child = spawn(process.execPath, ['-e', script], {
    cwd: __dirname, env: { ...process.env, CS: deviceCs('localhost', deviceId, key) }, stdio: ['ignore', 'pipe', 'inherit'],
  });
  let acked = 0;
  let out = '';
  child.stdout.on('data', (d) => {
    out += d;
    for (const m of out.matchAll(/acked (\d+)/g)) acked = Math.max(acked, Number(m[1]));
    out = out.slice(out.lastIndexOf('\n') + 1);
  });
  try {
    await waitFor(() => acked >= 300, 20000, '300 acknowledged messages');
    await server.kill();
    // Every PUBACK the device saw came before the process died; its output
    // may still be in the pipe.
    await new Promise((r) => setTimeout(r, 300));
  } finally {
    child.kill('SIGKILL');
  }
  const ackedAtKill = acked;
  await server.start();
  const events = (await readEvents('from=start&wait=2')).filter((e) => e.deviceId === deviceId);
  assert.ok(events.length >= ackedAtKill, `${events.length} stored of ${ackedAtKill} acknowledged`);
  for (let i = 0; i < ackedAtKill; i++) {
    assert.equal(events[i].systemProperties.messageId, `${deviceId}-msg-${i}`, 'in order, none missing');
  }
});

test('hostile: a property bag that does not parse, an oversized message', async () => {
  const deviceId = 'hostile-sensor';
  const key = await createDevice(deviceId);
  const { c } = await mqttDevice(server, deviceId, key);
  const closed = new Promise((r) => c.once('close', r));
  c.publish(`devices/${deviceId}/messages/events/a=%zz`, 'x', { qos: 1 });
  await withTimeout(closed, 5000, 'the connection closes');
  c.end(true);
  await waitFor(() => /telemetry refused: a property value holds a malformed %-escape/.test(server.log), 5000, 'the log says why');

  const { c: c2 } = await mqttDevice(server, deviceId, key);
  const closed2 = new Promise((r) => c2.once('close', r));
  c2.publish(`devices/${deviceId}/messages/events/`, Buffer.alloc(300 * 1024, 1), { qos: 1 });
  await withTimeout(closed2, 5000, 'the connection closes');
  c2.end(true);

  // Nothing of either was stored; the hub still takes good messages.
  const { c: c3 } = await mqttDevice(server, deviceId, key);
  await new Promise((resolve, reject) => c3.publish(`devices/${deviceId}/messages/events/k=v`, 'fine', { qos: 1 }, (e) => (e ? reject(e) : resolve())));
  c3.end(true);
  const events = (await readEvents('from=start&wait=2')).filter((e) => e.deviceId === deviceId);
  assert.deepEqual(events.map((e) => e.body), ['fine']);
  assert.deepEqual(events[0].properties, { k: 'v' });
});

test('retention by size: the oldest events go once a partition holds more than event_retention_mb', async () => {
  const small = await new Server({ name: 'telemetry-retention', mqtt: '127.0.0.1:8884', https: '127.0.0.1:8443',
    serverExtra: ['event_partitions = 1', 'event_retention_mb = 1'] }).start();
  try {
    // Its HTTPS port is not 443 (the suite's other server has that): raw REST.
    const made = await rest(small.ownerCs(), 'PUT', '/devices/big-sender?api-version=2021-04-12', { deviceId: 'big-sender' }, {}, null, 8443);
    assert.equal(made.status, 200, made.text);
    const key = made.body.authentication.symmetricKey.primaryKey;
    const { c } = await mqttDevice(small, 'big-sender', key, { port: 8884 });
    const body = Buffer.alloc(200 * 1024, 0x61);
    for (let i = 0; i < 8; i++) {
      await new Promise((resolve, reject) => c.publish(`devices/big-sender/messages/events/%24.mid=m${i}`, body, { qos: 1 }, (e) => (e ? reject(e) : resolve())));
    }
    c.end(true);
    // The first trim pass runs 5 s after the start, then every minute.
    const stats = async () => JSON.parse(small.cli(['hub', 'stats', '--server', '127.0.0.1:8443']).stdout);
    const s = await waitFor(async () => { const v = await stats(); return v.telemetry.partitions[0].beginSequenceNumber > 0 && v; }, 15000, 'the trim');
    const p = s.telemetry.partitions[0];
    assert.equal(p.nextSequenceNumber, 8);
    assert.ok(p.bytes <= 1024 * 1024, `${p.bytes} bytes kept`);
    assert.ok(p.beginSequenceNumber >= 3, 'the oldest went');
    const r = await rest(small.ownerCs(), 'GET', '/fleethub/events?from=start&wait=1&api-version=2021-04-12', undefined, {}, null, 8443);
    const ids = r.text.split('\n').filter((l) => l).map((l) => JSON.parse(l).systemProperties.messageId);
    assert.deepEqual(ids, Array.from({ length: 8 - p.beginSequenceNumber }, (_, i) => `m${p.beginSequenceNumber + i}`));
  } finally {
    await small.stop();
  }
});

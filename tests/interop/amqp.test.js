// The AMQP endpoint (issue 19) with the official clients: @azure/event-hubs
// 5.x EventHubConsumerClient against the Event Hub-compatible endpoint
// (TLS and WebSockets: events of MQTT, MQTT/WebSockets and HTTP devices,
// start positions, consumer groups, epochs, a restart, the $management
// reads), the IoT Hub connection string sample's redirect (rhea-promise
// with SASL PLAIN, as the official sample does it), and azure-iothub's
// Client.send and feedback receiver over Amqp and AmqpWs.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('crypto');
const WebSocket = require('ws');
const { EventHubConsumerClient, earliestEventPosition, latestEventPosition } = require('@azure/event-hubs');
const { Connection, ReceiverEvents } = require('rhea-promise');
const { Client: DeviceClient, Message: DeviceMessage } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
const { Http } = require('azure-iot-device-http');
const { Registry, Client: ServiceClient, Amqp, AmqpWs } = require('azure-iothub');
const { Message } = require('azure-iot-common');
const { Server, deviceCs, parseCs, rest, withTimeout, waitFor } = require('./lib/server');

const H2 = 'hub2.fleethub.test';
let server;
let registry;

before(async () => {
  server = await new Server({
    name: 'amqp',
    hubs: [{ name: 'localhost' }, { name: H2, mqtt: '127.0.0.5:8883', https: '127.0.0.5:443', amqp: '127.0.0.5:5671' }],
  }).start();
  registry = Registry.fromConnectionString(server.ownerCs('localhost'));
});

after(async () => {
  await server?.stop();
});

// The Event Hub-compatible connection string of a hub: its own host name,
// EntityPath its first label (decisions.md 19).
function ehCs(hub = 'localhost') {
  const o = parseCs(server.ownerCs(hub));
  return `Endpoint=sb://${o.HostName}/;SharedAccessKeyName=${o.SharedAccessKeyName};` +
    `SharedAccessKey=${o.SharedAccessKey};EntityPath=${o.HostName.split('.')[0]}`;
}

function consumer(group = '$Default', ws = false, hub = 'localhost') {
  return new EventHubConsumerClient(group, ehCs(hub), ws ? { webSocketOptions: { webSocket: WebSocket } } : {});
}

async function newDevice(id, hubRegistry = registry, host = 'localhost') {
  const created = (await hubRegistry.create({ deviceId: id })).responseBody;
  return deviceCs(host, id, created.authentication.symmetricKey.primaryKey);
}

async function sendEvents(cs, transport, prefix, n, gapMs = 0) {
  const c = DeviceClient.fromConnectionString(cs, transport);
  await c.open();
  for (let i = 0; i < n; i++) {
    const m = new DeviceMessage(JSON.stringify({ i, prefix }));
    m.messageId = `${prefix}-${i}`;
    m.contentType = 'application/json';
    m.contentEncoding = 'utf-8';
    m.properties.add('index', String(i));
    await c.sendEvent(m);
    if (gapMs) await new Promise((r) => setTimeout(r, gapMs));
  }
  await c.close();
}

// Subscribes (all partitions, or one) and resolves the events received once
// done(events) is true; rejects after ms.
async function collect(client, opts, done, ms = 20000, partition = null) {
  const got = [];
  const errors = [];
  let sub;
  try {
    await withTimeout(new Promise((resolve) => {
      const handlers = {
        processEvents: async (events, ctx) => {
          for (const e of events) got.push({ partition: ctx.partitionId, e });
          if (done(got)) resolve();
        },
        processError: async (err) => { errors.push(err); },
      };
      const o = { maxWaitTimeInSeconds: 1, maxBatchSize: 50, ...opts };
      sub = partition === null ? client.subscribe(handlers, o) : client.subscribe(partition, handlers, o);
    }), ms, `events (${got.length} so far; errors: ${errors.map((e) => e.message).join('; ')})`);
  } finally {
    await sub?.close();
  }
  return got;
}

const ofPrefix = (got, prefix) => got.filter((x) => x.e.body?.prefix === prefix);

test('Event Hubs consumers over TLS and WebSockets read what MQTT, MQTT/WebSockets and HTTP devices sent: once, in order, with properties', async () => {
  const sent = [['MQTT', Mqtt], ['MQTT over WebSockets', MqttWs], ['HTTP', Http]];
  for (const [label, transport] of sent) {
    const cs = await newDevice(`eh-${label.replace(/\W+/g, '-')}`);
    await sendEvents(cs, transport, `all-${label}`, 5);
  }
  for (const ws of [false, true]) {
    const client = consumer('$Default', ws);
    const got = await collect(client, { startPosition: earliestEventPosition },
      (g) => sent.every(([label]) => ofPrefix(g, `all-${label}`).length >= 5));
    await client.close();
    for (const [label] of sent) {
      const mine = ofPrefix(got, `all-${label}`);
      assert.equal(mine.length, 5, `${label} over ${ws ? 'WebSockets' : 'TLS'}: each event once`);
      assert.deepEqual(mine.map((x) => x.e.body.i), [0, 1, 2, 3, 4], `${label}: in order`);
      const id = `eh-${label.replace(/\W+/g, '-')}`;
      for (const [i, { partition, e }] of mine.entries()) {
        assert.equal(e.messageId, `all-${label}-${i}`);
        assert.equal(e.contentType, 'application/json');
        assert.deepEqual(e.properties, { index: String(i) });
        assert.equal(e.systemProperties['iothub-connection-device-id'], id);
        assert.equal(e.systemProperties['iothub-message-source'], 'Telemetry');
        assert.match(e.systemProperties['iothub-connection-auth-method'], /"type":"sas"/);
        assert.equal(typeof e.systemProperties['iothub-enqueuedtime'], 'number');
        assert.equal(e.systemProperties.contentEncoding, 'utf-8');
        assert.ok(e.enqueuedTimeUtc instanceof Date);
        assert.equal(partition, mine[0].partition, 'a device stays on one partition');
        if (i) assert.equal(e.sequenceNumber, mine[i - 1].e.sequenceNumber + 1);
        if (i) assert.ok(Number(e.offset) > Number(mine[i - 1].e.offset));
      }
    }
  }
});

test('getEventHubProperties and getPartitionProperties say what the log holds', async () => {
  const cs = await newDevice('eh-props');
  await sendEvents(cs, Mqtt, 'props', 3);
  const client = consumer();
  const hub = await client.getEventHubProperties();
  assert.equal(hub.name, 'localhost');
  assert.deepEqual(hub.partitionIds, ['0', '1', '2', '3']);
  assert.ok(hub.createdOn instanceof Date);
  const got = await collect(client, { startPosition: earliestEventPosition }, (g) => ofPrefix(g, 'props').length >= 3);
  const mine = ofPrefix(got, 'props');
  const partition = mine[0].partition;
  const last = got.filter((x) => x.partition === partition).pop().e;
  const p = await client.getPartitionProperties(partition);
  assert.equal(p.partitionId, partition);
  assert.equal(p.eventHubName, 'localhost');
  assert.equal(p.isEmpty, false);
  assert.equal(p.beginningSequenceNumber, 0);
  assert.equal(p.lastEnqueuedSequenceNumber, last.sequenceNumber);
  assert.equal(p.lastEnqueuedOffset, last.offset);
  assert.equal(p.lastEnqueuedOnUtc.getTime(), last.enqueuedTimeUtc.getTime());
  await client.close();
});

test('start positions: earliest, latest, offset, sequence number, enqueued time', async () => {
  const cs = await newDevice('eh-positions');
  await sendEvents(cs, Mqtt, 'pos', 4, 30);
  const client = consumer();
  const all = ofPrefix(await collect(client, { startPosition: earliestEventPosition }, (g) => ofPrefix(g, 'pos').length >= 4), 'pos');
  const partition = all[0].partition;
  const ev = all.map((x) => x.e);
  const from = async (startPosition) => {
    const got = await collect(client, { startPosition }, (g) => g.some((x) => x.e.body?.prefix === 'pos' && x.e.body.i === 3), 20000, partition);
    return got.map((x) => x.e).filter((e) => e.body?.prefix === 'pos').map((e) => e.body.i);
  };
  assert.deepEqual(await from({ offset: ev[0].offset }), [1, 2, 3], 'after an offset');
  assert.deepEqual(await from({ offset: ev[1].offset, isInclusive: true }), [1, 2, 3], 'from an offset');
  assert.deepEqual(await from({ sequenceNumber: ev[1].sequenceNumber }), [2, 3], 'after a sequence number');
  assert.deepEqual(await from({ sequenceNumber: ev[2].sequenceNumber, isInclusive: true }), [2, 3], 'from a sequence number');
  assert.deepEqual(await from({ enqueuedOn: ev[1].enqueuedTimeUtc }), [2, 3], 'after a time');
  // latest: only what is sent after the receiver is open
  const later = collect(client, { startPosition: latestEventPosition }, (g) => ofPrefix(g, 'pos-late').length >= 2, 20000, partition);
  await new Promise((r) => setTimeout(r, 1500));
  await sendEvents(cs, Mqtt, 'pos-late', 2);
  const got = await later;
  assert.equal(ofPrefix(got, 'pos').length, 0, 'nothing from before');
  assert.deepEqual(ofPrefix(got, 'pos-late').map((x) => x.e.body.i), [0, 1]);
  await client.close();
});

test('two consumer groups read independently; a receiver with a higher epoch takes a partition over', async () => {
  const cs = await newDevice('eh-groups');
  await sendEvents(cs, Mqtt, 'groups', 3);
  const a = consumer('$Default');
  const b = consumer('analytics');
  const [ga, gb] = await Promise.all([
    collect(a, { startPosition: earliestEventPosition }, (g) => ofPrefix(g, 'groups').length >= 3),
    collect(b, { startPosition: earliestEventPosition }, (g) => ofPrefix(g, 'groups').length >= 3),
  ]);
  assert.deepEqual(ofPrefix(ga, 'groups').map((x) => x.e.body.i), [0, 1, 2]);
  assert.deepEqual(ofPrefix(gb, 'groups').map((x) => x.e.body.i), [0, 1, 2]);
  const partition = ofPrefix(ga, 'groups')[0].partition;
  // epochs (ownerLevel): the higher one wins, the other is told so
  const errors = [];
  const c = consumer('$Default');
  const subs = [];
  try {
    subs.push(a.subscribe(partition, { processEvents: async () => {}, processError: async (e) => { errors.push(e); } },
      { startPosition: latestEventPosition, ownerLevel: 1, maxWaitTimeInSeconds: 1 }));
    await new Promise((r) => setTimeout(r, 1000));
    // another consumer group: no conflict
    subs.push(b.subscribe(partition, { processEvents: async () => {}, processError: async () => {} },
      { startPosition: latestEventPosition, ownerLevel: 2, maxWaitTimeInSeconds: 1 }));
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(errors.length, 0, errors.map((e) => e.message).join('; '));
    // the same group, a higher epoch
    subs.push(c.subscribe(partition, { processEvents: async () => {}, processError: async () => {} },
      { startPosition: latestEventPosition, ownerLevel: 5, maxWaitTimeInSeconds: 1 }));
    await waitFor(() => errors.length > 0, 10000, 'the lower epoch receiver to be told');
    assert.match(`${errors[0].code} ${errors[0].message}`, /epoch 5 took partition/);
  } finally {
    for (const s of subs) await s.close();
    await Promise.all([a.close(), b.close(), c.close()]);
  }
});

test('a consumer that resumes after a restart of fleethub loses nothing and repeats nothing past its checkpoint', async () => {
  const cs = await newDevice('eh-restart');
  await sendEvents(cs, Mqtt, 'restart-a', 5);
  let client = consumer();
  const first = ofPrefix(await collect(client, { startPosition: earliestEventPosition }, (g) => ofPrefix(g, 'restart-a').length >= 5), 'restart-a');
  await client.close();
  const partition = first[0].partition;
  const checkpoint = first[4].e.sequenceNumber;
  await server.stop();
  await server.start();
  await sendEvents(cs, Mqtt, 'restart-b', 5);
  client = consumer();
  const got = await collect(client, { startPosition: { sequenceNumber: checkpoint } },
    (g) => ofPrefix(g, 'restart-b').length >= 5, 20000, partition);
  await client.close();
  const mine = got.filter((x) => /^restart-/.test(x.e.body?.prefix));
  assert.deepEqual(mine.map((x) => `${x.e.body.prefix}/${x.e.body.i}`),
    [0, 1, 2, 3, 4].map((i) => `restart-b/${i}`), 'exactly the events after the checkpoint');
  assert.equal(mine[0].e.sequenceNumber, checkpoint + 1);
});

// The official sample's redirect (iothubConnectionString.js): SASL PLAIN with
// <policy>@sas.root.<hub> and a SAS token for <host>/messages/events, a
// receiver on amqps://<host>/messages/events/$management, and the Event
// Hubs connection string built from the redirect's hostname.
function sampleToken(resource, keyName, key) {
  const uri = encodeURIComponent(resource);
  const expires = Math.ceil(Date.now() / 1000) + 3600;
  const sig = crypto.createHmac('sha256', Buffer.from(key, 'base64')).update(`${uri}\n${expires}`).digest('base64');
  return `SharedAccessSignature sr=${uri}&sig=${encodeURIComponent(sig)}&se=${expires}&skn=${keyName}`;
}

async function redirect(ws) {
  const o = parseCs(server.ownerCs('localhost'));
  const host = o.HostName;
  const options = {
    transport: 'tls', host, hostname: host, port: 5671, reconnect: false,
    username: `${o.SharedAccessKeyName}@sas.root.${host.split('.')[0]}`,
    password: sampleToken(`${host}/messages/events`, o.SharedAccessKeyName, o.SharedAccessKey),
  };
  if (ws) {
    options.webSocketOptions = { webSocket: WebSocket, protocol: ['AMQPWSB10'], url: `wss://${host}:443/$servicebus/websocket` };
  }
  const conn = new Connection(options);
  await conn.open();
  const receiver = await conn.createReceiver({ source: { address: `amqps://${host}/messages/events/$management` } });
  const error = await withTimeout(new Promise((resolve) => {
    receiver.on(ReceiverEvents.receiverError, (ctx) => resolve(ctx.receiver?.error));
  }), 10000, 'the redirect');
  await conn.close();
  return { error, o };
}

test('the IoT Hub connection string sample: a redirect to the Event Hub-compatible endpoint, then events', async () => {
  const cs = await newDevice('eh-redirect');
  await sendEvents(cs, Mqtt, 'redirect', 2);
  for (const ws of [false, true]) {
    const { error, o } = await redirect(ws);
    assert.equal(error.condition, 'amqp:link:redirect');
    assert.equal(error.info.hostname, 'localhost');
    const built = `Endpoint=sb://${error.info.hostname}/;EntityPath=localhost;` +
      `SharedAccessKeyName=${o.SharedAccessKeyName};SharedAccessKey=${o.SharedAccessKey}`;
    const client = new EventHubConsumerClient('$Default', built, ws ? { webSocketOptions: { webSocket: WebSocket } } : {});
    const got = await collect(client, { startPosition: earliestEventPosition }, (g) => ofPrefix(g, 'redirect').length >= 2);
    assert.deepEqual(ofPrefix(got, 'redirect').map((x) => x.e.body.i), [0, 1]);
    await client.close();
  }
});

test('a token of another hub, and a receiver on another hub\'s entity, are refused; that hub reads its own', async () => {
  const r2 = Registry.fromConnectionString(server.ownerCs(H2));
  const cs2 = await newDevice('eh-h2', r2, H2);
  await sendEvents(cs2, Mqtt, 'hub2', 2);
  // localhost's credentials naming hub2's entity
  const o = parseCs(server.ownerCs('localhost'));
  const wrongEntity = new EventHubConsumerClient('$Default', `Endpoint=sb://localhost/;SharedAccessKeyName=iothubowner;` +
    `SharedAccessKey=${o.SharedAccessKey};EntityPath=hub2`, { retryOptions: { maxRetries: 0 } });
  await assert.rejects(withTimeout(wrongEntity.getEventHubProperties(), 15000, 'wrong entity'), /not for this hub's Event Hub-compatible entity/);
  await wrongEntity.close();
  // hub2's key on localhost's endpoint
  const o2 = parseCs(server.ownerCs(H2));
  const wrongKey = new EventHubConsumerClient('$Default', `Endpoint=sb://localhost/;SharedAccessKeyName=iothubowner;` +
    `SharedAccessKey=${o2.SharedAccessKey};EntityPath=localhost`, { retryOptions: { maxRetries: 0 } });
  await assert.rejects(withTimeout(wrongKey.getEventHubProperties(), 15000, 'wrong key'), /signature|unauthori/i);
  await wrongKey.close();
  // hub2 reads its own events, and none of localhost's
  const own = consumer('$Default', false, H2);
  const got = await collect(own, { startPosition: earliestEventPosition }, (g) => ofPrefix(g, 'hub2').length >= 2);
  assert.equal(got.filter((x) => x.e.systemProperties['iothub-connection-device-id'] !== 'eh-h2').length, 0);
  await own.close();
});

// ---- cloud-to-device messages and feedback through azure-iothub ----

function feedbackReceiver(client) {
  return new Promise((resolve, reject) => client.getFeedbackReceiver((e, r) => (e ? reject(e) : resolve(r))));
}

function sendC2d(client, id, body, extra = {}) {
  const m = new Message(body);
  Object.assign(m, extra.fields || {});
  for (const [k, v] of Object.entries(extra.props || {})) m.properties.add(k, v);
  return client.send(id, m);
}

for (const [label, transport] of [['Amqp', Amqp], ['AmqpWs', AmqpWs]]) {
  test(`Client.send over ${label}: online and offline devices, feedback, unknown device, full queue`, async () => {
    const tag = label.toLowerCase();
    const onlineId = `c2d-on-${tag}`, offlineId = `c2d-off-${tag}`, httpId = `c2d-http-${tag}`, fullId = `c2d-full-${tag}`;
    const csOn = await newDevice(onlineId);
    const csOff = await newDevice(offlineId);
    const csHttp = await newDevice(httpId);
    await newDevice(fullId);
    const service = ServiceClient.fromConnectionString(server.ownerCs('localhost'), transport);
    await service.open();
    const fb = await feedbackReceiver(service);
    const records = [];
    fb.on('message', (m) => {
      assert.equal(m.contentType, 'application/vnd.microsoft.iothub.feedback.json');
      records.push(...JSON.parse(m.data.toString()));
      fb.complete(m, () => {});
    });
    // online MQTT device
    const dev = DeviceClient.fromConnectionString(csOn, Mqtt);
    const received = [];
    dev.on('message', (m) => { received.push(m); dev.complete(m, () => {}); });
    await dev.open();
    await new Promise((r) => setTimeout(r, 500));
    await sendC2d(service, onlineId, 'to online', { fields: { messageId: `on-${tag}`, ack: 'positive', correlationId: 'corr-1' }, props: { mode: 'eco' } });
    await waitFor(() => received.length === 1, 10000, 'the online device to get it');
    assert.equal(received[0].data.toString(), 'to online');
    assert.equal(received[0].messageId, `on-${tag}`);
    assert.equal(received[0].correlationId, 'corr-1');
    assert.deepEqual(received[0].properties.propertyList.filter((p) => p.key === 'mode'), [{ key: 'mode', value: 'eco' }]);
    await dev.close();
    // offline device: queued, delivered on connect
    await sendC2d(service, offlineId, 'to offline', { fields: { messageId: `off-${tag}`, ack: 'full' } });
    assert.equal((await registry.get(offlineId)).responseBody.cloudToDeviceMessageCount, 1);
    const late = DeviceClient.fromConnectionString(csOff, Mqtt);
    const lateGot = [];
    late.on('message', (m) => { lateGot.push(m); late.complete(m, () => {}); });
    await late.open();
    await waitFor(() => lateGot.length === 1, 10000, 'the offline device to get it on connect');
    assert.equal(lateGot[0].data.toString(), 'to offline');
    await late.close();
    // an HTTP device rejects: negative feedback
    await sendC2d(service, httpId, 'to reject', { fields: { messageId: `rej-${tag}`, ack: 'negative' } });
    const hdev = DeviceClient.fromConnectionString(csHttp, Http);
    await hdev.open();
    const hmsg = await withTimeout(new Promise((resolve) => { hdev.on('message', resolve); }), 15000, 'HTTP receive');
    await hdev.reject(hmsg);
    await hdev.close();
    // expired before delivery: Expired with ack full
    await sendC2d(service, offlineId, 'too late', { fields: { messageId: `exp-${tag}`, ack: 'full', expiryTimeUtc: Date.now() + 1000 } });
    await waitFor(() => records.some((r) => r.originalMessageId === `on-${tag}`) &&
      records.some((r) => r.originalMessageId === `off-${tag}`) &&
      records.some((r) => r.originalMessageId === `rej-${tag}`) &&
      records.some((r) => r.originalMessageId === `exp-${tag}`), 20000, `the feedback records (${JSON.stringify(records)})`);
    const status = (mid) => records.find((r) => r.originalMessageId === mid);
    assert.equal(status(`on-${tag}`).statusCode, 'Success');
    assert.equal(status(`on-${tag}`).deviceId, onlineId);
    assert.equal(status(`off-${tag}`).statusCode, 'Success');
    assert.equal(status(`rej-${tag}`).statusCode, 'Rejected');
    assert.equal(status(`exp-${tag}`).statusCode, 'Expired');
    // unknown device
    await assert.rejects(sendC2d(service, `nobody-${tag}`, 'x'), (e) => e.constructor.name === 'DeviceNotFoundError');
    // full queue
    for (let i = 0; i < 50; i++) await sendC2d(service, fullId, `m${i}`);
    await assert.rejects(sendC2d(service, fullId, 'one too many'), (e) => e.constructor.name === 'DeviceMaximumQueueDepthExceededError');
    assert.equal((await registry.get(fullId)).responseBody.cloudToDeviceMessageCount, 50);
    // what the endpoint did, in fleethub hub stats
    const stats = (await rest(server.ownerCs('localhost'), 'GET', '/fleethub/stats?api-version=2021-04-12')).body.amqp;
    assert.ok(stats.connections >= 1, JSON.stringify(stats));
    assert.ok(stats.links >= 3, JSON.stringify(stats));
    assert.ok(stats.cloudToDeviceAccepted >= 54, JSON.stringify(stats));
    assert.ok(stats.cloudToDeviceRefused >= 2, JSON.stringify(stats));
    assert.ok(stats.feedbackBatches >= 1, JSON.stringify(stats));
    assert.ok(stats.eventsSent > 0, JSON.stringify(stats));
    await service.close();
  });
}

test('two feedback receivers on one hub compete: every record reaches one of them, once', async () => {
  const id = 'fb-compete';
  const cs = await newDevice(id);
  const dev = DeviceClient.fromConnectionString(cs, Mqtt);
  dev.on('message', (m) => dev.complete(m, () => {}));
  await dev.open();
  const clients = [];
  const seen = [[], []];
  try {
    for (let k = 0; k < 2; k++) {
      const service = ServiceClient.fromConnectionString(server.ownerCs('localhost'), Amqp);
      await service.open();
      clients.push(service);
      const fb = await feedbackReceiver(service);
      fb.on('message', (m) => {
        for (const r of JSON.parse(m.data.toString())) if (r.deviceId === id) seen[k].push(r.originalMessageId);
        // held a while: the other receiver reads while this batch is out
        setTimeout(() => fb.complete(m, () => {}), 700);
      });
    }
    await new Promise((r) => setTimeout(r, 500));
    const sent = [];
    for (let round = 0; round < 4; round++) {
      for (let i = 0; i < 8; i++) {
        const mid = `fbc-${round}-${i}`;
        sent.push(mid);
        await sendC2d(clients[0], id, 'x', { fields: { messageId: mid, ack: 'positive' } });
      }
      await new Promise((r) => setTimeout(r, 900));
    }
    await waitFor(() => seen[0].length + seen[1].length >= sent.length, 20000,
      `every record (${seen[0].length} + ${seen[1].length} of ${sent.length})`);
    await new Promise((r) => setTimeout(r, 2500)); // a duplicate would come by now
    const all = [...seen[0], ...seen[1]];
    assert.deepEqual([...all].sort(), [...sent].sort(), `no record twice (first: ${seen[0]}; second: ${seen[1]})`);
  } finally {
    await dev.close();
    for (const c of clients) await c.close();
  }
});

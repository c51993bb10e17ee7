// Several fleethub nodes on one PostgreSQL database (issue 17), behind a TCP
// balancer (lib/balancer.js) on the address hub1.fleethub.test resolves to:
// node a on 127.0.0.14, node b on 127.0.0.15, each with its own data_dir and
// node_name, the same configuration otherwise. Devices use the official
// Node SDK through the balancer; the service side calls one node's REST API
// directly when the test needs that node. Runs in the suite's PostgreSQL
// pass (make interop); the SQLite pass has one node by design and skips it.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const https = require('https');
const fs = require('fs');
const { spawnSync } = require('child_process');
const { Client } = require('azure-iot-device');
const { NoRetry } = require('azure-iot-common');
const { Mqtt } = require('azure-iot-device-mqtt');
const { Server, PG, pgDatabase, deviceCs, rest, withTimeout, waitFor, report, mqttDevice } = require('./lib/server');
const { Balancer } = require('./lib/balancer');
const path = require('path');
const { Webhook, deriveKey, CERTS } = require('./lib/dps');

const HUB = 'hub1.fleethub.test';
const A = '127.0.0.14';
const B = '127.0.0.15';
const API = 'api-version=2021-04-12';
const skip = PG ? false : 'several nodes need the PostgreSQL store (the suite\'s PostgreSQL pass runs this)';

let db;
let nodes = {};
let lb;

function node(name, address, extra = []) {
  return new Server({
    name: `node-${name}`,
    hubs: [{ name: HUB }],
    mqtt: `${address}:8883`,
    https: `${address}:443`,
    serverExtra: ['store = postgresql', `postgresql = ${db}`, `node_name = ${name}`, ...extra],
    dps: {
      name: 'dps.fleethub.test',
      lines: [`https_listen = ${address === A ? '127.0.0.16' : '127.0.0.17'}:443`,
        `webhook_ca = ${path.join(CERTS, 'dps-trust.pem')}`],
    },
  });
}

before(async () => {
  if (skip) return;
  db = pgDatabase('nodes-test');
  nodes.a = await node('a', A).start();
  nodes.b = await node('b', B).start();
  lb = new Balancer('127.0.0.4', [8883, 443], [A, B]);
  await lb.start();
});

after(async () => {
  await lb?.close();
  for (const n of Object.values(nodes)) await n.stop();
});

const cs = () => nodes.a.ownerCs(HUB);
// A statement on the nodes' database, as the nodes would never write it.
function psql(sql) {
  const r = spawnSync('/usr/lib/postgresql/15/bin/psql', ['-v', 'ON_ERROR_STOP=1', '-qAt', '-c', sql, db],
    { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}
const at = (n) => (n === 'a' ? A : B);

async function createDevice(id) {
  const r = await rest(cs(), 'PUT', `/devices/${id}?${API}`, { deviceId: id }, {}, A);
  assert.equal(r.status, 200, r.text);
  return r.body.authentication.symmetricKey.primaryKey;
}

// A device (official SDK, MQTT) connected through the balancer to node n.
async function deviceOn(n, id, key) {
  lb.prefer(n === 'a' ? 0 : 1);
  const client = Client.fromConnectionString(deviceCs(HUB, id, key), Mqtt);
  client.setRetryPolicy(new NoRetry()); // a closed connection shows, and stays closed
  await withTimeout(client.open(), 10000, `${id} open on ${n}`);
  return client;
}

test('both nodes share the keys, and fleethub nodes lists them live', { skip }, async () => {
  assert.equal(nodes.a.ownerCs(HUB), nodes.b.ownerCs(HUB), 'one iothubowner key for both');
  assert.equal(nodes.a.dpsCs, nodes.b.dpsCs, 'one DPS owner key');
  assert.equal(nodes.a.idScope, nodes.b.idScope, 'one id scope');
  const r = nodes.a.cli(['nodes']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^a\s+yes\s/m);
  assert.match(r.stdout, /^b\s+yes\s/m);
});

test('a desired change made through node b reaches the device on node a; its report is read on b', { skip }, async () => {
  const key = await createDevice('cross-1');
  const client = await deviceOn('a', 'cross-1', key);
  try {
    const twin = await withTimeout(client.getTwin(), 10000, 'getTwin');
    const got = [];
    twin.on('properties.desired', (d) => { if (d.$version > 1) got.push(d); });
    const patch = await rest(cs(), 'PATCH', `/twins/cross-1?${API}`, { properties: { desired: { fan: 'on', speed: 3 } } }, { 'If-Match': '*' }, B);
    assert.equal(patch.status, 200, patch.text);
    await waitFor(() => got.length === 1, 10000, 'the desired notification from node b');
    assert.deepEqual({ ...got[0], $version: undefined }, { fan: 'on', speed: 3, $version: undefined });
    // A large patch (over NOTIFY's 8000 bytes) travels by reference.
    const big = { a: 'a'.repeat(4000), b: 'b'.repeat(4000), c: 'c'.repeat(4000) };
    const p2 = await rest(cs(), 'PATCH', `/twins/cross-1?${API}`, { properties: { desired: { big } } }, { 'If-Match': '*' }, B);
    assert.equal(p2.status, 200, p2.text);
    await waitFor(() => got.length === 2, 10000, 'the large desired notification');
    assert.deepEqual(got[1].big, big);
    await report(twin, { temperature: 21.5 });
    const back = await rest(cs(), 'GET', `/twins/cross-1?${API}`, undefined, {}, B);
    assert.equal(back.body.properties.reported.temperature, 21.5);
    assert.equal(back.body.connectionState, 'Connected', 'node b sees the device connected (on a)');
  } finally {
    await client.close();
  }
});

test('a direct method and a cloud-to-device message sent through node b reach the device on node a; telemetry sent on a is read on b', { skip }, async () => {
  const key = await createDevice('method-1');
  const client = await deviceOn('a', 'method-1', key);
  try {
    client.onDeviceMethod('blink', (req, res) => res.send(200, { blinked: req.payload.times }));
    await new Promise((r) => setTimeout(r, 300));
    const call = { methodName: 'blink', payload: { times: 3 }, responseTimeoutInSeconds: 10 };
    const r = await rest(cs(), 'POST', `/twins/method-1/methods?${API}`, call, {}, B);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body, { status: 200, payload: { blinked: 3 } });
    const { Message } = require('azure-iot-device');
    const since = new Date(Date.now() - 1000).toISOString();
    await client.sendEvent(new Message('from a'));
    const ev = await rest(cs(), 'GET', `/fleethub/events?from=${since}&limit=1&wait=5&${API}`, undefined, {}, B);
    assert.equal(ev.status, 200);
    const line = JSON.parse(ev.text.split('\n').find((l) => l.includes('method-1')));
    assert.equal(line.body, 'from a');
    // A cloud-to-device message queued through b wakes the device's node a.
    const got = [];
    client.on('message', (m) => { got.push(m.data.toString()); client.complete(m).catch(() => {}); });
    await new Promise((r) => setTimeout(r, 300));
    const sent = await rest(cs(), 'POST', `/fleethub/devices/method-1/messages?${API}`, { body: 'via b' }, {}, B);
    assert.equal(sent.status, 201, sent.text);
    await waitFor(() => got.length === 1, 10000, 'the message queued on b, delivered by a');
    assert.equal(got[0], 'via b');
  } finally {
    await client.close();
  }
  // Connected nowhere: 404 at once, from either node.
  const t0 = Date.now();
  const off = await rest(cs(), 'POST', `/twins/method-1/methods?${API}`, { methodName: 'blink' }, {}, B);
  assert.equal(off.status, 404);
  assert.equal(off.body.errorCode, 404103);
  assert.ok(Date.now() - t0 < 1500, 'no wait for a device no node holds');
  // A row that still says connected on a (its disconnect not stored yet):
  // b asks a alone, and a says at once that it does not hold the device.
  // A row naming a node that is gone: no answer, 404 after the 2 s wait.
  for (const [holder, lo, hi] of [['a', 0, 1500], ['gone', 1900, 4000]]) {
    psql(`UPDATE connections SET connected = true, node = '${holder}' WHERE id = 'method-1'`);
    const t1 = Date.now();
    const stale = await rest(cs(), 'POST', `/twins/method-1/methods?${API}`, { methodName: 'blink' }, {}, B);
    const took = Date.now() - t1;
    assert.equal(stale.status, 404, stale.text);
    assert.equal(stale.body.errorCode, 404103);
    assert.ok(took >= lo && took < hi, `a row naming node ${holder}: answered after ${took} ms`);
  }
});

test('over AMQP on node b: an Event Hubs consumer reads what a device sent on node a; Client.send reaches it there', { skip }, async () => {
  const { EventHubConsumerClient, earliestEventPosition } = require('@azure/event-hubs');
  const { Client: ServiceClient, Amqp } = require('azure-iothub');
  const { Message: C2dMessage } = require('azure-iot-common');
  const { Message } = require('azure-iot-device');
  const key = await createDevice('amqp-1');
  const client = await deviceOn('a', 'amqp-1', key);
  const ownerKey = /SharedAccessKey=([^;]+)/.exec(cs())[1];
  // node b by its address: its AMQP listener, the hub by the listener's alias
  const consumer = new EventHubConsumerClient('$Default',
    `Endpoint=sb://${B}/;SharedAccessKeyName=iothubowner;SharedAccessKey=${ownerKey};EntityPath=hub1`);
  const service = ServiceClient.fromConnectionString(`HostName=${B};SharedAccessKeyName=iothubowner;SharedAccessKey=${ownerKey}`, Amqp);
  let sub;
  try {
    const got = [];
    sub = consumer.subscribe({
      processEvents: async (events) => { for (const e of events) if (e.systemProperties['iothub-connection-device-id'] === 'amqp-1') got.push(e.body); },
      processError: async () => {},
    }, { startPosition: earliestEventPosition, maxWaitTimeInSeconds: 1 });
    await client.sendEvent(new Message(JSON.stringify({ on: 'a' })));
    await waitFor(() => got.length === 1, 15000, 'the event sent on a, read on b');
    assert.deepEqual(got[0], { on: 'a' });
    const received = [];
    client.on('message', (m) => { received.push(m.data.toString()); client.complete(m).catch(() => {}); });
    await new Promise((r) => setTimeout(r, 300));
    await service.open();
    await service.send('amqp-1', new C2dMessage('over amqp via b'));
    await waitFor(() => received.length === 1, 10000, 'the message sent over AMQP on b, delivered by a');
    assert.equal(received[0], 'over amqp via b');
  } finally {
    await sub?.close();
    await consumer.close();
    await service.close().catch(() => {});
    await client.close();
  }
});

test('a newer connection on node b takes the device over from node a', { skip }, async () => {
  const key = await createDevice('takeover-1');
  // The first connection: a plain MQTT client that does not reconnect (the
  // SDK would, and take the device back).
  lb.prefer(0);
  const { c: first } = await mqttDevice(nodes.a, 'takeover-1', key, {}, HUB);
  let closed = false;
  first.on('close', () => { closed = true; });
  const second = await deviceOn('b', 'takeover-1', key);
  try {
    await waitFor(() => closed, 10000, 'node a to close the older connection');
    const twin = await withTimeout(second.getTwin(), 10000, 'getTwin on b');
    await report(twin, { on: 'b' });
    const back = await rest(cs(), 'GET', `/twins/takeover-1?${API}`, undefined, {}, A);
    assert.equal(back.body.properties.reported.on, 'b');
    assert.equal(back.body.connectionState, 'Connected');
  } finally {
    first.end(true);
    await second.close();
  }
});

test('a device disabled through node b is kicked from node a', { skip }, async () => {
  const key = await createDevice('kick-1');
  const client = await deviceOn('a', 'kick-1', key);
  let closed = false;
  client.on('disconnect', () => { closed = true; });
  client.on('error', () => { closed = true; });
  try {
    const dev = await rest(cs(), 'GET', `/devices/kick-1?${API}`, undefined, {}, B);
    const put = await rest(cs(), 'PUT', `/devices/kick-1?${API}`, { ...dev.body, status: 'disabled' }, { 'If-Match': '*' }, B);
    assert.equal(put.status, 200, put.text);
    await waitFor(() => closed, 10000, 'node a to close the disabled device');
  } finally {
    await client.close().catch(() => {});
  }
});

// DPS device API over HTTPS, to one node's DPS listener.
function dpsCall(address, method, path, body, auth) {
  const data = body ? Buffer.from(JSON.stringify(body)) : null;
  return new Promise((resolve, reject) => {
    const req = https.request({
      host: address, port: 443, servername: 'dps.fleethub.test', method, path, agent: false,
      ca: fs.readFileSync(process.env.FLEETHUB_TEST_CA),
      headers: { Host: 'dps.fleethub.test', 'Content-Type': 'application/json', Authorization: auth,
        ...(data ? { 'Content-Length': data.length } : {}) },
    }, (res) => {
      let text = '';
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode, body: text ? JSON.parse(text) : null }));
    });
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}

function regSas(scope, regid, key) {
  const { SharedAccessSignature } = require('azure-iot-common');
  return SharedAccessSignature.create(encodeURIComponent(`${scope}/registrations/${regid}`), 'registration', key,
    Math.floor(Date.now() / 1000) + 3600).toString();
}

test('a DPS device registers on node a and polls on node b', { skip }, async () => {
  const hook = await new Webhook().listen();
  try {
    // The webhook takes 3 s: the operation is assigning meanwhile.
    hook.handler = () => ({ status: 200, body: { iotHubHostName: HUB }, delayMs: 3000 });
    const key = Buffer.alloc(32, 7).toString('base64');
    const e = await rest(nodes.a.dpsCs, 'PUT', '/enrollmentGroups/nodes-g?api-version=2021-10-01', {
      enrollmentGroupId: 'nodes-g', attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: key, secondaryKey: key } },
      allocationPolicy: 'custom', customAllocationDefinition: { webhookUrl: hook.url('/nodes'), apiVersion: '2021-10-01' },
    }, {}, '127.0.0.16');
    assert.equal(e.status, 200, JSON.stringify(e.body));
    const scope = nodes.a.idScope;
    const auth = regSas(scope, 'nodes-dev', deriveKey(key, 'nodes-dev'));
    const reg = await dpsCall('127.0.0.16', 'PUT', `/${scope}/registrations/nodes-dev/register?api-version=2021-06-01`, { registrationId: 'nodes-dev' }, auth);
    assert.equal(reg.status, 202, JSON.stringify(reg.body));
    const op = reg.body.operationId;
    const pollB = () => dpsCall('127.0.0.17', 'GET', `/${scope}/registrations/nodes-dev/operations/${op}?api-version=2021-06-01`, null, auth);
    const busy = await pollB();
    assert.equal(busy.status, 202, 'node b answers from the operation record while node a assigns');
    assert.equal(busy.body.status, 'assigning');
    const done = await waitFor(async () => { const p = await pollB(); return p.status === 200 && p; }, 15000, 'assigned, polled on b');
    assert.equal(done.body.status, 'assigned');
    assert.equal(done.body.registrationState.assignedHub, HUB);
    assert.equal(hook.calls.length, 1, 'one webhook call');
  } finally {
    await hook.close();
  }
});

// A device over plain MQTT (the mqtt package) that sends numbered reported
// patches, each a new key, and keeps the numbers the hub acknowledged (204);
// it reconnects through the balancer when its connection drops.
class Reporter {
  constructor(id, key) {
    this.id = id;
    this.key = key;
    this.acked = [];
    this.refused = [];
    this.rid = 0;
    this.waiting = new Map();
  }

  async connect() {
    while (this.running !== false) {
      try {
        const { c } = await mqttDevice(nodes.a, this.id, this.key, {}, HUB);
        this.c = c;
        c.on('message', (topic, payload) => {
          const m = /^\$iothub\/twin\/res\/(\d+)\/\?\$rid=(\d+)/.exec(topic);
          const w = m && this.waiting.get(m[2]);
          if (w) { this.waiting.delete(m[2]); w({ status: Number(m[1]), text: payload.toString() }); }
        });
        c.on('close', () => { for (const w of this.waiting.values()) w({ status: 0 }); this.waiting.clear(); });
        await new Promise((resolve, reject) => c.subscribe('$iothub/twin/res/#', (e) => (e ? reject(e) : resolve())));
        return;
      } catch (e) {
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  // One patch {k<n>: n}: resolves the hub's status (0: the connection went).
  patch(n) {
    const rid = String(++this.rid);
    return new Promise((resolve) => {
      this.waiting.set(rid, resolve);
      this.c.publish(`$iothub/twin/PATCH/properties/reported/?$rid=${rid}`, JSON.stringify({ [`k${n}`]: n }), { qos: 0 });
      setTimeout(() => { if (this.waiting.delete(rid)) resolve({ status: 0 }); }, 10000);
    });
  }

  // Sends patches 0.. until stop() is called, reconnecting as needed.
  async run() {
    this.running = true;
    let n = 0;
    while (this.running) {
      if (!this.c || this.c.disconnected || !this.c.connected) await this.connect();
      if (!this.running) break;
      const r = await this.patch(n);
      if (r.status === 204) {
        this.acked.push(n);
      } else if (r.status) {
        this.refused.push(r);
        await new Promise((resolve) => setTimeout(resolve, 20)); // a device waits a little
      }
      n++;
    }
  }

  stop() { this.running = false; }
  end() { this.c?.end(true); }
}

async function reportersOn(n, prefix, count) {
  lb.prefer(n === 'a' ? 0 : 1);
  const out = [];
  for (let i = 0; i < count; i++) {
    const id = `${prefix}-${i}`;
    const r = new Reporter(id, await createDevice(id));
    await r.connect();
    out.push(r);
  }
  return out;
}

async function assertAllAcked(reporters, via) {
  for (const r of reporters) {
    const twin = await rest(cs(), 'GET', `/twins/${r.id}?${API}`, undefined, {}, via);
    assert.equal(twin.status, 200, twin.text);
    const rep = twin.body.properties.reported;
    const missing = r.acked.filter((n) => rep[`k${n}`] !== n);
    assert.deepEqual(missing, [], `${r.id}: every acknowledged patch is stored`);
  }
}

test('kill -9 of node a under load: its devices reconnect to node b and go on, every acknowledged write stored', { skip }, async () => {
  const reporters = await reportersOn('a', 'load-a', 10);
  const runs = reporters.map((r) => r.run());
  try {
    await waitFor(() => reporters.every((r) => r.acked.length >= 20), 20000, 'twenty acknowledged patches each');
    const before = reporters.map((r) => r.acked.length);
    lb.prefer(0); // a first: refused once it is gone, so b takes the reconnects
    await nodes.a.kill();
    await waitFor(() => reporters.every((r, i) => r.acked.length >= before[i] + 20), 30000,
      'twenty more acknowledged patches each, through node b');
  } finally {
    reporters.forEach((r) => r.stop());
    await Promise.all(runs);
    reporters.forEach((r) => r.end());
  }
  await assertAllAcked(reporters, B);
  // Node a comes back (same data_dir and name) and serves again.
  nodes.a = await node('a', A).start();
  const twin = await rest(cs(), 'GET', `/twins/load-a-0?${API}`, undefined, {}, A);
  assert.equal(twin.status, 200);
});

test('PostgreSQL restarted under load: 503 "database unavailable" meanwhile, then recovery, nothing acknowledged lost', { skip }, async () => {
  const { execFile } = require('child_process');
  const reporters = await reportersOn('b', 'load-pg', 5);
  const runs = reporters.map((r) => r.run());
  try {
    await waitFor(() => reporters.every((r) => r.acked.length >= 20), 20000, 'twenty acknowledged patches each');
    // (Asynchronously: the devices go on sending while it restarts.)
    await new Promise((resolve, reject) => execFile(path.join(__dirname, '../../scripts/pg-dev.sh'),
      ['restart', process.env.FLEETHUB_TEST_PGDIR], (e) => (e ? reject(e) : resolve())));
    const after = reporters.map((r) => r.acked.length);
    await waitFor(() => reporters.every((r, i) => r.acked.length >= after[i] + 20), 30000,
      'twenty more acknowledged patches each after the restart');
  } finally {
    reporters.forEach((r) => r.stop());
    await Promise.all(runs);
    reporters.forEach((r) => r.end());
  }
  const refusals = reporters.flatMap((r) => r.refused);
  process.stdout.write(`# PostgreSQL restart: ${refusals.length} patches refused meanwhile, ` +
    `${reporters.reduce((n, r) => n + r.acked.length, 0)} acknowledged in all\n`);
  assert.ok(refusals.some((f) => f.status === 503), 'patches sent while PostgreSQL was down were refused');
  for (const f of refusals) {
    // 503 while it is down; a device retrying fast may also meet its rate (429).
    if (f.status === 429) assert.match(f.text, /request rate/);
    else assert.match(`${f.status} ${f.text}`, /^503 .*database unavailable/);
  }
  await assertAllAcked(reporters, A);
  // Both nodes serve again: a REST write through each.
  for (const via of [A, B]) {
    const r = await rest(cs(), 'PATCH', `/twins/load-pg-0?${API}`, { tags: { via } }, { 'If-Match': '*' }, via);
    assert.equal(r.status, 200, r.text);
  }
});

test('the DPS operations of a node killed mid-webhook are taken over by the other once its lease runs out', { skip }, async () => {
  const hook = await new Webhook().listen();
  try {
    let first = true;
    // The first call never answers (node a dies waiting); the next one assigns.
    hook.handler = () => {
      if (first) { first = false; return null; }
      return { status: 200, body: { iotHubHostName: HUB } };
    };
    const key = Buffer.alloc(32, 9).toString('base64');
    const e = await rest(nodes.a.dpsCs, 'PUT', '/enrollmentGroups/lease-g?api-version=2021-10-01', {
      enrollmentGroupId: 'lease-g', attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: key, secondaryKey: key } },
      allocationPolicy: 'custom', customAllocationDefinition: { webhookUrl: hook.url('/lease'), apiVersion: '2021-10-01' },
    }, {}, '127.0.0.16');
    assert.equal(e.status, 200, JSON.stringify(e.body));
    const scope = nodes.a.idScope;
    const auth = regSas(scope, 'lease-dev', deriveKey(key, 'lease-dev'));
    // Node b has the group too (the change reached it): it could attest.
    const reg = await dpsCall('127.0.0.16', 'PUT', `/${scope}/registrations/lease-dev/register?api-version=2021-06-01`, { registrationId: 'lease-dev' }, auth);
    assert.equal(reg.status, 202, JSON.stringify(reg.body));
    await waitFor(() => hook.calls.length === 1, 10000, 'node a to call the webhook');
    // A device connected to node a that will not come back.
    const key2 = await createDevice('lease-orphan');
    lb.prefer(0);
    const { c: orphan } = await mqttDevice(nodes.a, 'lease-orphan', key2, {}, HUB);
    const state = async () => (await rest(cs(), 'GET', `/devices/lease-orphan?${API}`, undefined, {}, B)).body.connectionState;
    await waitFor(async () => (await state()) === 'Connected', 10000, 'the device shown connected on b');
    await nodes.a.kill();
    orphan.end(true);
    const op = reg.body.operationId;
    const poll = () => dpsCall('127.0.0.17', 'GET', `/${scope}/registrations/lease-dev/operations/${op}?api-version=2021-06-01`, null, auth);
    assert.equal((await poll()).status, 202, 'assigning while node a\'s lease holds');
    const done = await waitFor(async () => { const p = await poll(); return p.status === 200 && p; }, 40000,
      'node b to take the operation over and finish it');
    assert.equal(done.body.status, 'assigned');
    assert.equal(hook.calls.length, 2, 'one call by a (which died), one by b');
    await waitFor(() => /taking over operation .* from node a/.test(nodes.b.log), 5000, 'node b to log the takeover');
    await waitFor(async () => (await state()) === 'Disconnected', 15000,
      'the device of the gone node shown disconnected');
    await waitFor(() => /node a is gone/.test(nodes.b.log), 5000, 'node b to log that node a is gone');
    nodes.a = await node('a', A).start();
  } finally {
    await hook.close();
  }
});

test('two fresh nodes started at once on an empty database agree on every key', { skip }, async () => {
  const fresh = pgDatabase('nodes-fresh');
  const make = (name, address) => new Server({
    name: `fresh-${name}`, hubs: [{ name: HUB }], mqtt: `${address}:8883`, https: `${address}:443`,
    serverExtra: ['store = postgresql', `postgresql = ${fresh}`, `node_name = ${name}`],
    dps: { name: 'dps.fleethub.test' },
  });
  const [x, y] = await Promise.all([make('x', '127.0.0.18').start(), make('y', '127.0.0.19').start()]);
  try {
    assert.equal(x.ownerCs(HUB), y.ownerCs(HUB));
    assert.equal(x.dpsCs, y.dpsCs);
    assert.equal(x.idScope, y.idScope);
  } finally {
    await x.stop();
    await y.stop();
  }
});

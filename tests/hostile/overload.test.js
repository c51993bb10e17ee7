// Overload, against the real binary with small limits: one device firing
// far above its request rate, more twin writes than the store's backlog
// bound, more than max_inflight operations on one MQTT connection, a flood
// of REST twin PATCHes on many connections, thousands of pipelined HTTPS
// requests on one connection that does not read its answers, and a DPS
// registration id polling and registering above its rate over MQTT and
// HTTPS. Every request gets one answer: done, or 429 with a retry-after
// (MQTT topics: `&retry-after=N`; HTTPS: a Retry-After header) and the
// Azure error code (429001 ThrottlingException, 429002
// ThrottleBacklogLimitExceeded); a refused write changes nothing and every
// acknowledged one is stored; the server's memory stays bounded; a
// well-behaved client on another connection keeps being served.
'use strict';
const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const {
  interop, Server, withTimeout, deviceCs, rawConnect, connect, publish, subscribe, deviceConnect,
  rssKiB, assertRssBound,
} = require('./lib');
const { rest, parseCs } = require('../interop/lib/server');

const { Client } = interop('azure-iot-device');
const { Mqtt } = interop('azure-iot-device-mqtt');
const { Registry } = interop('azure-iothub');
const { ProvisioningDeviceClient } = interop('azure-iot-provisioning-device');
const { Mqtt: DpsMqtt } = interop('azure-iot-provisioning-device-mqtt');
const { SymmetricKeySecurityClient } = interop('azure-iot-security-symmetric-key');
const { SharedAccessSignature } = interop('azure-iot-common');

let server = null;
after(async () => { await server?.stop(); });

async function startServer(name, lines) {
  await server?.stop();
  server = await new Server({ name, serverExtra: lines }).start();
  return server;
}

// ---- reading what the server sent on a raw connection ----

// The complete MQTT packets received on conn so far: { type, topic, payload }
// (topic and payload only for PUBLISH, QoS 0 as the server sends them).
// Parsed incrementally: floods bring thousands of packets.
function packets(conn) {
  const st = conn.mqtt ??= { off: 0, list: [] };
  const buf = conn.received;
  for (;;) {
    const off = st.off;
    if (off + 2 > buf.length) break;
    let len = 0, mul = 1, i = off + 1, done = false;
    while (i < buf.length) {
      len += (buf[i] & 0x7f) * mul;
      mul *= 128;
      if (!(buf[i++] & 0x80)) { done = true; break; }
    }
    if (!done || i + len > buf.length) break;
    const p = { type: buf[off] >> 4 };
    if (p.type === 3) {
      const tlen = buf.readUInt16BE(i);
      p.topic = buf.subarray(i + 2, i + 2 + tlen).toString();
      p.payload = buf.subarray(i + 2 + tlen, i + len).toString();
    }
    st.list.push(p);
    st.off = i + len;
  }
  return st.list;
}

// Answers on `<prefix><status>/?$rid=..[&...]`, by $rid: { status, params, body }.
function answers(conn, prefix) {
  const st = conn.answers ??= { seen: 0, byRid: new Map() };
  const list = packets(conn);
  for (; st.seen < list.length; st.seen++) {
    const p = list[st.seen];
    if (p.type !== 3 || !p.topic.startsWith(prefix)) continue;
    const [status, query] = p.topic.slice(prefix.length).split('/?');
    const params = new URLSearchParams(query);
    const rid = params.get('$rid');
    assert.ok(!st.byRid.has(rid), `one answer per request ($rid ${rid})`);
    st.byRid.set(rid, { status: Number(status), params, body: p.payload ? JSON.parse(p.payload) : null });
  }
  return st.byRid;
}

async function until(fn, ms, what) {
  await withTimeout((async () => { while (!fn()) await new Promise((r) => setTimeout(r, 20)); })(), ms, what);
}

// A 429 must say when to come back and why, as Azure's error bodies do.
function assertThrottled(a, codes, what) {
  assert.equal(a.status, 429, what);
  assert.ok(Number(a.params.get('retry-after')) >= 1, `${what}: retry-after on the topic`);
  assert.ok(codes.includes(a.body.errorCode), `${what}: errorCode ${a.body.errorCode}`);
  assert.equal(typeof a.body.message, 'string');
}

// ---- hub devices ----

async function createDevice(registry, id) {
  return (await registry.create({ deviceId: id })).responseBody.authentication.symmetricKey.primaryKey;
}

// A raw MQTT session of device id, subscribed to its twin answers.
async function twinSession(id, key) {
  const c = await rawConnect(server);
  await c.write(Buffer.concat([deviceConnect(id, key), subscribe(['$iothub/twin/res/#'])]));
  await until(() => packets(c).some((p) => p.type === 9), 5000, `SUBACK for ${id}`);
  return c;
}

const patch = (rid, body) => publish(`$iothub/twin/PATCH/properties/reported/?$rid=${rid}`, JSON.stringify(body));
const TWIN_RES = '$iothub/twin/res/';

// The reported properties hold every acknowledged key and no refused one.
async function assertAcknowledgedStored(registry, id, byRid, keyOf) {
  const reported = (await registry.getTwin(id)).responseBody.properties.reported;
  let acked = 0;
  for (const [rid, a] of byRid) {
    if (a.status === 204) {
      acked++;
      assert.equal(reported[keyOf(rid)], Number(rid), `acknowledged patch ${rid} is stored`);
    } else {
      assert.equal(reported[keyOf(rid)], undefined, `refused patch ${rid} changed nothing`);
    }
  }
  return acked;
}

// A well-behaved device on its own connection.
async function witnessDevice(registry) {
  const key = await createDevice(registry, 'witness');
  const client = Client.fromConnectionString(deviceCs('localhost', 'witness', key), Mqtt);
  await withTimeout(client.open(), 10000, 'witness open');
  const twin = await withTimeout(client.getTwin(), 10000, 'witness twin');
  let round = 0;
  return {
    client,
    async report(what) {
      round++;
      await withTimeout(new Promise((resolve, reject) => {
        twin.properties.reported.update({ round }, (err) => (err ? reject(err) : resolve()));
      }), 10000, `witness update ${what}`);
      assert.equal((await registry.getTwin('witness')).responseBody.properties.reported.round, round);
    },
  };
}

test('one device far above its rate, and more writes than the store backlog: 429s, nothing acknowledged lost', async () => {
  await startServer('overload-rate', ['device_request_rate = 20', 'device_request_burst = 40',
    'max_write_backlog = 30']);
  const registry = Registry.fromConnectionString(server.ownerCs());
  const key = await createDevice(registry, 'flood-1');
  const witness = await witnessDevice(registry);
  const c = await twinSession('flood-1', key);
  try {
    // 40 patches in one write fit the device's burst; they reach the
    // server in one read, before any commit can come back, so beyond 30
    // queued writes the store backlog refuses the rest (429002).
    const first = [];
    for (let rid = 1; rid <= 40; rid++) first.push(patch(rid, { [`k${rid}`]: rid }));
    await c.write(Buffer.concat(first));
    await until(() => answers(c, TWIN_RES).size === 40, 10000, '40 answers');
    let byRid = answers(c, TWIN_RES);
    const backlog = [...byRid.values()].filter((a) => a.status === 429);
    assert.ok(backlog.length >= 1, 'the write backlog bound refused some patches');
    for (const a of backlog) assertThrottled(a, [429002], 'backlog refusal');
    for (const a of byRid.values()) assert.ok(a.status === 204 || a.status === 429);

    // Then 2,000 patches at once: far above 20/s with the burst spent.
    const rss0 = rssKiB(server);
    const flood = [];
    for (let rid = 41; rid <= 2040; rid++) flood.push(patch(rid, { [`k${rid}`]: rid }));
    await c.write(Buffer.concat(flood));
    await witness.report('during the flood');
    await until(() => answers(c, TWIN_RES).size === 2040, 20000, '2,040 answers');
    const grown = rssKiB(server) - rss0;
    byRid = answers(c, TWIN_RES);
    let rate = 0;
    for (let rid = 41; rid <= 2040; rid++) {
      const a = byRid.get(String(rid));
      if (a.status === 429) {
        assertThrottled(a, [429001], `patch ${rid}`);
        rate++;
      } else {
        assert.equal(a.status, 204, `patch ${rid}`);
      }
    }
    // At most 20/s came back for the time the flood took (plus one token).
    assert.ok(rate >= 1900, `${rate} of 2,000 refused for the rate`);
    const acked = await assertAcknowledgedStored(registry, 'flood-1', byRid, (rid) => `k${rid}`);
    process.stdout.write(`# device flood: ${acked} of 2,040 acknowledged and stored, ${2040 - acked} refused (429)\n`);
    assertRssBound(grown, 16 * 1024, '2,000 patches from one device above its rate');

    // The retry-after is honest: after it the device is served again.
    await new Promise((r) => setTimeout(r, 1000 * Number(byRid.get('2040').params.get('retry-after') ?? 1)));
    await c.write(patch(3000, { k3000: 3000 }));
    await until(() => answers(c, TWIN_RES).has('3000'), 5000, 'answer after retry-after');
    assert.equal(answers(c, TWIN_RES).get('3000').status, 204);
    await witness.report('after the flood');
  } finally {
    c.end();
    await witness.client.close();
  }
});

test('more twin operations in flight on one connection than max_inflight: 429 with retry-after', async () => {
  await startServer('overload-inflight', ['max_inflight = 8']);
  const registry = Registry.fromConnectionString(server.ownerCs());
  const key = await createDevice(registry, 'busy-1');
  const c = await twinSession('busy-1', key);
  try {
    const bytes = [];
    for (let rid = 1; rid <= 200; rid++) bytes.push(patch(rid, { [`k${rid}`]: rid }));
    await c.write(Buffer.concat(bytes));
    await until(() => answers(c, TWIN_RES).size === 200, 10000, '200 answers');
    const byRid = answers(c, TWIN_RES);
    const refused = [...byRid.values()].filter((a) => a.status === 429);
    assert.ok(refused.length >= 1, 'some operations were beyond max_inflight');
    for (const a of refused) {
      assertThrottled(a, [429001], 'in-flight refusal');
      assert.match(a.body.message, /in flight/);
    }
    const acked = await assertAcknowledgedStored(registry, 'busy-1', byRid, (rid) => `k${rid}`);
    process.stdout.write(`# max_inflight 8: ${acked} of 200 acknowledged, ${refused.length} refused\n`);
  } finally {
    c.end();
  }
});

// ---- REST ----

function sasHeader(ownerCs) {
  const cs = parseCs(ownerCs);
  return SharedAccessSignature.create(encodeURIComponent(cs.HostName), cs.SharedAccessKeyName,
    cs.SharedAccessKey, Math.floor(Date.now() / 1000) + 3600).toString();
}

// The complete responses received on a raw HTTPS connection so far:
// [{ status, headers, body }], parsed incrementally.
function httpResponses(conn) {
  const st = conn.http ??= { off: 0, list: [] };
  const buf = conn.received;
  for (;;) {
    const end = buf.indexOf('\r\n\r\n', st.off);
    if (end < 0) break;
    const head = buf.subarray(st.off, end).toString('latin1').split('\r\n');
    const headers = {};
    for (const line of head.slice(1)) {
      const i = line.indexOf(':');
      headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
    }
    const len = Number(headers['content-length'] ?? 0);
    if (buf.length < end + 4 + len) break;
    const body = buf.subarray(end + 4, end + 4 + len).toString();
    st.list.push({ status: Number(head[0].split(' ')[1]), headers, body: body ? JSON.parse(body) : null });
    st.off = end + 4 + len;
  }
  return st.list;
}

function httpRequest(method, path, auth, body) {
  const data = body === undefined ? '' : JSON.stringify(body);
  return Buffer.from(`${method} ${path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: ${auth}\r\n` +
    `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(data)}\r\n\r\n${data}`);
}

test('a flood of REST twin PATCHes beyond the write backlog: 429 + Retry-After, nothing acknowledged lost', async () => {
  await startServer('overload-rest', ['max_write_backlog = 10']);
  const registry = Registry.fromConnectionString(server.ownerCs());
  await createDevice(registry, 'rest-1');
  const auth = sasHeader(server.ownerCs());
  const N = 200;
  const conns = [];
  try {
    // Every connection is ready first; then all requests leave at once,
    // so the server reads many of them before a commit comes back.
    for (let i = 0; i < N; i++) conns.push(await rawConnect(server, { port: 443 }));
    const rss0 = rssKiB(server);
    conns.forEach((c, i) => c.sock.write(httpRequest('PATCH', '/twins/rest-1?api-version=2021-04-12', auth,
      { properties: { desired: { [`r${i}`]: i } } })));
    await until(() => conns.every((c) => httpResponses(c).length === 1), 20000, `${N} REST answers`);
    const grown = rssKiB(server) - rss0;
    const desired = (await registry.getTwin('rest-1')).responseBody.properties.desired;
    let ok = 0, refused = 0;
    conns.forEach((c, i) => {
      const [r] = httpResponses(c);
      if (r.status === 200) {
        ok++;
        assert.equal(desired[`r${i}`], i, `acknowledged PATCH ${i} is stored`);
      } else {
        refused++;
        assert.equal(r.status, 429, `PATCH ${i}: ${JSON.stringify(r.body)}`);
        assert.ok(Number(r.headers['retry-after']) >= 1, 'Retry-After header');
        assert.equal(r.headers['iothub-errorcode'], 'ThrottleBacklogLimitExceeded');
        assert.equal(r.body.errorCode, 429002);
        assert.equal(desired[`r${i}`], undefined, `refused PATCH ${i} changed nothing`);
      }
    });
    process.stdout.write(`# REST flood: ${N} PATCHes at once, ${ok} stored, ${refused} refused (429)\n`);
    assert.ok(refused >= 1, 'the backlog bound refused some PATCHes');
    assertRssBound(grown, 16 * 1024, `${N} simultaneous REST PATCHes`);
    // Served again at once when the flood is over.
    const r = await rest(server.ownerCs(), 'PATCH', '/twins/rest-1?api-version=2021-04-12', { properties: { desired: { after: 1 } } });
    assert.equal(r.status, 200, r.text);
  } finally {
    for (const c of conns) c.end();
  }
});

test('thousands of pipelined requests on one connection that does not read: backpressure, bounded memory', async () => {
  await startServer('overload-pipeline', []);
  const registry = Registry.fromConnectionString(server.ownerCs());
  await createDevice(registry, 'pipe-1');
  // A 7 KB twin: 5,000 answers are 40 MB, far more than the kernel's socket
  // buffers hold, so the server must stop reading rather than queue them.
  const big = await rest(server.ownerCs(), 'PATCH', '/twins/pipe-1?api-version=2021-04-12',
    { tags: { a: 'x'.repeat(3500), b: 'y'.repeat(3500) } });
  assert.equal(big.status, 200, big.text);
  const auth = sasHeader(server.ownerCs());
  const N = 5000;
  const c = await rawConnect(server, { port: 443 });
  // Count answers as they stream in (status lines), without keeping them.
  c.sock.removeAllListeners('data');
  let ok = 0, other = 0, tail = '';
  c.sock.on('data', (d) => {
    const text = tail + d.toString('latin1');
    for (const m of text.matchAll(/HTTP\/1\.1 (\d{3}) /g)) if (m[1] === '200') ok++; else other++;
    tail = text.slice(-16).replace(/^.*HTTP\/1\.1 \d{3} /s, '');
  });
  try {
    c.sock.pause(); // read nothing: the server must stop reading, not buffer answers
    const rss0 = rssKiB(server);
    const one = httpRequest('GET', '/twins/pipe-1?api-version=2021-04-12', auth);
    c.sock.write(Buffer.concat(Array(N).fill(one)));
    await new Promise((r) => setTimeout(r, 2000));
    const grown = rssKiB(server) - rss0;
    assertRssBound(grown, 16 * 1024, `${N} pipelined GETs of a 7 KB twin (${(one.length * N) >> 10} KiB) never read`);
    // Another client is served meanwhile.
    const other1 = await rest(server.ownerCs(), 'GET', '/twins/pipe-1?api-version=2021-04-12');
    assert.equal(other1.status, 200);
    // Reading again: every request gets its answer.
    c.sock.resume();
    await until(() => ok + other === N, 60000, `${N} pipelined answers (${ok} so far)`);
    assert.equal(ok, N);
  } finally {
    c.end();
  }
});

// ---- DPS ----

const DPS_RES = '$dps/registrations/res/';
const KEY = Buffer.alloc(32, 0x62).toString('base64');

function regSas(scope, regId) {
  return SharedAccessSignature.create(encodeURIComponent(`${scope}/registrations/${regId}`), 'registration', KEY,
    Math.floor(Date.now() / 1000) + 3600).toString();
}

test('a registration id above its rate: 429 with retry-after over DPS MQTT and HTTPS', async () => {
  await startServer('overload-dps', ['device_request_rate = 5', 'device_request_burst = 5']);
  const scope = server.idScope;
  for (const id of ['dps-flood', 'dps-quiet']) {
    const r = await rest(server.dpsCs, 'PUT', `/enrollments/${id}?api-version=2021-10-01`, {
      registrationId: id, attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: KEY, secondaryKey: KEY } },
    });
    assert.equal(r.status, 200, r.text);
  }
  const c = await rawConnect(server);
  try {
    await c.write(Buffer.concat([
      connect({ clientId: 'dps-flood', username: `${scope}/registrations/dps-flood/api-version=2019-03-31`, password: regSas(scope, 'dps-flood') }),
      subscribe(['$dps/registrations/res/#'])]));
    await until(() => packets(c).some((p) => p.type === 9), 5000, 'DPS SUBACK');
    const rss0 = rssKiB(server);
    const N = 3000;
    const bytes = [publish('$dps/registrations/PUT/iotdps-register/?$rid=1', '{"registrationId":"dps-flood"}', { qos: 1, id: 1 })];
    for (let rid = 2; rid <= N; rid++) {
      bytes.push(publish(`$dps/registrations/GET/iotdps-get-operationstatus/?$rid=${rid}&operationId=x`, ' ', { qos: 1, id: rid % 65535 || 1 }));
    }
    await c.write(Buffer.concat(bytes));
    await until(() => answers(c, DPS_RES).size === N, 20000, `${N} DPS answers`);
    const grown = rssKiB(server) - rss0;
    const byRid = answers(c, DPS_RES);
    assert.equal(byRid.get('1').status, 202, 'the registration itself was accepted');
    let refused = 0;
    for (const [rid, a] of byRid) {
      if (a.status === 429) {
        assertThrottled(a, [429001], `DPS request ${rid}`);
        refused++;
      } else {
        assert.ok([200, 202, 404].includes(a.status), `DPS request ${rid}: ${a.status}`);
      }
    }
    assert.ok(refused >= N - 20, `${refused} of ${N} refused for the rate`);
    process.stdout.write(`# DPS MQTT flood: ${N} requests from one registration id, ${refused} refused (429)\n`);
    assertRssBound(grown, 16 * 1024, `${N} DPS requests above the rate`);
  } finally {
    c.end();
  }
  // HTTPS: the same registration id is still over its rate.
  const path = `/${scope}/registrations/dps-flood/register?api-version=2019-03-31`;
  const statuses = [];
  for (let i = 0; i < 10; i++) {
    const r = await rest(server.dpsCs, 'PUT', path, { registrationId: 'dps-flood' }, { Authorization: regSas(scope, 'dps-flood') });
    statuses.push(r.status);
    if (r.status === 429) {
      assert.ok(Number(r.headers['retry-after']) >= 1, 'Retry-After header');
      assert.equal(r.body.errorCode, 429001);
    }
  }
  assert.ok(statuses.includes(429), `HTTPS register statuses ${statuses}`);
  // Another registration id is not affected, and after its retry-after the
  // flooding one registers with the official SDK.
  for (const id of ['dps-quiet', 'dps-flood']) {
    if (id === 'dps-flood') await new Promise((r) => setTimeout(r, 1500));
    const t = new DpsMqtt();
    t.on('error', () => {});
    const client = ProvisioningDeviceClient.create('localhost:8883', scope, t, new SymmetricKeySecurityClient(id, KEY));
    const s = await withTimeout(client.register(), 20000, `registration of ${id}`);
    assert.equal(s.status, 'assigned', id);
  }
});

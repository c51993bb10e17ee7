// Crash safety: mixed load — devices reporting properties over MQTT, a back
// end patching desired properties over REST, devices registering through
// the DPS with a custom allocation webhook in flight — and SIGKILL at a
// random moment, 20 rounds on the same data directory. After every restart:
// every acknowledged change is there, no twin version went backwards, and
// no registration is left "assigning".
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('fs');
const path = require('path');
const { interop, Server, withTimeout } = require('./lib');
const { rest } = require('../interop/lib/server');
const { deriveKey, Webhook, CERTS } = require('../interop/lib/dps');

const mqtt = interop('mqtt');
const { SharedAccessSignature } = interop('azure-iot-common');

const HUB = 'hub1.fleethub.test';
const DPS = 'dps.fleethub.test';
const SCOPE = '0ne00C0FFEE';
const GROUP_KEY = Buffer.alloc(32, 0x51).toString('base64');
const ROUNDS = 20;
const DEVICES = 4;
const API = 'api-version=2021-04-12';

let server;
let hook;
const keys = {};
// What the server acknowledged: per device the highest reported seq (and
// the $version it answered with), the highest desired seq; the
// registrations answered "assigned".
const acked = {};
const assigned = new Map();
const started = new Set();

before(async () => {
  hook = await new Webhook().listen();
  hook.handler = () => ({ status: 200, body: { iotHubHostName: HUB }, delayMs: Math.floor(Math.random() * 400) });
  server = await new Server({
    name: 'crash', mqtt: '', https: '',
    hubs: [{ name: HUB, mqtt: '127.0.0.4:8883', https: '127.0.0.4:443' }],
    dps: {
      name: DPS,
      lines: [`id_scope = ${SCOPE}`, `linked_hubs = ${HUB}`, `webhook_ca = ${path.join(CERTS, 'dps-trust.pem')}`,
        'webhook_timeout_ms = 2000', 'webhook_retry_ms = 100', 'mqtt_listen = 127.0.0.3:8883', 'https_listen = 127.0.0.3:443'],
    },
  }).start();
  const dpsCs = server.dpsCs;
  const g = await rest(dpsCs, 'PUT', '/enrollmentGroups/crash-group?api-version=2021-10-01', {
    enrollmentGroupId: 'crash-group',
    attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: GROUP_KEY, secondaryKey: GROUP_KEY } },
    allocationPolicy: 'custom',
    customAllocationDefinition: { webhookUrl: hook.url('/allocate'), apiVersion: '2021-10-01' },
  });
  assert.equal(g.status, 200, g.text);
  for (let i = 0; i < DEVICES; i++) {
    const id = `crash-dev-${i}`;
    const r = await rest(server.ownerCs(HUB), 'PUT', `/devices/${id}?${API}`, { deviceId: id });
    assert.equal(r.status, 200, r.text);
    keys[id] = r.body.authentication.symmetricKey.primaryKey;
    acked[id] = { reported: 0, version: 0, desired: 0 };
  }
});

after(async () => {
  await server?.stop();
  await hook?.close();
});

// A device that reports {seq} as fast as the server acknowledges.
function reporter(id, stop) {
  const password = SharedAccessSignature.create(encodeURIComponent(`${HUB}/devices/${id}`), null, keys[id],
    Math.floor(Date.now() / 1000) + 3600).toString();
  const c = mqtt.connect(`mqtts://${HUB}:8883`, {
    clientId: id, username: `${HUB}/${id}/?${API}`, password, protocolVersion: 4, clean: true,
    reconnectPeriod: 0, connectTimeout: 3000, ca: fs.readFileSync(process.env.FLEETHUB_TEST_CA),
  });
  c.on('error', () => {});
  const inflight = new Map();
  let seq = acked[id].reported;
  const next = () => {
    if (stop.done || !c.connected) return;
    const s = ++seq;
    inflight.set(String(s), s);
    c.publish(`$iothub/twin/PATCH/properties/reported/?$rid=${s}`, JSON.stringify({ seq: s }), { qos: 0 });
  };
  c.on('connect', () => c.subscribe('$iothub/twin/res/#', { qos: 0 }, () => next()));
  c.on('message', (topic) => {
    const m = /^\$iothub\/twin\/res\/(\d+)\/\?\$rid=(\d+)(?:&\$version=(\d+))?/.exec(topic);
    if (!m || !inflight.has(m[2])) return;
    const s = inflight.get(m[2]);
    inflight.delete(m[2]);
    if (m[1] === '204') {
      acked[id].reported = Math.max(acked[id].reported, s);
      acked[id].version = Math.max(acked[id].version, Number(m[3]));
    }
    next();
  });
  return c;
}

// The back end patches desired {seq} one after another.
async function patcher(id, stop) {
  while (!stop.done) {
    const s = acked[id].desired + 1;
    try {
      const r = await rest(server.ownerCs(HUB), 'PATCH', `/twins/${id}?${API}`, { properties: { desired: { seq: s } } });
      if (r.status === 200) acked[id].desired = Math.max(acked[id].desired, s);
    } catch (e) {
      return; // the server went away
    }
  }
}

// A registration over MQTT with the DPS protocol spoken directly (mqtt
// package): connect, register, poll until done. The provisioning SDK is
// exercised in tests/interop; here connections die at any moment and the
// SDK's transport has been seen to throw from its disconnect path then.
function register(regId, key) {
  const password = SharedAccessSignature.create(encodeURIComponent(`${SCOPE}/registrations/${regId}`), 'registration', key,
    Math.floor(Date.now() / 1000) + 3600).toString();
  const c = mqtt.connect(`mqtts://${DPS}:8883`, {
    clientId: regId, username: `${SCOPE}/registrations/${regId}/api-version=2019-03-31`, password,
    protocolVersion: 4, clean: true, reconnectPeriod: 0, connectTimeout: 3000,
    ca: fs.readFileSync(process.env.FLEETHUB_TEST_CA),
  });
  let rid = 0;
  const done = new Promise((resolve, reject) => {
    c.on('error', reject);
    c.on('close', () => reject(new Error('connection closed')));
    c.on('connect', () => c.subscribe('$dps/registrations/res/#', { qos: 1 }, () => {
      c.publish(`$dps/registrations/PUT/iotdps-register/?$rid=${++rid}`, JSON.stringify({ registrationId: regId }), { qos: 1 });
    }));
    c.on('message', (topic, payload) => {
      const m = /^\$dps\/registrations\/res\/(\d+)\/\?\$rid=\d+(?:&retry-after=(\d+))?/.exec(topic);
      if (!m) return;
      let body;
      try { body = JSON.parse(payload.toString()); } catch (e) { reject(e); return; }
      if (m[1] === '202') {
        setTimeout(() => c.publish(`$dps/registrations/GET/iotdps-get-operationstatus/?$rid=${++rid}&operationId=${body.operationId}`, '', { qos: 1 }),
          Number(m[2] ?? 1) * 1000);
      } else if (m[1] === '200') {
        resolve(body.registrationState);
      } else {
        reject(new Error(`status ${m[1]}: ${payload}`));
      }
    });
  });
  return withTimeout(done, 20000, `register ${regId}`).finally(() => c.end(true));
}

// Devices registering through the DPS (webhook answering after 0-400 ms).
async function registrar(round, stop) {
  for (let i = 0; !stop.done; i++) {
    const regId = `crash-${round}-${i}`;
    started.add(regId);
    try {
      const s = await register(regId, deriveKey(GROUP_KEY, regId));
      if (s.status === 'assigned') assigned.set(regId, s.assignedHub);
    } catch (e) {
      return;
    }
  }
}

async function verify(round) {
  const owner = server.ownerCs(HUB);
  for (const id of Object.keys(acked)) {
    const twin = (await rest(owner, 'GET', `/twins/${id}?${API}`)).body;
    const rep = twin.properties.reported;
    assert.ok((rep.seq ?? 0) >= acked[id].reported, `round ${round}: ${id} reported seq ${rep.seq} < acknowledged ${acked[id].reported}`);
    assert.ok(rep.$version >= acked[id].version, `round ${round}: ${id} reported $version ${rep.$version} < acknowledged ${acked[id].version}`);
    assert.ok((twin.properties.desired.seq ?? 0) >= acked[id].desired, `round ${round}: ${id} desired seq ${twin.properties.desired.seq} < acknowledged ${acked[id].desired}`);
    // What the server now says is the floor for the next round.
    acked[id].reported = rep.seq ?? 0;
    acked[id].version = rep.$version;
    acked[id].desired = twin.properties.desired.seq ?? 0;
  }
  // Resumed registrations finish (the webhook answers); none stays assigning.
  const dps = server.dpsCs;
  const states = await withTimeout((async () => {
    for (;;) {
      const r = await rest(dps, 'POST', '/registrations/crash-group/query?api-version=2021-10-01', { query: '*' }, { 'x-ms-max-item-count': '1000' });
      assert.equal(r.status, 200, r.text);
      if (!r.body.some((s) => s.status === 'assigning')) return r.body;
      await new Promise((res) => setTimeout(res, 100));
    }
  })(), 15000, `round ${round}: registrations left assigning`);
  const byId = new Map(states.map((s) => [s.registrationId, s]));
  for (const [regId, hub] of assigned) {
    const s = byId.get(regId);
    assert.ok(s, `round ${round}: acknowledged registration ${regId} is missing`);
    assert.equal(s.status, 'assigned', `round ${round}: ${regId}`);
    assert.equal(s.assignedHub, hub);
  }
  for (const s of states) assert.ok(started.has(s.registrationId), `unknown registration ${s.registrationId}`);
}

test(`${ROUNDS} rounds of mixed load killed with SIGKILL lose no acknowledged write`, async () => {
  for (let round = 1; round <= ROUNDS; round++) {
    const stop = { done: false };
    const clients = Object.keys(acked).map((id) => reporter(id, stop));
    const work = [...Object.keys(acked).map((id) => patcher(id, stop)), registrar(round, stop), registrar(`${round}b`, stop)];
    await new Promise((r) => setTimeout(r, 300 + Math.floor(Math.random() * 1200)));
    await server.kill();
    stop.done = true;
    for (const c of clients) c.end(true);
    await Promise.all(work);
    await server.start();
    await verify(round);
  }
  const total = Object.values(acked).reduce((n, a) => n + a.reported + a.desired, 0);
  assert.ok(total > 0 && assigned.size > 0, `load was applied: ${total} twin writes, ${assigned.size} registrations`);
  process.stdout.write(`# crash safety: ${ROUNDS} SIGKILLs, ${total} acknowledged twin writes checked, ${assigned.size} acknowledged registrations, ${started.size} started\n`);
});

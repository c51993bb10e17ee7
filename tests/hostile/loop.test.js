// Nothing on the event loop waits or scans (issue 13, item 1): a client of
// each hostile or slow kind runs while a witness device reads its twin in a
// loop, and the witness's answers must keep coming quickly.
//   - a log nobody reads (the server's stderr a full pipe): lines go
//     through a bounded buffer on a thread of their own, the overflow is
//     dropped and counted;
//   - registrations with invented ids and forged tokens against hundreds
//     of enrollment groups: the group key checks of all devices together
//     are bounded (attestation_rate), beyond it 429 with retry-after before
//     any HMAC;
//   - registration-state queries filtered by a group over a 30,000-row
//     table: the listing runs on a worker thread.
'use strict';
const { test } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('crypto');
const https = require('https');
const { execFileSync } = require('child_process');
const path = require('path');
const { interop, Server, withTimeout } = require('./lib');
const { rest, mqttDevice, waitFor, PG } = require('../interop/lib/server');

const { SharedAccessSignature } = interop('azure-iot-common');
// Latency bounds for the normal build; a sanitizer build runs every HMAC
// and JSON parse several times slower, on the loop and off it alike.
const SLOW = process.env.FLEETHUB_SANITIZED ? 3 : 1;
const { Registry } = interop('azure-iothub');

// A device that reads its twin back to back until stop(); the latencies.
async function witness(server) {
  const registry = Registry.fromConnectionString(server.ownerCs());
  const key = (await registry.create({ deviceId: 'witness' })).responseBody.authentication.symmetricKey.primaryKey;
  const { c } = await mqttDevice(server, 'witness', key);
  await new Promise((resolve) => c.subscribe('$iothub/twin/res/#', resolve));
  const lat = [];
  let stopping = false;
  let rid = 0;
  const pending = new Map(); // rid -> { t0, resolve }
  c.on('message', (topic) => {
    const m = /\$rid=(\d+)/.exec(topic);
    const p = m && pending.get(m[1]);
    if (p) { pending.delete(m[1]); lat.push(Date.now() - p.t0); p.resolve(); }
  });
  const loop = (async () => {
    while (!stopping) {
      const r = String(++rid);
      const answered = new Promise((resolve) => pending.set(r, { t0: Date.now(), resolve }));
      c.publish(`$iothub/twin/GET/?$rid=${r}`, ' ');
      await withTimeout(answered, 10000, `twin GET ${r} answered`);
      await new Promise((res) => setTimeout(res, 5));
    }
  })();
  return {
    async stop() {
      stopping = true;
      await loop;
      c.end(true);
      lat.sort((a, b) => a - b);
      return { n: lat.length, p99: lat[Math.floor(lat.length * 0.99)] ?? 0, max: lat[lat.length - 1] ?? 0 };
    },
  };
}

function report(what, s) {
  process.stdout.write(`# ${what}: witness ${s.n} twin GETs, p99 ${s.p99} ms, max ${s.max} ms\n`);
}

test('a log nobody reads does not stop the server; what does not fit is dropped and counted', async () => {
  const server = await new Server({ name: 'loop-log', stderrUnread: true, serverExtra: ['log_level = info'] }).start();
  try {
    const w = await witness(server);
    // Every refused request logs a line of about 130 bytes: 16,000 of
    // them are 2 MB of log against a 64 KiB pipe nobody reads.
    const ca = require('fs').readFileSync(server.caPath);
    const agent = new https.Agent({ keepAlive: true, maxSockets: 16 });
    const one = (i) => new Promise((resolve) => {
      const req = https.request({ host: 'localhost', port: 443, path: `/devices/refused-${i}?api-version=2021-04-12`, method: 'GET', agent, ca,
        headers: { Authorization: 'SharedAccessSignature sr=localhost&sig=AAAA&se=1&skn=iothubowner' } },
      (res) => { res.resume(); res.on('end', () => resolve(res.statusCode)); });
      req.on('error', () => resolve(0));
      req.end();
    });
    const statuses = [];
    for (let i = 0; i < 16000; i += 16) statuses.push(...await Promise.all(Array.from({ length: 16 }, (_, k) => one(i + k))));
    agent.destroy();
    const s = await withTimeout(w.stop(), 15000, 'the witness to finish');
    report('log nobody reads', s);
    assert.ok(statuses.every((st) => st === 401), 'every request was answered (401)');
    assert.ok(s.n > 10, 'the witness kept being answered');
    assert.ok(s.p99 < 250 * SLOW, `witness p99 ${s.p99} ms`);
    server.drainLog();
    await waitFor(() => /log: \d+ lines dropped/.test(server.log), 10000, 'the count of dropped lines');
    process.stdout.write(`# ${/log: (\d+) lines dropped/.exec(server.log)[1]} log lines dropped\n`);
  } finally {
    server.drainLog();
    await server.stop();
  }
});

test('registrations with invented ids against 300 groups: the key checks are bounded, others keep their latency', async () => {
  const server = await new Server({ name: 'loop-attest', serverExtra: ['log_level = warn'] }).start();
  try {
    const api = 'api-version=2021-10-01';
    for (let i = 0; i < 300; i++) {
      const r = await rest(server.dpsCs, 'PUT', `/enrollmentGroups/g-${i}?${api}`,
        { enrollmentGroupId: `g-${i}`, attestation: { type: 'symmetricKey', symmetricKey: {} } });
      assert.equal(r.status, 200, r.text);
    }
    const w = await witness(server);
    const agent = new https.Agent({ keepAlive: true, maxSockets: 16 });
    const attempt = () => new Promise((resolve) => {
      const regid = `forged-${crypto.randomBytes(6).toString('hex')}`;
      const sas = SharedAccessSignature.create(encodeURIComponent(`${server.idScope}/registrations/${regid}`), 'registration',
        crypto.randomBytes(32).toString('base64'), Math.floor(Date.now() / 1000) + 3600).toString();
      const body = JSON.stringify({ registrationId: regid });
      const req = https.request({ host: 'localhost', port: 443, method: 'PUT', agent, ca: require('fs').readFileSync(server.caPath),
        path: `/${server.idScope}/registrations/${regid}/register?api-version=2021-06-01`,
        headers: { Authorization: sas, 'Content-Type': 'application/json', 'Content-Length': body.length } },
      (res) => { res.resume(); res.on('end', () => resolve({ status: res.statusCode, retry: res.headers['retry-after'] })); });
      req.on('error', () => resolve({ status: 0 }));
      req.end(body);
    });
    const results = [];
    const until = Date.now() + 3000;
    await Promise.all(Array.from({ length: 16 }, async () => {
      while (Date.now() < until) results.push(await attempt());
    }));
    agent.destroy();
    const s = await withTimeout(w.stop(), 15000, 'the witness to finish');
    report('forged registrations', s);
    const count = (st) => results.filter((r) => r.status === st).length;
    process.stdout.write(`# ${results.length} forged attempts: ${count(401)} checked and refused (401), ${count(429)} refused before any check (429)\n`);
    assert.equal(count(401) + count(429), results.length, 'every attempt refused');
    assert.ok(count(429) > 0, 'the bound on key checks refused some');
    assert.ok(results.filter((r) => r.status === 429).every((r) => Number(r.retry) >= 1), 'with Retry-After');
    // 50,000 checks/s at 1,200 per attempt: at most ~42 per second checked
    assert.ok(count(401) <= 60 * 3 + 50, `${count(401)} attempts were checked in 3 s`);
    assert.ok(s.p99 < 100 * SLOW, `witness p99 ${s.p99} ms`);
  } finally {
    await server.stop();
  }
});

test('registration queries of a group over 30,000 registrations: the listing runs off the loop',
  { skip: PG ? 'the registrations are written into the SQLite file directly' : false }, async () => {
  const server = new Server({ name: 'loop-query' });
  await server.start();
  await server.stop();
  execFileSync(process.env.FLEETHUB_DBFILL, [path.join(server.dataDir, 'fleethub.db'), 'localhost', '30000', 'big-group']);
  await server.start();
  try {
    const w = await witness(server);
    const api = 'api-version=2021-10-01';
    let found = -1;
    for (let i = 0; i < 8; i++) {
      // A group with no registration: every row is read and filtered out.
      const r = await rest(server.dpsCs, 'POST', `/registrations/no-such-group/query?${api}`, { query: '*' });
      assert.equal(r.status, 200, r.text);
      found = r.body.length;
    }
    const page = await rest(server.dpsCs, 'POST', `/registrations/big-group/query?${api}`, { query: '*' },
      { 'x-ms-max-item-count': '100' });
    const s = await withTimeout(w.stop(), 15000, 'the witness to finish');
    report('group queries over 30,000 rows', s);
    assert.equal(found, 0);
    assert.equal(page.body.length, 100);
    assert.ok(page.headers['x-ms-continuation'], 'more pages');
    // Each query reads 30,000 rows (about 90 ms on the loop before this
    // moved to a worker): the witness goes on being answered meanwhile.
    assert.ok(s.n >= 30, `the witness was answered ${s.n} times`);
    assert.ok(s.p99 < 50 * SLOW, `witness p99 ${s.p99} ms`);
  } finally {
    await server.stop();
  }
});

// The soak (issue 5, item 8): one fleethub process on 127.0.0.20 under
// steady, bounded churn for SOAK_SECONDS — official-SDK devices that
// connect, read their twin, report, wait for a desired change and
// disconnect; devices that vanish without DISCONNECT; a back end on the
// service REST API (twin patches and reads, device lists, devices created
// and deleted); devices registering through the DPS over MQTT and HTTPS.
// Every SOAK_SAMPLE_SECONDS the server's RSS (/proc/PID/status) and open
// descriptors (/proc/PID/fd) are sampled. After the warm-up the RSS must
// stay within SOAK_RSS_BOUND_KIB of where it was, and once the load stops
// the descriptors must come back to where they were before it started.
// Run by tests/soak/run.sh (`make soak`); never part of `make test`.
'use strict';
const assert = require('node:assert/strict');
const fs = require('fs');
const path = require('path');
const tls = require('tls');
const { createRequire } = require('module');

// The npm test clients live in tests/interop/node_modules.
const interop = createRequire(path.join(__dirname, '../interop/package.json'));
const { Client } = interop('azure-iot-device');
const { Mqtt } = interop('azure-iot-device-mqtt');
const { SharedAccessSignature } = interop('azure-iot-common');
const mqtt = interop('mqtt');
const { Server, rest, deviceCs, withTimeout, report } = require('../interop/lib/server');
const { register, deriveKey } = require('../interop/lib/dps');

const HUB = 'hub1.fleethub.test';
const DPS = 'dps.fleethub.test';
const IP = '127.0.0.20';
const API = 'api-version=2021-04-12';
const DPS_API = 'api-version=2021-10-01';
const GROUP_KEY = Buffer.alloc(32, 0x5a).toString('base64');

const num = (name, dflt) => (process.env[name] ? Number(process.env[name]) : dflt);
const SECONDS = num('SOAK_SECONDS', 1800);
const WARMUP = num('SOAK_WARMUP_SECONDS', Math.min(120, Math.ceil(SECONDS / 10)));
const SAMPLE = num('SOAK_SAMPLE_SECONDS', 5);
const RSS_BOUND = num('SOAK_RSS_BOUND_KIB', 8192);
// Each device worker has devices of its own: a hub allows one connection
// per device, and a second one would close the first.
const DEVICE_WORKERS = 6;
const PER_WORKER = 2;
const DEVICES = (DEVICE_WORKERS + 1) * PER_WORKER;
const REGISTRATIONS = 40; // registration ids, reused (re-registration)
const SANITIZED = !!process.env.FLEETHUB_SANITIZED;
const OUT = process.env.SOAK_OUT;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const pick = (n) => Math.floor(Math.random() * n);

const counts = { cycles: 0, reported: 0, desired: 0, twinGets: 0, rest: 0, registrations: 0, abrupt: 0 };
const errors = [];
function failed(what, e) {
  const line = `${new Date().toISOString()} ${what}: ${e && e.message ? e.message : e}`;
  errors.push(line);
  if (errors.length <= 50) process.stdout.write(`soak: error ${line}\n`);
}

let server;
const keys = {};
const stop = { done: false };

// One official-SDK device session: open, twin GET, reported patches, a
// desired change made over REST and seen by the device, close.
async function deviceCycle(id) {
  const client = Client.fromConnectionString(deviceCs(HUB, id, keys[id]), Mqtt);
  try {
    await withTimeout(client.open(), 20000, `open ${id}`);
    const twin = await withTimeout(client.getTwin(), 20000, `getTwin ${id}`);
    counts.twinGets++;
    for (let i = 0; i < 3; i++) {
      await withTimeout(report(twin, { soak: { n: counts.reported, at: Date.now() } }), 20000, `report ${id}`);
      counts.reported++;
    }
    const want = `v${Date.now()}-${pick(1e6)}`;
    const seen = new Promise((resolve) => {
      const on = (delta) => {
        if (delta.mark === want) {
          twin.removeListener('properties.desired', on);
          resolve();
        }
      };
      twin.on('properties.desired', on);
    });
    const r = await rest(server.ownerCs(HUB), 'PATCH', `/twins/${id}?${API}`, { properties: { desired: { mark: want } } });
    assert.equal(r.status, 200, r.text);
    await withTimeout(seen, 20000, `desired change seen by ${id}`);
    counts.desired++;
    counts.cycles++;
  } finally {
    await withTimeout(client.close(), 20000, `close ${id}`).catch(() => {});
  }
}

// A device that connects, asks for its twin and disappears without a
// DISCONNECT (half the time before the answer), or a TLS connection that
// closes before any MQTT byte.
async function abruptCycle(id) {
  if (pick(4) === 0) {
    await new Promise((resolve) => {
      const s = tls.connect({ host: IP, port: 8883, servername: HUB, ca: fs.readFileSync(process.env.FLEETHUB_TEST_CA) });
      s.on('error', () => resolve());
      s.once('secureConnect', () => { s.destroy(); resolve(); });
    });
    counts.abrupt++;
    return;
  }
  const password = SharedAccessSignature.create(encodeURIComponent(`${HUB}/devices/${id}`), null, keys[id],
    Math.floor(Date.now() / 1000) + 3600).toString();
  const c = mqtt.connect(`mqtts://${IP}:8883`, {
    clientId: id, username: `${HUB}/${id}/?${API}`, password, protocolVersion: 4, clean: true,
    reconnectPeriod: 0, connectTimeout: 10000, servername: HUB, ca: fs.readFileSync(process.env.FLEETHUB_TEST_CA),
  });
  c.on('error', () => {});
  try {
    await withTimeout(new Promise((resolve, reject) => {
      c.once('connect', resolve);
      c.once('close', () => reject(new Error('closed before CONNACK')));
    }), 15000, `abrupt connect ${id}`);
    await new Promise((resolve) => c.subscribe('$iothub/twin/res/#', { qos: 0 }, resolve));
    const answered = new Promise((resolve) => c.once('message', resolve));
    c.publish('$iothub/twin/GET/?$rid=1', ' ');
    if (pick(2)) await withTimeout(answered, 15000, `abrupt twin GET ${id}`);
    counts.abrupt++;
  } finally {
    c.stream.destroy();
    c.end(true);
  }
}

async function restCycle(i) {
  const owner = server.ownerCs(HUB);
  const id = `soak-dev-${pick(DEVICES)}`;
  const calls = [
    ['GET', `/twins/${id}?${API}`],
    ['PATCH', `/twins/${id}?${API}`, { tags: { soak: { i } } }],
    ['GET', `/devices?${API}&top=100`],
    ['GET', `/devices/${id}?${API}`],
  ];
  for (const [method, p, body] of calls) {
    const r = await rest(owner, method, p, body);
    assert.equal(r.status, 200, `${method} ${p}: ${r.text}`);
    counts.rest++;
  }
  // A device created and deleted (a bounded set of ids).
  const tmp = `soak-tmp-${i % 20}`;
  const c = await rest(owner, 'PUT', `/devices/${tmp}?${API}`, { deviceId: tmp });
  assert.ok(c.status === 200 || c.status === 409, `create ${tmp}: ${c.text}`);
  const d = await rest(owner, 'DELETE', `/devices/${tmp}?${API}`, undefined, { 'If-Match': '*' });
  assert.ok(d.status === 204 || d.status === 404, `delete ${tmp}: ${d.text}`);
  counts.rest += 2;
}

// Worker w of two registers ids of its own (one registration at a time
// per id, as a device would).
async function registrationCycle(w, i) {
  const regId = `soak-reg-${w}-${i % (REGISTRATIONS / 2)}`;
  const transport = i % 2 ? 'https' : 'mqtt';
  const s = await register(server.idScope, transport, regId, deriveKey(GROUP_KEY, regId));
  assert.equal(s.status, 'assigned', JSON.stringify(s));
  assert.equal(s.assignedHub, HUB);
  counts.registrations++;
}

// Runs fn(i) again and again until the soak ends, pausing pauseMs between
// runs (the load is steady, not a flood: this is about leaks, not speed).
async function worker(name, fn, pauseMs) {
  for (let i = 0; !stop.done; i++) {
    try {
      await fn(i);
    } catch (e) {
      failed(name, e);
    }
    await sleep(pauseMs);
  }
}

function sampleServer() {
  const pid = server.proc.pid;
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return {
    rssKiB: Number(/VmRSS:\s+(\d+)/.exec(status)[1]),
    fds: fs.readdirSync(`/proc/${pid}/fd`).length,
  };
}

const median = (a) => {
  const s = [...a].sort((x, y) => x - y);
  return s.length ? s[Math.floor(s.length / 2)] : NaN;
};

async function main() {
  server = await new Server({
    name: 'soak', mqtt: `${IP}:8883`, https: `${IP}:443`,
    hubs: [{ name: HUB }],
    dps: { name: DPS, lines: ['id_scope = 0ne00050AC0', `linked_hubs = ${HUB}`] },
  }).start();
  const samples = [];
  let exitCode = 0;
  try {
    const owner = server.ownerCs(HUB);
    for (let i = 0; i < DEVICES; i++) {
      const id = `soak-dev-${i}`;
      const r = await rest(owner, 'PUT', `/devices/${id}?${API}`, { deviceId: id });
      assert.equal(r.status, 200, r.text);
      keys[id] = r.body.authentication.symmetricKey.primaryKey;
    }
    const g = await rest(server.dpsCs, 'PUT', `/enrollmentGroups/soak-group?${DPS_API}`, {
      enrollmentGroupId: 'soak-group', allocationPolicy: 'hashed',
      attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: GROUP_KEY, secondaryKey: GROUP_KEY } },
      reprovisionPolicy: { updateHubAssignment: true, migrateDeviceData: true },
    });
    assert.equal(g.status, 200, g.text);
    await sleep(1000);
    const before = sampleServer();
    process.stdout.write(`soak: ${SECONDS} s (warm-up ${WARMUP} s), pid ${server.proc.pid}, before load: ` +
      `RSS ${before.rssKiB} KiB, ${before.fds} fds\n`);

    const t0 = Date.now();
    const workers = [];
    const own = (w, i) => `soak-dev-${w * PER_WORKER + (i % PER_WORKER)}`;
    for (let w = 0; w < DEVICE_WORKERS; w++) {
      workers.push(worker('device', (i) => deviceCycle(own(w, i)), 100));
    }
    workers.push(worker('abrupt', (i) => abruptCycle(own(DEVICE_WORKERS, i)), 100));
    workers.push(worker('rest', restCycle, 200));
    workers.push(worker('rest', restCycle, 200));
    workers.push(worker('dps', (i) => registrationCycle(0, i), 200));
    workers.push(worker('dps', (i) => registrationCycle(1, i + 1), 200));

    let lastPrint = 0;
    while (Date.now() - t0 < SECONDS * 1000) {
      await sleep(SAMPLE * 1000);
      const s = { t: Math.round((Date.now() - t0) / 1000), ...sampleServer(), ...counts, errors: errors.length };
      samples.push(s);
      if (s.t - lastPrint >= 60 || s.t >= SECONDS) {
        lastPrint = s.t;
        process.stdout.write(`soak: t=${s.t}s RSS ${s.rssKiB} KiB, ${s.fds} fds; cycles ${s.cycles}, reported ${s.reported}, ` +
          `rest ${s.rest}, registrations ${s.registrations}, abrupt ${s.abrupt}, errors ${s.errors}\n`);
      }
    }
    stop.done = true;
    await withTimeout(Promise.all(workers), 60000, 'the workers to finish');
    // Connections end on both sides (idle keep-alive ones of the REST
    // clients included): wait for the descriptors to settle, 30 s at most.
    let after = sampleServer();
    for (let waited = 0; after.fds > before.fds + 2 && waited < 30000; waited += 500) {
      await sleep(500);
      after = sampleServer();
    }
    if (process.env.SOAK_DEBUG) {
      for (const fd of fs.readdirSync(`/proc/${server.proc.pid}/fd`)) {
        process.stdout.write(`fd ${fd} -> ${fs.readlinkSync(`/proc/${server.proc.pid}/fd/${fd}`)}\n`);
      }
    }

    const post = samples.filter((s) => s.t > WARMUP);
    const head = post.slice(0, 6);
    const tail = post.slice(-6);
    const rssBase = median(head.map((s) => s.rssKiB));
    const rssEnd = median(tail.map((s) => s.rssKiB));
    const rssMax = Math.max(...post.map((s) => s.rssKiB));
    const fdHeadMax = Math.max(...head.map((s) => s.fds));
    const fdMax = Math.max(...post.map((s) => s.fds));
    const ops = counts.reported + counts.desired + counts.twinGets + counts.rest + counts.registrations + counts.abrupt;
    const summary = {
      seconds: SECONDS, warmup: WARMUP, samples: samples.length, ...counts, ops, errors: errors.length,
      rssBeforeKiB: before.rssKiB, rssAfterWarmupKiB: rssBase, rssEndKiB: rssEnd, rssMaxKiB: rssMax,
      rssGrowthKiB: rssEnd - rssBase, fdsBefore: before.fds, fdsAfterWarmupMax: fdHeadMax, fdsMax: fdMax,
      fdsAfterLoad: after.fds, rssAfterLoadKiB: after.rssKiB,
    };
    process.stdout.write(`soak: summary ${JSON.stringify(summary)}\n`);
    if (OUT) {
      fs.writeFileSync(path.join(OUT, 'samples.csv'), 't,rssKiB,fds,cycles,reported,rest,registrations,abrupt,errors\n' +
        samples.map((s) => [s.t, s.rssKiB, s.fds, s.cycles, s.reported, s.rest, s.registrations, s.abrupt, s.errors].join(',')).join('\n') + '\n');
      fs.writeFileSync(path.join(OUT, 'summary.json'), JSON.stringify({ summary, errors: errors.slice(0, 50) }, null, 2) + '\n');
    }

    const problems = [];
    if (post.length < 2) problems.push(`too short: ${post.length} samples after the warm-up`);
    if (!SANITIZED && !(rssEnd - rssBase <= RSS_BOUND)) {
      problems.push(`RSS grew ${rssEnd - rssBase} KiB after the warm-up (bound ${RSS_BOUND} KiB)`);
    }
    // 11 clients run at once; their connections come and go.
    if (fdMax > fdHeadMax + 12) problems.push(`open descriptors rose to ${fdMax} (${fdHeadMax} just after the warm-up)`);
    if (after.fds > before.fds + 2) problems.push(`${after.fds} descriptors open after the load, ${before.fds} before it`);
    if (errors.length > ops / 1000) problems.push(`${errors.length} failed operations of ${ops}`);
    if (problems.length) {
      process.stdout.write(`soak: FAILED: ${problems.join('; ')}\n`);
      exitCode = 1;
    } else {
      process.stdout.write(`soak: passed (RSS ${rssBase} -> ${rssEnd} KiB, descriptors ${before.fds} -> ${after.fds})\n`);
    }
  } finally {
    stop.done = true;
    await server.stop();
  }
  process.exit(exitCode);
}

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    server?.kill();
    process.exit(1);
  });
}

main().catch((e) => {
  process.stdout.write(`soak: FAILED: ${e.stack || e}\n`);
  server?.kill();
  process.exit(1);
});

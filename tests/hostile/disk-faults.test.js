// Disk faults (issue 5, item 6): the data directory on a small tmpfs that
// fills up, and write/fsync errors injected into the server's own calls
// (tests/faults/faultfs.c, preloaded). While the storage fails, every write
// is refused with a 503 that says why ("storage full: ..." / "storage I/O
// error: ...") on the twin topics, the hub REST API and the DPS; reads
// (twin GET over MQTT, REST GETs) go on; a registration is never answered
// "assigned" before that is stored; the server logs one line per episode,
// not one per refusal. When space is freed or the faults stop, writes work
// again without a restart. Afterwards PRAGMA integrity_check says ok and,
// after a restart, every acknowledged write is there. A device that
// subscribes while the disk is full is served, and its session is stored
// once it can be.
//
// The tmpfs needs root (CI runs as root): a failed mount fails the test.
'use strict';
const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');
const { interop, Server, withTimeout } = require('./lib');
const { rest, deviceCs, PG } = require('../interop/lib/server');
const { deriveKey, Webhook, CERTS } = require('../interop/lib/dps');

const mqtt = interop('mqtt');
const { SharedAccessSignature } = interop('azure-iot-common');
const { Client } = interop('azure-iot-device');
const { Mqtt } = interop('azure-iot-device-mqtt');

const HUB = 'hub1.fleethub.test';
const DPS = 'dps.fleethub.test';
const SCOPE = '0ne00D15C00';
const GROUP_KEY = Buffer.alloc(32, 0x3c).toString('base64');
const HOOK_KEY = Buffer.alloc(32, 0x3d).toString('base64'); // a group with a webhook
const API = 'api-version=2021-04-12';
const DPS_API = 'api-version=2021-10-01';
const FAULTFS = process.env.FLEETHUB_FAULTFS;
const DBCHECK = process.env.FLEETHUB_DBCHECK;

function serverOpts(name, extra = {}) {
  return {
    name, mqtt: '', https: '',
    hubs: [{ name: HUB, mqtt: '127.0.0.4:8883', https: '127.0.0.4:443' }],
    dps: {
      name: DPS,
      lines: [`id_scope = ${SCOPE}`, `linked_hubs = ${HUB}`, `webhook_ca = ${path.join(CERTS, 'dps-trust.pem')}`,
        'mqtt_listen = 127.0.0.3:8883', 'https_listen = 127.0.0.3:443'],
    },
    ...extra,
  };
}

// ---- raw MQTT: exact statuses and bodies ----

// An MQTT client (host, user name, password) subscribed to answers;
// request(topic, body) publishes topic with "$RID" replaced by a fresh
// request id and resolves { status, body, version } from the answer
// whose topic `answer` matches (status, rid[, version]).
async function rawClient(host, clientId, username, password, answers, answer) {
  const c = mqtt.connect(`mqtts://${host}:8883`, {
    clientId, username, password, protocolVersion: 4, clean: true,
    reconnectPeriod: 0, connectTimeout: 5000, ca: fs.readFileSync(process.env.FLEETHUB_TEST_CA),
  });
  c.on('error', () => {});
  const waiting = new Map();
  let rid = 0;
  c.on('message', (topic, payload) => {
    const m = answer.exec(topic);
    if (!m || !waiting.has(m[2])) return;
    const text = payload.toString();
    waiting.get(m[2])({ status: Number(m[1]), body: text ? JSON.parse(text) : null, version: Number(m[3]) });
    waiting.delete(m[2]);
  });
  await withTimeout(new Promise((resolve, reject) => {
    c.once('connect', () => c.subscribe(answers, { qos: 1 }, resolve));
    c.once('close', () => reject(new Error(`${clientId}: connection closed`)));
  }), 10000, `${clientId} to connect`);
  return {
    request(topic, body) {
      const r = String(++rid);
      const got = new Promise((resolve) => waiting.set(r, resolve));
      c.publish(topic.replace('$RID', r), body, { qos: 1 });
      return withTimeout(got, 10000, `answer to ${topic}`);
    },
    end: () => c.end(true),
  };
}

// A device on the twin topics: report(patch) and get().
async function twinDevice(id, key) {
  const password = SharedAccessSignature.create(encodeURIComponent(`${HUB}/devices/${id}`), null, key,
    Math.floor(Date.now() / 1000) + 3600).toString();
  const c = await rawClient(HUB, id, `${HUB}/${id}/?${API}`, password, '$iothub/twin/res/#',
    /^\$iothub\/twin\/res\/(\d+)\/\?\$rid=(\d+)(?:&\$version=(\d+))?/);
  return {
    report: (patch) => c.request('$iothub/twin/PATCH/properties/reported/?$rid=$RID', JSON.stringify(patch)),
    get: () => c.request('$iothub/twin/GET/?$rid=$RID', ' '),
    end: c.end,
  };
}

// A DPS device: register() and poll(operationId).
async function dpsDevice(regId, groupKey = GROUP_KEY) {
  const key = deriveKey(groupKey, regId);
  const password = SharedAccessSignature.create(encodeURIComponent(`${SCOPE}/registrations/${regId}`), 'registration', key,
    Math.floor(Date.now() / 1000) + 3600).toString();
  const c = await rawClient(DPS, regId, `${SCOPE}/registrations/${regId}/api-version=2019-03-31`, password,
    '$dps/registrations/res/#', /^\$dps\/registrations\/res\/(\d+)\/\?\$rid=(\d+)/);
  return {
    register: () => c.request('$dps/registrations/PUT/iotdps-register/?$rid=$RID', JSON.stringify({ registrationId: regId })),
    poll: (op) => c.request(`$dps/registrations/GET/iotdps-get-operationstatus/?$rid=$RID&operationId=${op}`, ''),
    end: c.end,
  };
}

// Registers and polls until the operation is no longer assigning.
async function registerToEnd(regId) {
  const d = await dpsDevice(regId);
  try {
    let r = await d.register();
    for (let i = 0; r.status === 202 && i < 100; i++) {
      await new Promise((res) => setTimeout(res, 200));
      r = await d.poll(r.body.operationId);
    }
    return r;
  } finally {
    d.end();
  }
}

// A clean-session-0 reconnect of the device of cs finds its session: session
// present, and a twin GET answered without subscribing again.
async function checkSessionStored(cs) {
  const { DeviceId: id, SharedAccessKey: key } = Object.fromEntries(cs.split(';').map((p) => [p.slice(0, p.indexOf('=')), p.slice(p.indexOf('=') + 1)]));
  const password = SharedAccessSignature.create(encodeURIComponent(`${HUB}/devices/${id}`), null, key,
    Math.floor(Date.now() / 1000) + 3600).toString();
  const c = mqtt.connect(`mqtts://${HUB}:8883`, {
    clientId: id, username: `${HUB}/${id}/?${API}`, password, protocolVersion: 4, clean: false,
    reconnectPeriod: 0, connectTimeout: 5000, ca: fs.readFileSync(process.env.FLEETHUB_TEST_CA),
  });
  c.on('error', () => {});
  try {
    const connack = await withTimeout(new Promise((resolve) => c.once('connect', resolve)), 10000, `${id} to connect`);
    assert.equal(connack.sessionPresent, true, 'the session written after the disk was full');
    const answered = new Promise((resolve) => c.on('message', (topic) => { if (topic.startsWith('$iothub/twin/res/200/?$rid=s1')) resolve(); }));
    c.publish('$iothub/twin/GET/?$rid=s1', ' ');
    await withTimeout(answered, 10000, 'a twin GET on the stored subscription');
  } finally {
    c.end(true);
  }
}

// ---- what was acknowledged, and the checks ----

class Acks {
  constructor() {
    this.desired = 0;
    this.reported = 0;
    this.devices = [];
    this.registrations = [];
    // Fault episodes as the clients saw them: a refused write after one
    // that worked. The server must log one line for each, no more.
    this.episodes = 0;
    this.failing = false;
  }

  outcome(ok) {
    if (!ok && !this.failing) this.episodes++;
    this.failing = !ok;
  }

  async desiredPatch(owner, id, expectStatus) {
    const seq = this.desired + 1;
    const r = await rest(owner, 'PATCH', `/twins/${id}?${API}`, { properties: { desired: { seq } } });
    if (r.status === 200) this.desired = seq;
    this.outcome(r.status === 200);
    if (expectStatus) assert.equal(r.status, expectStatus, `desired patch: ${r.text}`);
    return r;
  }

  async reportedPatch(dev, expectStatus) {
    const seq = this.reported + 1;
    const r = await dev.report({ seq });
    if (r.status === 204) this.reported = seq;
    this.outcome(r.status === 204);
    if (expectStatus) assert.equal(r.status, expectStatus, `reported patch: ${JSON.stringify(r.body)}`);
    return r;
  }

  // Every acknowledged write is there (after a restart, say).
  async verify(server, id) {
    const owner = server.ownerCs(HUB);
    const twin = await rest(owner, 'GET', `/twins/${id}?${API}`);
    assert.equal(twin.status, 200, twin.text);
    assert.equal(twin.body.properties.desired.seq, this.desired, 'the last acknowledged desired patch');
    assert.equal(twin.body.properties.reported.seq, this.reported, 'the last acknowledged reported patch');
    for (const d of this.devices) {
      const r = await rest(owner, 'GET', `/twins/${d}?${API}`);
      assert.equal(r.status, 200, `acknowledged device ${d}: ${r.text}`);
    }
    for (const regId of this.registrations) {
      const r = await rest(server.dpsCs, 'GET', `/registrations/${regId}?${DPS_API}`);
      assert.equal(r.status, 200, `acknowledged registration ${regId}: ${r.text}`);
      assert.equal(r.body.status, 'assigned', regId);
    }
  }
}

// While writes are refused: each kind of write gets a 503 naming the
// cause, nothing acknowledged, and reads answer the last acknowledged state.
async function checkRefusedAndReadable(server, acks, dev, id, cause) {
  const owner = server.ownerCs(HUB);
  const d = await acks.desiredPatch(owner, id, 503);
  assert.match(d.body.message, new RegExp(`^${cause}: `), d.text);
  assert.equal(d.headers['iothub-errorcode'], 'ServiceUnavailable');
  const r = await acks.reportedPatch(dev, 503);
  assert.match(r.body.message, new RegExp(`^${cause}: `), JSON.stringify(r.body));
  const newId = `refused-${Date.now()}`;
  const c = await rest(owner, 'PUT', `/devices/${newId}?${API}`, { deviceId: newId });
  assert.equal(c.status, 503, c.text);
  const g = await dpsDevice(`refused-${Date.now()}`);
  try {
    const reg = await g.register();
    assert.equal(reg.status, 503, JSON.stringify(reg.body));
    assert.match(reg.body.message, new RegExp(`^${cause}: `));
  } finally {
    g.end();
  }

  const twin = await rest(owner, 'GET', `/twins/${id}?${API}`);
  assert.equal(twin.status, 200, twin.text);
  assert.equal(twin.body.properties.desired.seq, acks.desired);
  const got = await dev.get();
  assert.equal(got.status, 200, JSON.stringify(got.body));
  assert.equal(got.body.reported.seq, acks.reported);
  const list = await rest(owner, 'GET', `/devices?${API}`);
  assert.equal(list.status, 200, list.text);
}

// Writes work again: a desired and a reported patch and a registration.
async function checkWritesWork(server, acks, dev, id, regId) {
  await acks.desiredPatch(server.ownerCs(HUB), id, 200);
  acks.outcome(true);
  await acks.reportedPatch(dev, 204);
  const r = await registerToEnd(regId);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.status, 'assigned', JSON.stringify(r.body));
  acks.registrations.push(regId);
}

// Stops the server (it must exit cleanly), checks its log, checks the
// database with PRAGMA integrity_check, starts it again with env and
// checks every acknowledged write.
async function restartAndVerify(server, acks, id, env, checkLog) {
  await server.stop();
  checkLog(server.exited.stderr);
  const out = execFileSync(DBCHECK, [path.join(server.dataDir, 'fleethub.db')], { encoding: 'utf8' });
  assert.equal(out.trim(), 'ok');
  server.env = env;
  await server.start();
  await acks.verify(server, id);
}

function countLines(log, re) {
  return log.split('\n').filter((l) => re.test(l)).length;
}

// Devices disk-dev (raw MQTT) and sdk-dev (the official SDK), and the
// enrollment group registrations use.
async function setUp(server) {
  const owner = server.ownerCs(HUB);
  const id = 'disk-dev';
  const r = await rest(owner, 'PUT', `/devices/${id}?${API}`, { deviceId: id });
  assert.equal(r.status, 200, r.text);
  const s = await rest(owner, 'PUT', `/devices/sdk-dev?${API}`, { deviceId: 'sdk-dev' });
  assert.equal(s.status, 200, s.text);
  const g = await rest(server.dpsCs, 'PUT', `/enrollmentGroups/disk-group?${DPS_API}`, {
    enrollmentGroupId: 'disk-group',
    attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: GROUP_KEY, secondaryKey: GROUP_KEY } },
  });
  assert.equal(g.status, 200, g.text);
  return { id, key: r.body.authentication.symmetricKey.primaryKey,
    sdkCs: deviceCs(HUB, 'sdk-dev', s.body.authentication.symmetricKey.primaryKey) };
}

function mountTmpfs(dir, size) {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir], { stdio: 'pipe' });
  } catch (e) {
    throw new Error(`cannot mount a ${size} tmpfs on ${dir} (this test needs root): ${e.stderr || e.message}`);
  }
}

function unmount(dir) {
  try {
    execFileSync('umount', [dir], { stdio: 'pipe' });
  } catch (e) {
    execFileSync('umount', ['-l', dir], { stdio: 'pipe' });
  }
}

function freeBytes(dir) {
  const s = fs.statfsSync(dir);
  return s.bavail * s.bsize;
}

// The file system under the store is SQLite's (the embedded store's data
// directory); PostgreSQL's own storage faults are its operator's.
const sqliteOnly = PG ? 'the faults are injected under the SQLite store' : false;

test('a full file system: writes refused with "storage full", reads go on, writes resume when space is freed, nothing acknowledged lost', { skip: sqliteOnly }, async () => {
  const server = new Server(serverOpts('diskfull'));
  mountTmpfs(server.dataDir, '4m');
  const sdk = [];
  let dev;
  try {
    await server.start();
    const owner = server.ownerCs(HUB);
    const acks = new Acks();
    const { id, key, sdkCs } = await setUp(server);
    dev = await twinDevice(id, key);
    await acks.desiredPatch(owner, id, 200);
    await acks.reportedPatch(dev, 204);
    await checkWritesWork(server, acks, dev, id, 'full-before');

    // Leave ~320 KiB, then create devices with 6 KB of tags each until the
    // store refuses one; every acknowledged one must survive.
    const filler = path.join(server.dataDir, 'filler');
    fs.writeFileSync(filler, Buffer.alloc(Math.max(0, freeBytes(server.dataDir) - 320 * 1024)));
    const big = { a: 'x'.repeat(3000), b: 'y'.repeat(3000) };
    let refused = null;
    for (let i = 0; i < 500 && !refused; i++) {
      const fid = `fill-${i}`;
      const c = await rest(owner, 'PUT', `/devices/${fid}?${API}`, { deviceId: fid });
      if (c.status !== 200) { refused = c; break; }
      const t = await rest(owner, 'PATCH', `/twins/${fid}?${API}`, { tags: { big } });
      if (t.status !== 200) { refused = t; break; }
      acks.devices.push(fid);
    }
    acks.outcome(!refused);
    assert.ok(refused, 'the store never refused a write on a full file system');
    assert.equal(refused.status, 503, refused.text);
    assert.match(refused.body.message, /^storage full: /, refused.text);
    process.stdout.write(`# ${acks.devices.length} devices with 6 KB tags stored before the file system was full\n`);
    // Take the last bytes too, so that no small write fits either.
    const filler2 = path.join(server.dataDir, 'filler2');
    const fd = fs.openSync(filler2, 'w');
    try {
      for (;;) fs.writeSync(fd, Buffer.alloc(4096));
    } catch (e) {
      assert.equal(e.code, 'ENOSPC');
    } finally {
      fs.closeSync(fd);
    }
    // A refused transaction leaves the WAL file longer than the last
    // commit, and smaller ones still fit there: small writes until one is
    // refused too (a one-page change: then nothing fits).
    let small = 0;
    while ((await acks.desiredPatch(owner, id)).status === 200) {
      assert.ok(++small < 200, 'small writes never refused on a full file system');
    }
    process.stdout.write(`# then ${small} small writes fitted in the WAL file's tail\n`);

    await checkRefusedAndReadable(server, acks, dev, id, 'storage full');
    // The official device SDK reads its twin, and a reported update it
    // sends now is not acknowledged while the disk is full.
    const client = Client.fromConnectionString(sdkCs, Mqtt);
    sdk.push(client);
    await withTimeout(client.open(), 15000, 'SDK open');
    const twin = await withTimeout(client.getTwin(), 15000, 'SDK getTwin while the disk is full');
    assert.equal(typeof twin.properties.reported.$version, 'number');
    let sdkOutcome = null;
    const sdkUpdate = new Promise((resolve) => {
      twin.properties.reported.update({ sdk: 1 }, (err) => { sdkOutcome = err ? `error: ${err.message}` : 'acknowledged'; resolve(); });
    });
    await new Promise((res) => setTimeout(res, 1500));
    assert.notEqual(sdkOutcome, 'acknowledged', 'the SDK update was acknowledged while the disk was full');

    fs.unlinkSync(filler);
    fs.unlinkSync(filler2);
    await checkWritesWork(server, acks, dev, id, 'full-after');
    // The SDK retries a 503 by itself: its update now goes through.
    await withTimeout(sdkUpdate, 60000, 'the SDK reported update after space was freed');
    process.stdout.write(`# SDK reported update sent while full: ${sdkOutcome}\n`);
    if (sdkOutcome !== 'acknowledged') await withTimeout(new Promise((resolve, reject) => {
      twin.properties.reported.update({ sdk: 2 }, (err) => (err ? reject(err) : resolve()));
    }), 15000, 'an SDK reported update after space was freed');

    dev.end();
    dev = null;
    await client.close();
    sdk.length = 0;
    await restartAndVerify(server, acks, id, undefined, (log) => {
      assert.equal(countLines(log, /store: storage full: writes are refused/), acks.episodes, `one log line per episode:\n${log}`);
      assert.equal(countLines(log, /store: writes work again/), acks.episodes, log);
    });
    // The SDK subscribed while the disk was full: granted on its
    // connection, and stored when it disconnected after space was freed.
    await checkSessionStored(sdkCs);
  } finally {
    dev?.end();
    for (const c of sdk) await c.close().catch(() => {});
    await server.kill();
    unmount(server.dataDir);
  }
});

// The server with tests/faults/faultfs.c preloaded: faults on its data
// directory, switched by writing words to a control file.
function faultEnv(server) {
  assert.ok(FAULTFS && fs.existsSync(FAULTFS), `FLEETHUB_FAULTFS (${FAULTFS}) must name the built faultfs.so`);
  const ctl = path.join(server.dir, 'faults');
  fs.writeFileSync(ctl, '');
  const env = { LD_PRELOAD: FAULTFS, FLEETHUB_FAULT_DIR: server.dataDir, FLEETHUB_FAULT_CTL: ctl };
  // The sanitizer runtime wants to come first; it still works behind us.
  if (process.env.FLEETHUB_SANITIZED) env.ASAN_OPTIONS = `${process.env.ASAN_OPTIONS ?? ''}:verify_asan_link_order=0`;
  const injected = () => Number(fs.existsSync(`${ctl}.count`) ? fs.readFileSync(`${ctl}.count`, 'utf8') : 0);
  return { env, set: (words) => fs.writeFileSync(ctl, words), injected };
}

test('injected write and fsync errors: writes refused with a 503 that says why, reads go on, writes resume when the faults stop, nothing acknowledged lost', { skip: sqliteOnly }, async () => {
  const server = new Server(serverOpts('diskfault'));
  const faults = faultEnv(server);
  server.env = faults.env;
  const hook = await new Webhook().listen();
  let dev;
  try {
    await server.start();
    const acks = new Acks();
    const { id, key } = await setUp(server);
    dev = await twinDevice(id, key);
    await checkWritesWork(server, acks, dev, id, 'fault-before');

    const cases = [['fsync=eio', 'storage I/O error'], ['write=eio', 'storage I/O error'],
      ['write=enospc', 'storage full'], ['fsync=eio write=eio', 'storage I/O error']];
    for (const [words, cause] of cases) {
      const before = faults.injected();
      faults.set(words);
      await checkRefusedAndReadable(server, acks, dev, id, cause);
      assert.ok(faults.injected() > before, `${words}: no fault was injected`);
      faults.set('');
      await checkWritesWork(server, acks, dev, id, `fault-after-${words.replace(/[= ]/g, '-')}`);
      process.stdout.write(`# ${words}: refused, read, resumed (${faults.injected() - before} calls failed)\n`);
    }

    // A registration whose webhook answers while fsync fails: the device
    // keeps seeing "assigning" (never "assigned", never an error) and is
    // assigned once the faults stop.
    const link = await rest(server.dpsCs, 'PUT', `/enrollmentGroups/hook-group?${DPS_API}`, {
      enrollmentGroupId: 'hook-group', allocationPolicy: 'custom',
      attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: HOOK_KEY, secondaryKey: HOOK_KEY } },
      customAllocationDefinition: { webhookUrl: hook.url('/allocate'), apiVersion: '2021-10-01' },
    });
    assert.equal(link.status, 200, link.text);
    hook.handler = () => ({ status: 200, body: { iotHubHostName: HUB }, delayMs: 1000 });
    const d = await dpsDevice('hooked', HOOK_KEY);
    try {
      const reg = await d.register();
      assert.equal(reg.status, 202, JSON.stringify(reg.body));
      faults.set('fsync=eio');
      await withTimeout((async () => {
        while (hook.calls.length === 0) await new Promise((res) => setTimeout(res, 50));
      })(), 10000, 'the webhook call');
      for (let i = 0; i < 8; i++) {
        await new Promise((res) => setTimeout(res, 400));
        const p = await d.poll(reg.body.operationId);
        assert.equal(p.status, 202, `poll while the outcome cannot be stored: ${JSON.stringify(p.body)}`);
        assert.equal(p.body.status, 'assigning');
      }
      faults.set('');
      let p;
      for (let i = 0; i < 100; i++) {
        p = await d.poll(reg.body.operationId);
        if (p.status !== 202) break;
        await new Promise((res) => setTimeout(res, 200));
      }
      assert.equal(p.status, 200, JSON.stringify(p.body));
      assert.equal(p.body.status, 'assigned', JSON.stringify(p.body));
      acks.registrations.push('hooked');
    } finally {
      d.end();
    }

    dev.end();
    dev = null;
    assert.equal(acks.episodes, cases.length);
    // One line per episode: each case's and the webhook's (which only the
    // DPS saw).
    const full = cases.filter(([, cause]) => cause === 'storage full').length;
    const io = cases.length - full + 1;
    await restartAndVerify(server, acks, id, undefined, (log) => {
      assert.equal(countLines(log, /store: storage I\/O error: writes are refused/), io, log);
      assert.equal(countLines(log, /store: storage full: writes are refused/), full, log);
      assert.equal(countLines(log, /store: writes work again/), io + full, log);
      assert.equal(countLines(log, /could not be stored \(.*\); retrying until it can/), 1, log);
    });
  } finally {
    dev?.end();
    await server.kill();
    await hook.close();
  }
});

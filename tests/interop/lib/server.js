// Starting and stopping the real fleethub binary for a test, running its
// CLI, and small helpers shared by the test files.
'use strict';
const { spawn, spawnSync } = require('child_process');
const fs = require('fs');
const https = require('https');
const path = require('path');
const { SharedAccessSignature } = require('azure-iot-common');

const BIN = process.env.FLEETHUB_BIN;
const TMP = process.env.FLEETHUB_TEST_TMP || '/tmp';

// FLEETHUB_TEST_PG (run.sh, FLEETHUB_TEST_STORE=postgresql): the libpq
// connection string of the suite's PostgreSQL cluster; every data directory
// gets a database of its own there, named after it, created on first use.
const PG = process.env.FLEETHUB_TEST_PG || null;
const PG_BIN = '/usr/lib/postgresql/15/bin';

// The connection string of the suite's database named after key (created
// when absent).
function pgDatabase(key) {
  const name = 'fh_' + require('crypto').createHash('sha1').update(key).digest('hex').slice(0, 20);
  const base = Object.fromEntries(PG.split(' ').map((kv) => kv.split('=')));
  const r = spawnSync(`${PG_BIN}/createdb`, ['-h', base.host, '-p', base.port, '-U', base.user, name],
    { encoding: 'utf8' });
  if (r.status !== 0 && !/already exists/.test(r.stderr)) throw new Error(`createdb ${name}: ${r.stderr}`);
  return `${PG} dbname=${name}`;
}

// A fresh data directory per call.
let counter = 0;
function tempDir(name) {
  const dir = path.join(TMP, `${name}-${process.pid}-${counter++}`);
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

// The AMQP listener that goes with an MQTT one: same address, the port as
// far from 5671 as the MQTT one is from 8883 ('' for none), so that servers
// on other addresses or ports never compete for 5671.
function amqpBeside(mqtt) {
  const m = /^(.*):(\d+)$/.exec(mqtt);
  return m ? `${m[1]}:${5671 + Number(m[2]) - 8883}` : '';
}

// opts: { name, hubs: [{ name, mqtt, https, amqp, ownerKey }], mqtt, https, amqp, devCa,
//         env: { NAME: value } added to the server's environment,
//         serverExtra: ['key = value', ...] for [server],
//         dps: { name, lines: ['key = value', ...] } for a [dps] section }
class Server {
  constructor(opts = {}) {
    this.dir = tempDir(opts.name || 'fleethub');
    this.dataDir = path.join(this.dir, 'data');
    this.configPath = path.join(this.dir, 'fleethub.ini');
    const lines = ['[server]', `data_dir = ${this.dataDir}`,
      `mqtt_listen = ${opts.mqtt ?? '127.0.0.1:8883'}`,
      `https_listen = ${opts.https ?? '127.0.0.1:443'}`,
      `amqp_listen = ${opts.amqp ?? amqpBeside(opts.mqtt ?? '127.0.0.1:8883')}`];
    if (PG && !(opts.serverExtra || []).some((l) => /^\s*store\s*=/.test(l))) {
      lines.push('store = postgresql', `postgresql = ${pgDatabase(this.dataDir)}`);
    }
    for (const line of opts.serverExtra || []) lines.push(line);
    // Every log line is checked for secrets, so log them all.
    if (!(opts.serverExtra || []).some((l) => /^\s*log_level\s*=/.test(l))) lines.push('log_level = debug');
    if (!opts.devCa) {
      lines.push(`tls_cert = ${process.env.FLEETHUB_TEST_CERT}`);
      lines.push(`tls_key = ${process.env.FLEETHUB_TEST_KEY}`);
    }
    for (const h of opts.hubs || []) {
      lines.push('', `[hub ${h.name}]`);
      if (h.ownerKey) lines.push(`owner_key = ${h.ownerKey}`);
      if (h.mqtt) lines.push(`mqtt_listen = ${h.mqtt}`);
      if (h.https) lines.push(`https_listen = ${h.https}`);
      if (h.amqp) lines.push(`amqp_listen = ${h.amqp}`);
    }
    if (opts.dps) {
      lines.push('', `[dps ${opts.dps.name}]`);
      for (const line of opts.dps.lines || []) lines.push(line);
    }
    fs.writeFileSync(this.configPath, lines.join('\n') + '\n');
    this.devCa = !!opts.devCa;
    // stderrUnread: nobody reads the server's log until drainLog() (a full
    // pipe: what a stuck terminal or journal does to a server)
    this.stderrUnread = !!opts.stderrUnread;
    // the port of the shared HTTPS listener (REST calls go to the hub's name)
    this.httpsPort = Number(/:(\d+)$/.exec(opts.https || '')?.[1] || 443);
    this.env = opts.env;
    this.proc = null;
    this.owner = {};
  }

  get caPath() {
    return this.devCa ? path.join(this.dataDir, 'tls', 'ca.pem') : process.env.FLEETHUB_TEST_CA;
  }

  // Starts the server and resolves once it printed `ready`. this.log
  // collects its stderr (the log) as it runs.
  start() {
    return new Promise((resolve, reject) => {
      const proc = spawn(BIN, ['serve', '--config', this.configPath],
        { stdio: ['ignore', 'pipe', 'pipe'], env: this.env ? { ...process.env, ...this.env } : process.env });
      this.proc = proc;
      let out = '';
      let err = '';
      const timer = setTimeout(() => {
        proc.kill('SIGKILL');
        reject(new Error(`fleethub did not become ready in 15 s\nstdout:\n${out}\nstderr:\n${err}`));
      }, 15000);
      this.log = '';
      this.drainLog = () => proc.stderr.on('data', (d) => {
        err += d;
        this.log += d;
        if (process.env.FLEETHUB_TEST_VERBOSE) process.stderr.write(d);
      });
      if (!this.stderrUnread) this.drainLog();
      proc.stdout.on('data', (d) => {
        out += d;
        if (/^ready$/m.test(out)) {
          clearTimeout(timer);
          let hub = null;
          let inDps = false;
          for (const line of out.split('\n')) {
            const m = /^hub (\S+)$/.exec(line);
            if (m) { hub = m[1]; inDps = false; }
            if (/^dps (\S+)$/.test(line)) { hub = null; inDps = true; }
            const scope = /id scope: (\S+)/.exec(line);
            if (scope && inDps) this.idScope = scope[1];
            const cs = /owner connection string: (\S+)/.exec(line);
            if (cs && hub) this.owner[hub] = cs[1];
            if (cs && inDps) this.dpsCs = cs[1];
          }
          resolve(this);
        }
      });
      // 'close': the process exited and its stdout/stderr are fully read.
      proc.on('close', (code, signal) => {
        clearTimeout(timer);
        this.exited = { code, signal, stderr: err };
        if (!/^ready$/m.test(out)) reject(new Error(`fleethub exited (${code ?? signal}) before ready:\n${err}`));
      });
    });
  }

  ownerCs(hub) {
    return this.owner[hub || Object.keys(this.owner)[0]];
  }

  _stop(signal) {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      this.proc.once('close', () => resolve());
      this.proc.kill(signal);
    });
  }

  // One REST call to the running server with connection string cs (the
  // server's own CA trusted); resolves the parsed body or null.
  _call(cs, method, pathAndQuery, body) {
    const c = parseCs(cs);
    const sas = SharedAccessSignature.create(encodeURIComponent(c.HostName), c.SharedAccessKeyName,
      c.SharedAccessKey, Math.floor(Date.now() / 1000) + 600).toString();
    const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise((resolve) => {
      const req = https.request({
        host: c.HostName, port: this.httpsPort, method, path: pathAndQuery, ca: fs.readFileSync(this.caPath),
        headers: { Authorization: sas, 'Content-Type': 'application/json', ...(data ? { 'Content-Length': data.length } : {}) },
      }, (res) => {
        let text = '';
        res.on('data', (d) => { text += d; });
        res.on('end', () => { try { resolve(JSON.parse(text)); } catch (e) { resolve(null); } });
      });
      req.on('error', () => resolve(null));
      req.setTimeout(5000, () => { req.destroy(); resolve(null); });
      if (data) req.write(data);
      req.end();
    });
  }

  // Every key this server knows, asked while it runs: the policies'
  // (owner connection strings), each device's on each hub, each
  // enrollment's and group's, and the device keys derived from the groups
  // for the registrations made. The log check looks for all of them.
  async collectSecrets() {
    const keys = new Set(this.secrets ?? []);
    const add = (k) => { if (typeof k === 'string' && k.length >= 16) keys.add(k); };
    const sym = (o) => { add(o?.symmetricKey?.primaryKey); add(o?.symmetricKey?.secondaryKey); };
    for (const cs of Object.values(this.owner)) {
      add(parseCs(cs).SharedAccessKey);
      const devices = await this._call(cs, 'GET', '/devices?top=1000&api-version=2021-04-12');
      for (const d of Array.isArray(devices) ? devices : []) sym(d.authentication);
    }
    if (this.dpsCs) {
      add(parseCs(this.dpsCs).SharedAccessKey);
      const api = 'api-version=2021-10-01';
      const enrollments = await this._call(this.dpsCs, 'POST', `/enrollments/query?${api}`, { query: '*' });
      for (const e of Array.isArray(enrollments) ? enrollments : []) sym(e.attestation);
      const groups = await this._call(this.dpsCs, 'POST', `/enrollmentGroups/query?${api}`, { query: '*' });
      const regs = await this._call(this.dpsCs, 'POST', `/registrations/query?${api}`, { query: '*' });
      const crypto = require('crypto');
      for (const g of Array.isArray(groups) ? groups : []) {
        sym(g.attestation);
        for (const k of [g.attestation?.symmetricKey?.primaryKey, g.attestation?.symmetricKey?.secondaryKey]) {
          if (!k) continue;
          for (const r of Array.isArray(regs) ? regs : []) {
            add(crypto.createHmac('sha256', Buffer.from(k, 'base64')).update(r.registrationId).digest('base64'));
          }
        }
      }
    }
    this.secrets = keys;
  }

  // The log (stderr) must never show a key, a token or a signature: every
  // server a test starts is checked when it stops, for every key it knew.
  checkLogForSecrets() {
    const log = this.exited?.stderr ?? '';
    const keys = [...Object.values(this.owner), this.dpsCs ?? '']
      .map((cs) => /SharedAccessKey=([^;]+)/.exec(cs)?.[1]).filter(Boolean)
      .concat([...(this.secrets ?? [])]);
    const leak = /SharedAccessKey=|SharedAccessSignature\s+sr=|\bsig=/.exec(log) ||
      keys.map((k) => (log.includes(k) ? [k] : null)).find(Boolean);
    if (leak) {
      const at = log.indexOf(leak[0]);
      throw new Error(`fleethub logged a secret: ...${log.slice(Math.max(0, at - 120), at + 60)}...`);
    }
  }

  // A clean stop must end with exit code 0 (a crash at shutdown fails the test).
  async stop() {
    const wasRunning = this.proc && this.proc.exitCode === null && this.proc.signalCode === null;
    if (wasRunning) await this.collectSecrets();
    await this._stop('SIGTERM');
    if (wasRunning && this.proc.exitCode !== 0) {
      throw new Error(`fleethub did not stop cleanly (exit ${this.proc.exitCode ?? this.proc.signalCode}):\n${this.exited?.stderr ?? ''}`);
    }
    if (wasRunning) this.checkLogForSecrets();
  }
  async kill() {
    const wasRunning = this.proc && this.proc.exitCode === null && this.proc.signalCode === null;
    if (wasRunning) await this.collectSecrets();
    await this._stop('SIGKILL');
    if (wasRunning) this.checkLogForSecrets();
  }

  // Runs the CLI against this server's data directory.
  cli(args, extra = {}) {
    const base = ['--data-dir', this.dataDir];
    if (!this.devCa) base.push('--ca', this.caPath);
    const r = spawnSync(BIN, [...base, ...args], { encoding: 'utf8', timeout: 20000, ...extra });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  }
}

function parseCs(cs) {
  const o = {};
  for (const part of cs.split(';')) {
    const i = part.indexOf('=');
    o[part.slice(0, i)] = part.slice(i + 1);
  }
  return o;
}

function deviceCs(host, deviceId, key) {
  return `HostName=${host};DeviceId=${deviceId};SharedAccessKey=${key}`;
}

// A raw service REST call (for what the SDK cannot express, e.g. a stale
// device etag). Resolves { status, headers, body }. at: the address to
// dial instead of the host name's (one node of several), with the host name
// still the TLS SNI name and Host; port: another HTTPS port than 443.
function rest(ownerCs, method, pathAndQuery, body, headers = {}, at = null, port = 443) {
  const cs = parseCs(ownerCs);
  const sas = SharedAccessSignature.create(encodeURIComponent(cs.HostName), cs.SharedAccessKeyName,
    cs.SharedAccessKey, Math.floor(Date.now() / 1000) + 3600).toString();
  const data = body === undefined ? undefined : Buffer.isBuffer(body) ? body : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = https.request({
      host: at ?? cs.HostName, port, method, path: pathAndQuery,
      ...(at ? { servername: cs.HostName, agent: false } : {}),
      headers: { ...(at ? { Host: cs.HostName } : {}), Authorization: sas, 'Content-Type': 'application/json', ...(data ? { 'Content-Length': data.length } : {}), ...headers },
    }, (res) => {
      let text = '';
      res.on('data', (d) => { text += d; });
      res.on('end', () => {
        let json = null;
        try { json = JSON.parse(text); } catch (e) { /* not JSON */ }
        resolve({ status: res.statusCode, headers: res.headers, body: json, text });
      });
    });
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}

function withTimeout(promise, ms, what) {
  let t;
  return Promise.race([promise, new Promise((_, reject) => {
    t = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  })]).finally(() => clearTimeout(t));
}

async function waitFor(fn, ms, what) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// A raw MQTT client (the mqtt package the Node SDK is built on) connected
// as device id of hub host on localhost:8883 with a SAS token from key.
// opts go to mqtt.connect (clean, protocolVersion, ...). Resolves
// { c, connack }; rejects when the server refuses.
function mqttDevice(server, id, key, opts = {}, host = 'localhost') {
  const mqtt = require('mqtt');
  const password = SharedAccessSignature.create(encodeURIComponent(`${host}/devices/${id}`), null, key,
    Math.floor(Date.now() / 1000) + 3600).toString();
  const c = mqtt.connect(`mqtts://${host}:8883`, {
    clientId: id, username: `${host}/${id}/?api-version=2021-04-12`, password,
    protocolVersion: 4, clean: true, reconnectPeriod: 0, ca: fs.readFileSync(server.caPath), ...opts,
  });
  return new Promise((resolve, reject) => {
    c.once('connect', (connack) => resolve({ c, connack }));
    c.once('error', (e) => { c.end(true); reject(e); });
  });
}

// Promise wrapper for twin.properties.reported.update.
function report(twin, patch) {
  return new Promise((resolve, reject) => {
    twin.properties.reported.update(patch, (err) => (err ? reject(err) : resolve()));
  });
}

module.exports = { Server, PG, pgDatabase, tempDir, parseCs, deviceCs, rest, withTimeout, waitFor, report, mqttDevice, BIN };

// The README walkthrough, literally: the server with its own development
// CA, the CLI creating a device and printing its connection string, a Node
// SDK device (in its own process, trusting the CA through
// NODE_EXTRA_CA_CERTS) reacting to `fleethub twin update`, and `fleethub
// twin show` seeing its report. Plus the CLI's exit codes.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('child_process');
const path = require('path');
const { Server, waitFor, withTimeout, BIN } = require('./lib/server');

let server;

before(async () => {
  server = await new Server({ name: 'cli', devCa: true }).start();
});

after(async () => {
  await server?.stop();
});

const DEVICE_JS = `
const { Client } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const client = Client.fromConnectionString(process.env.DEVICE_CS, Mqtt);
client.open().then(() => client.getTwin()).then((twin) => {
  console.log('desired at start:', JSON.stringify(twin.properties.desired));
  twin.on('properties.desired', (delta) => {
    console.log('desired change:', JSON.stringify(delta));
    const { $version, ...settings } = delta; // '$' keys are not allowed in a patch
    twin.properties.reported.update({ applied: settings }, (err) => {
      if (err) console.error('report failed', err); else console.log('reported');
    });
  });
}).catch((e) => { console.error('device failed', e); process.exit(1); });
`;

test('README walkthrough: CLI, Node SDK device, desired update, report', async () => {
  const created = server.cli(['device', 'create', 'thermostat-1']);
  assert.equal(created.code, 0, created.stderr);
  assert.equal(JSON.parse(created.stdout).deviceId, 'thermostat-1');
  const cs = server.cli(['device', 'connection-string', 'thermostat-1']);
  assert.equal(cs.code, 0, cs.stderr);
  assert.match(cs.stdout.trim(), /^HostName=localhost;DeviceId=thermostat-1;SharedAccessKey=[A-Za-z0-9+/=]{44}$/);

  const env = { ...process.env, DEVICE_CS: cs.stdout.trim(), NODE_EXTRA_CA_CERTS: server.caPath, NODE_PATH: path.join(__dirname, 'node_modules') };
  delete env.NODE_OPTIONS; // the device resolves localhost itself
  const device = spawn(process.execPath, ['-e', DEVICE_JS], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  device.stdout.on('data', (d) => { out += d; });
  device.stderr.on('data', (d) => { err += d; });
  try {
    await waitFor(() => out.includes('desired at start'), 15000, `the device to start (${err})`);
    const upd = server.cli(['twin', 'update', 'thermostat-1', '--desired', '{"targetTemperature": 21.5}']);
    assert.equal(upd.code, 0, upd.stderr);
    await waitFor(() => /desired change: \{"targetTemperature":21.5,"\$version":2\}/.test(out) && out.includes('reported'), 15000, `the device to react (${out}${err})`);
    const shown = await waitFor(() => {
      const s = server.cli(['twin', 'show', 'thermostat-1']);
      const t = JSON.parse(s.stdout);
      return t.properties.reported.applied && t.properties.reported.applied.targetTemperature === 21.5 ? t : null;
    }, 10000, 'the report to show');
    assert.equal(shown.properties.desired.targetTemperature, 21.5);
  } finally {
    device.kill();
  }
});

test('CLI listing, tags, status, deletion and exit codes', async () => {
  assert.equal(server.cli(['device', 'create', 'cli-2', '--disabled']).code, 0);
  const list = server.cli(['device', 'list']);
  assert.equal(list.code, 0);
  assert.match(list.stdout, /^cli-2\s+disabled/m);
  assert.equal(server.cli(['device', 'update', 'cli-2', '--status', 'enabled']).code, 0);
  assert.equal(JSON.parse(server.cli(['device', 'show', 'cli-2']).stdout).status, 'enabled');
  const tagged = server.cli(['twin', 'update', 'cli-2', '--tags', '{"floor": 3}']);
  assert.equal(tagged.code, 0, tagged.stderr);
  assert.equal(JSON.parse(tagged.stdout).tags.floor, 3);

  const stale = server.cli(['twin', 'update', 'cli-2', '--tags', '{"floor": 4}', '--etag', 'AAAAAAAAAAE=']);
  assert.equal(stale.code, 1);
  assert.match(stale.stderr, /412/);

  const hubCs = server.cli(['hub', 'connection-string']);
  assert.equal(hubCs.code, 0);
  assert.equal(hubCs.stdout.trim(), server.ownerCs());

  const missing = server.cli(['device', 'show', 'nobody']);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /404 DeviceNotFound/);
  const badJson = server.cli(['twin', 'update', 'cli-2', '--desired', '{not json']);
  assert.equal(badJson.code, 2);
  assert.equal(server.cli(['device', 'frobnicate']).code, 2);
  assert.equal(server.cli(['device', 'delete', 'cli-2']).code, 0);
  assert.equal(server.cli(['device', 'show', 'cli-2']).code, 1);

  await server.stop();
  const down = server.cli(['device', 'list']);
  assert.equal(down.code, 3, 'server unreachable');
  await server.start();
});

test('create refuses an existing record and says how to change it; update changes only what it is given', async () => {
  const hook = 'http://127.0.0.1:7999/allocate?code=secret';
  let r = server.cli(['enrollment-group', 'create', 'line-1', '--webhook', hook]);
  assert.equal(r.code, 0, r.stderr);
  r = server.cli(['enrollment-group', 'create', 'line-1', '--policy', 'hashed']);
  assert.equal(r.code, 1, 'a second create is refused');
  assert.match(r.stderr, /^error: 409 Conflict \(409201\): enrollment group 'line-1' already exists/m);
  assert.match(r.stderr, /change it with `fleethub enrollment-group update line-1 \.\.\.`/);
  let g = JSON.parse(server.cli(['enrollment-group', 'show', 'line-1']).stdout);
  assert.equal(g.allocationPolicy, 'custom', 'the refused create changed nothing');
  assert.equal(g.customAllocationDefinition.webhookUrl, hook);
  const etag = g.etag;

  r = server.cli(['enrollment-group', 'update', 'line-1', '--status', 'disabled']);
  assert.equal(r.code, 0, r.stderr);
  g = JSON.parse(server.cli(['enrollment-group', 'show', 'line-1']).stdout);
  assert.equal(g.provisioningStatus, 'disabled');
  assert.equal(g.customAllocationDefinition.webhookUrl, hook, 'update keeps what it was not given');
  assert.notEqual(g.etag, etag);
  assert.equal(server.cli(['enrollment-group', 'update', 'line-1']).code, 2, 'an update with nothing to change');

  assert.equal(server.cli(['enrollment', 'create', 'reg-1', '--device-id', 'dev-a', '--policy', 'hashed']).code, 0);
  r = server.cli(['enrollment', 'create', 'reg-1']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /fleethub enrollment update reg-1/);
  r = server.cli(['enrollment', 'update', 'reg-1', '--webhook', hook]);
  assert.equal(r.code, 0, r.stderr);
  const e = JSON.parse(r.stdout);
  assert.equal(e.allocationPolicy, 'custom');
  assert.equal(e.deviceId, 'dev-a');

  assert.equal(server.cli(['device', 'create', 'dup-1']).code, 0);
  r = server.cli(['device', 'create', 'dup-1']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^error: 409 DeviceAlreadyExists \(409001\): /m);
  assert.match(r.stderr, /fleethub device update dup-1/);
});

test('exit codes and messages: configuration, TLS, ids, serve options, one error format', async () => {
  const os = require('os');
  const fs = require('fs');
  let r = server.cli(['--data-dir', '/nonexistent/fleethub-data', 'device', 'list']);
  assert.equal(r.code, 4, r.stderr);
  assert.match(r.stderr, /cannot read \/nonexistent\/fleethub-data\/cli\.conf/);
  r = server.cli(['--hub', 'nosuch.example', 'device', 'list']);
  assert.equal(r.code, 4, r.stderr);
  // a cli.conf without the DPS (a config with only [hub] sections)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fh-cli-'));
  const conf = fs.readFileSync(path.join(server.dataDir, 'cli.conf'), 'utf8');
  fs.writeFileSync(path.join(dir, 'cli.conf'), conf.split('\n').filter((l) => !/^dps/.test(l)).join('\n'));
  r = server.cli(['--data-dir', dir, 'enrollment', 'list']);
  assert.equal(r.code, 4, r.stderr);
  assert.match(r.stderr, /names no dps/);

  // a CA that did not sign the server's certificate: reached, not trusted
  r = server.cli(['--ca', process.env.FLEETHUB_TEST_CA, 'device', 'list']);
  assert.equal(r.code, 3, r.stderr);
  assert.match(r.stderr, /^error: reached hub localhost at 127\.0\.0\.1:443, but its TLS certificate is not trusted/m);
  assert.match(r.stderr, /--ca FILE, or --data-dir DIR/);

  // ids are checked before anything is sent: no path can collapse
  for (const [args, what] of [[['device', 'create', '..'], 'device ID'], [['device', 'show', 'a/b'], 'device ID'],
    [['enrollment', 'create', 'Upper'], 'registration ID'], [['enrollment-group', 'show', '.'], 'group ID']]) {
    r = server.cli(args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(`is not a valid ${what}`));
  }

  // the hub and the DPS refuse in one format
  r = server.cli(['device', 'show', 'nobody']);
  assert.match(r.stderr, /^error: 404 DeviceNotFound \(404001\): device 'nobody' not found$/m);
  r = server.cli(['enrollment', 'show', 'nobody']);
  assert.match(r.stderr, /^error: 404 NotFound \(404201\): enrollment 'nobody' not found$/m);

  // serve's options
  const { spawnSync } = require('child_process');
  r = spawnSync(BIN, ['serve', '--bogus'], { encoding: 'utf8' });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /^fleethub serve: unknown option --bogus$/m);
  r = spawnSync(BIN, ['serve', '--data-dir'], { encoding: 'utf8' });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /a value is missing after --data-dir/);
  r = spawnSync(BIN, ['help'], { encoding: 'utf8' });
  assert.match(r.stdout, /fleethub --version/);
  assert.match(r.stdout, /serve \[--config FILE\] \[--data-dir DIR\]/);
  assert.match(r.stdout, /4 no server configured/);
  r = spawnSync(BIN, ['--version'], { encoding: 'utf8' });
  assert.equal(r.status, 0);
  assert.match(r.stdout, /^fleethub \S+/);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('serve --data-dir puts the state there', async () => {
  const fs = require('fs');
  const other = new Server({ name: 'cli-datadir', mqtt: '127.0.0.21:8883', https: '127.0.0.21:443', devCa: true });
  const dir = path.join(other.dir, 'elsewhere');
  const proc = spawn(BIN, ['serve', '--config', other.configPath, '--data-dir', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.on('data', (d) => { out += d; });
  try {
    await waitFor(() => /^ready$/m.test(out), 15000, 'the server to start');
    assert.match(out, new RegExp(`state in ${dir}`));
    assert.ok(fs.existsSync(path.join(dir, 'cli.conf')), 'cli.conf in the --data-dir');
    assert.ok(!fs.existsSync(other.dataDir), 'the configured data_dir was not used');
  } finally {
    proc.kill('SIGTERM');
    await new Promise((resolve) => proc.once('close', resolve));
  }
});

test('registration show: a registration in progress is shown as assigning with its webhook calls', async () => {
  const mqtt = require('mqtt');
  const crypto = require('crypto');
  const { SharedAccessSignature } = require('azure-iot-common');
  // A webhook nobody listens on: every call is refused and retried, 1 s
  // after the first, so the registration stays in progress.
  const created = server.cli(['enrollment-group', 'create', 'slow-1', '--webhook', 'http://127.0.0.1:9/allocate']);
  assert.equal(created.code, 0, created.stderr);
  const groupKey = JSON.parse(created.stdout).attestation.symmetricKey.primaryKey;
  const regId = 'slow-dev-1';
  const key = crypto.createHmac('sha256', Buffer.from(groupKey, 'base64')).update(regId).digest('base64');
  const password = SharedAccessSignature.create(encodeURIComponent(`${server.idScope}/registrations/${regId}`), 'registration', key,
    Math.floor(Date.now() / 1000) + 3600).toString();
  const c = mqtt.connect('mqtts://localhost:8883', {
    clientId: regId, username: `${server.idScope}/registrations/${regId}/api-version=2019-03-31`, password,
    protocolVersion: 4, clean: true, reconnectPeriod: 0, ca: require('fs').readFileSync(server.caPath),
  });
  try {
    await new Promise((resolve, reject) => { c.once('connect', resolve); c.once('error', reject); });
    const accepted = new Promise((resolve) => c.on('message', (topic) => { if (topic.startsWith('$dps/registrations/res/202/')) resolve(); }));
    await new Promise((resolve) => c.subscribe('$dps/registrations/res/#', resolve));
    c.publish('$dps/registrations/PUT/iotdps-register/?$rid=1', JSON.stringify({ registrationId: regId }));
    await withTimeout(accepted, 10000, 'the registration to be accepted');
    const shown = await waitFor(() => {
      const s = server.cli(['registration', 'show', regId]);
      return s.code === 0 && /POST http:\/\/127\.0\.0\.1:9\/allocate/.test(s.stdout) ? s : null;
    }, 10000, 'a webhook call to be logged');
    assert.equal(JSON.parse(shown.stdout.slice(0, shown.stdout.indexOf('\n}\n') + 2)).status, 'assigning');
    assert.match(shown.stdout, /in progress: the device is polling operation \S+; webhook calls so far:/);
    // A refused call is said once, not "connection refused -- connection refused".
    const line = shown.stdout.split('\n').find((l) => l.includes('POST http://127.0.0.1:9/allocate'));
    assert.match(line, /-> 0 in \d+ ms: retry in 1000 ms: /);
    assert.ok(!line.includes(' -- '), line);
  } finally {
    c.end(true);
    server.cli(['enrollment-group', 'delete', 'slow-1']);
  }
});

test('make run needs no npm: its install step stops at the Debian packages', () => {
  const fs = require('fs');
  const os = require('os');
  const { spawnSync } = require('child_process');
  const root = path.join(__dirname, '..', '..');
  const bin = fs.mkdtempSync(path.join(os.tmpdir(), 'fh-nonpm-'));
  const marker = path.join(bin, 'called');
  for (const tool of ['npm', 'npx']) {
    fs.writeFileSync(path.join(bin, tool), `#!/bin/sh\necho "$0 $*" >> ${marker}\nexit 1\n`, { mode: 0o755 });
  }
  const env = { ...process.env, PATH: `${bin}:${process.env.PATH}` };
  const r = spawnSync(path.join(root, 'scripts', 'deps.sh'), ['run'], { env, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.ok(!fs.existsSync(marker), `npm was called: ${fs.existsSync(marker) ? fs.readFileSync(marker, 'utf8') : ''}`);
  const dry = spawnSync('make', ['-n', 'run'], { cwd: root, env, encoding: 'utf8' });
  assert.equal(dry.status, 0, dry.stderr);
  assert.match(dry.stdout, /scripts\/deps\.sh run/);
  assert.doesNotMatch(dry.stdout, /npm|node_modules/);
  fs.rmSync(bin, { recursive: true, force: true });
});

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
const { Server, waitFor } = require('./lib/server');

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

// Secrets at rest: everything fleethub creates in its data directory (the
// store with its keys, cli.conf with connection strings, the development CA
// and server keys) is readable by its owner only, also when started with a
// permissive umask.
'use strict';
const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('fs');
const path = require('path');
const { Server, waitFor, PG } = require('./lib/server');

function walk(dir, out = []) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    out.push(p);
    if (e.isDirectory()) walk(p, out);
  }
  return out;
}

test('the data directory is 0700 and every file in it 0600', async () => {
  const old = process.umask(0o022);
  let server;
  try {
    server = await new Server({ name: 'secrets', devCa: true }).start();
  } finally {
    process.umask(old);
  }
  try {
    // A write so that the store's journal files exist too.
    const r = server.cli(['device', 'create', 'secret-1']);
    assert.equal(r.code, 0, r.stderr);
    const entries = [server.dataDir, ...walk(server.dataDir)];
    const names = entries.map((p) => path.relative(server.dataDir, p) || '.');
    for (const want of ['.', 'cli.conf', ...(PG ? [] : ['fleethub.db']), 'tls', 'tls/ca.key', 'tls/server.key']) {
      assert.ok(names.includes(want), `${want} exists: ${names}`);
    }
    for (const p of entries) {
      const st = fs.statSync(p);
      const mode = st.mode & 0o777;
      const want = st.isDirectory() ? 0o700 : 0o600;
      assert.equal(mode.toString(8), want.toString(8), `${path.relative(server.dataDir, p) || '.'}`);
    }
  } finally {
    await server.stop();
  }
});

test('the log check knows every key the server had: devices, enrollments, groups and derived keys', async () => {
  const crypto = require('crypto');
  const server = await new Server({ name: 'secrets-log', devCa: true }).start();
  let deviceKey;
  let groupKey;
  let key;
  try {
    deviceKey = JSON.parse(server.cli(['device', 'create', 'logged-1']).stdout).authentication.symmetricKey.primaryKey;
    const g = server.cli(['enrollment-group', 'create', 'logged-group', '--policy', 'hashed']);
    assert.equal(g.code, 0, g.stderr);
    groupKey = JSON.parse(g.stdout).attestation.symmetricKey.primaryKey;
    // A registration of the group (a raw MQTT register: the server's own
    // CA), so that its derived key is known.
    const regId = 'logged-dev';
    key = crypto.createHmac('sha256', Buffer.from(groupKey, 'base64')).update(regId).digest('base64');
    const mqtt = require('mqtt');
    const { SharedAccessSignature } = require('azure-iot-common');
    const password = SharedAccessSignature.create(encodeURIComponent(`${server.idScope}/registrations/${regId}`), 'registration', key,
      Math.floor(Date.now() / 1000) + 3600).toString();
    const c = mqtt.connect('mqtts://localhost:8883', {
      clientId: regId, username: `${server.idScope}/registrations/${regId}/api-version=2019-03-31`, password,
      protocolVersion: 4, clean: true, reconnectPeriod: 0, ca: fs.readFileSync(server.caPath),
    });
    await new Promise((resolve, reject) => { c.once('connect', resolve); c.once('error', reject); });
    c.publish('$dps/registrations/PUT/iotdps-register/?$rid=1', JSON.stringify({ registrationId: regId }));
    await waitFor(() => {
      const r = server.cli(['registration', 'show', regId]);
      return r.code === 0 && /"status": "assigned"/.test(r.stdout);
    }, 10000, 'the registration to be assigned');
    c.end(true);
    await server.stop();
    assert.ok(server.secrets.has(deviceKey), 'a device key');
    assert.ok(server.secrets.has(groupKey), 'a group key');
    assert.ok(server.secrets.has(key), 'a key derived for a registration');
  } finally {
    await server.stop();
  }
  // The check fails on each of them.
  for (const k of [deviceKey, groupKey, key]) {
    const saved = server.exited.stderr;
    server.exited.stderr += `2026-01-01T00:00:00Z debug  something ${k}\n`;
    assert.throws(() => server.checkLogForSecrets(), /fleethub logged a secret/);
    server.exited.stderr = saved;
  }
});

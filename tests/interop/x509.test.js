// X.509 device authentication on the hub (issue 15, first part): the TLS
// listeners ask every client for a certificate and accept whatever comes;
// a "selfSigned" device connects with the official Node SDK over MQTT and
// MQTT over WebSockets with the certificate whose SHA-1 or SHA-256
// thumbprint the registry holds (any case), and is refused, with the
// reason in the log, for an unknown certificate, an expired or not yet
// valid one, no certificate at all, or a certificate offered for a SAS
// device. SAS devices on the same listeners are unaffected (every other
// test file runs with the certificate request in place).
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { Client } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
const { NoRetry } = require('azure-iot-common');
const { Registry } = require('azure-iothub');
const { Server, tempDir, withTimeout, waitFor, report, rest } = require('./lib/server');
const certs = require('./lib/certs');
const { selfSigned } = certs;

let server;
let registry;
let dir;

function deviceCert(name, cn, start, end) {
  return selfSigned(dir, name, cn, start, end);
}

function x509Client(deviceId, cert, transport = Mqtt) {
  const client = Client.fromConnectionString(`HostName=localhost;DeviceId=${deviceId};x509=true`, transport);
  client.setOptions({ cert: cert.cert, key: cert.key });
  client.setRetryPolicy(new NoRetry());
  return client;
}

let a, b, other, expired, future;

before(async () => {
  dir = tempDir('x509');
  a = deviceCert('a', 'x5-1');
  b = deviceCert('b', 'x5-1');
  other = deviceCert('other', 'x5-1');
  expired = deviceCert('expired', 'x5-2', '20200101000000Z', '20200201000000Z');
  future = deviceCert('future', 'x5-3', '20400101000000Z', '20400201000000Z');
  server = await new Server({ name: 'x509' }).start();
  registry = Registry.fromConnectionString(server.ownerCs());
  // The primary as SHA-1 in lower case, the secondary as SHA-256.
  await registry.create({ deviceId: 'x5-1', authentication: { x509Thumbprint: {
    primaryThumbprint: a.sha1.toLowerCase(), secondaryThumbprint: b.sha256 } } });
  await registry.create({ deviceId: 'x5-2', authentication: { x509Thumbprint: { primaryThumbprint: expired.sha1 } } });
  await registry.create({ deviceId: 'x5-3', authentication: { x509Thumbprint: { primaryThumbprint: future.sha256 } } });
  await registry.create({ deviceId: 'sas-1' });
});

after(async () => {
  await server?.stop();
});

test('a selfSigned device connects with its certificate over MQTT: twin GET, reported, desired', async () => {
  const shown = (await registry.get('x5-1')).responseBody;
  assert.equal(shown.authentication.type, 'selfSigned');
  const client = x509Client('x5-1', a);
  await withTimeout(client.open(), 10000, 'open');
  try {
    const twin = await withTimeout(client.getTwin(), 10000, 'getTwin');
    await report(twin, { firmware: '2.0' });
    const got = new Promise((resolve) => twin.on('properties.desired', (d) => { if (d.mode) resolve(d.mode); }));
    await registry.updateTwin('x5-1', { properties: { desired: { mode: 'eco' } } }, '*');
    assert.equal(await withTimeout(got, 10000, 'desired'), 'eco');
    assert.equal((await registry.getTwin('x5-1')).responseBody.properties.reported.firmware, '2.0');
  } finally {
    await client.close();
  }
});

test('the secondary thumbprint (SHA-256) works over MQTT over WebSockets', async () => {
  const client = x509Client('x5-1', b, MqttWs);
  await withTimeout(client.open(), 10000, 'open');
  try {
    const twin = await withTimeout(client.getTwin(), 10000, 'getTwin');
    assert.equal(twin.properties.reported.firmware, '2.0');
  } finally {
    await client.close();
  }
});

test('refused: an unknown, an expired and a not yet valid certificate, and a certificate for a SAS device', async () => {
  for (const [id, cert, reason] of [['x5-1', other, /thumbprint is not one of the device's/],
    ['x5-2', expired, /certificate has expired/], ['x5-3', future, /not valid yet/],
    ['sas-1', a, /authenticates with a SAS token, not a certificate/]]) {
    const client = x509Client(id, cert);
    const err = await withTimeout(client.open().then(() => null, (e) => e), 10000, 'open');
    assert.ok(err, `${id} must be refused`);
    assert.match(err.constructor.name, /Unauthorized|NotConnected/, `${id}: ${err}`);
    await client.close().catch(() => {});
    await waitFor(() => reason.test(server.log), 5000, `the log says why ${id} was refused`);
  }
  // The server is still up and serving.
  const client = x509Client('x5-1', a);
  await withTimeout(client.open(), 10000, 'open after refusals');
  await client.close();
});

test('fleethub device create --x509-thumbprint makes a selfSigned device that connects', async () => {
  const made = server.cli(['device', 'create', 'x5-cli', '--x509-thumbprint', other.sha256.toLowerCase(),
    '--x509-secondary-thumbprint', a.sha1]);
  assert.equal(made.code, 0, made.stderr);
  const shown = JSON.parse(server.cli(['device', 'show', 'x5-cli']).stdout);
  assert.equal(shown.authentication.type, 'selfSigned');
  assert.equal(shown.authentication.x509Thumbprint.primaryThumbprint, other.sha256.toLowerCase());
  const cs = server.cli(['device', 'connection-string', 'x5-cli']);
  assert.equal(cs.stdout.trim(), 'HostName=localhost;DeviceId=x5-cli;x509=true');
  for (const cert of [other, a]) {
    const client = x509Client('x5-cli', cert);
    await withTimeout(client.open(), 10000, 'open');
    await client.close();
  }
  const both = server.cli(['device', 'create', 'x5-bad', '--x509-thumbprint', a.sha1, '--primary-key', 'x']);
  assert.equal(both.code, 2);
  assert.match(both.stderr, /give one of them/);
  const bad = server.cli(['device', 'create', 'x5-bad', '--x509-thumbprint', 'not-hex']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /40 or 64 hex characters/);
});

// openssl with the arguments; returns stdout.
function issue(name, cn, signer, isCa) {
  return certs.issue(dir, name, cn, signer, isCa);
}

test('certificateAuthority devices: a CA uploaded, proven and verified; leaf and intermediate chains; CN, unverified and deleted CA refused', async () => {
  const cs = server.ownerCs();
  const api = '?api-version=2021-04-12';
  const root = issue('root', 'fleethub test root', null, true);
  const inter = issue('inter', 'fleethub test intermediate', root, true);
  const leaf2 = issue('ca-dev-2', 'ca-dev-2', root, false);
  const leaf1 = issue('ca-dev-1', 'ca-dev-1', inter, false);
  const stranger = issue('stranger', 'stranger root', null, true);
  const viaCli = server.cli(['device', 'create', 'ca-dev-1', '--x509-ca']);
  assert.equal(viaCli.code, 0, viaCli.stderr);
  assert.equal((await registry.get('ca-dev-1')).responseBody.authentication.type, 'certificateAuthority');
  await registry.create({ deviceId: 'ca-dev-2', authentication: { type: 'certificateAuthority' } });
  const connect = async (id, certText, keyText) => {
    const client = x509Client(id, { cert: certText, key: keyText });
    const err = await withTimeout(client.open().then(() => null, (e) => e), 10000, 'open');
    await client.close().catch(() => {});
    return err;
  };

  const put = await rest(cs, 'PUT', `/certificates/root${api}`, { properties: { certificate: root.text } });
  assert.equal(put.status, 200, JSON.stringify(put.body));
  assert.equal(put.body.properties.isVerified, false);
  assert.match(put.body.properties.subject, /fleethub test root/);
  assert.equal(put.body.properties.verificationCode, undefined);
  assert.ok(await connect('ca-dev-2', leaf2.text, leaf2.keyText), 'an unverified CA is not trusted');
  await waitFor(() => /no verified CA certificate/.test(server.log), 5000, 'the reason in the log');

  const code = await rest(cs, 'POST', `/certificates/root/generateVerificationCode${api}`, null,
    { 'If-Match': put.body.etag });
  assert.equal(code.status, 200, JSON.stringify(code.body));
  const vc = code.body.properties.verificationCode;
  assert.match(vc, /^[0-9A-F]{32}$/);
  const proof = issue('proof', vc, root, false);
  const forged = issue('forged', vc, stranger, false);
  const bad = await rest(cs, 'POST', `/certificates/root/verify${api}`, { certificate: forged.text });
  assert.equal(bad.status, 400);
  assert.match(bad.body.Message, /not signed by this CA's key/);
  const stale = await rest(cs, 'POST', `/certificates/root/verify${api}`, { certificate: proof.text }, { 'If-Match': put.body.etag });
  assert.equal(stale.status, 412);
  const ok = await rest(cs, 'POST', `/certificates/root/verify${api}`, { certificate: proof.text });
  assert.equal(ok.status, 200, JSON.stringify(ok.body));
  assert.equal(ok.body.properties.isVerified, true);
  const list = await rest(cs, 'GET', `/certificates${api}`);
  assert.deepEqual(list.body.value.map((c) => [c.name, c.properties.isVerified]), [['root', true]]);

  assert.equal(await connect('ca-dev-2', leaf2.text, leaf2.keyText), null, 'a leaf signed by the verified root');
  assert.equal(await connect('ca-dev-1', leaf1.text + inter.text, leaf1.keyText), null,
    'a leaf signed by an intermediate, the chain sent by the device');
  assert.ok(await connect('ca-dev-1', leaf1.text, leaf1.keyText), 'without its intermediate the chain is broken');
  await waitFor(() => /does not chain to a trusted CA/.test(server.log), 5000, 'the chain reason in the log');
  assert.ok(await connect('ca-dev-2', leaf1.text + inter.text, leaf1.keyText), 'another device\'s certificate');
  await waitFor(() => /subject CN is not the device id/.test(server.log), 5000, 'the CN reason in the log');

  const del = await rest(cs, 'DELETE', `/certificates/root${api}`);
  assert.equal(del.status, 200);
  assert.ok(await connect('ca-dev-2', leaf2.text, leaf2.keyText), 'a deleted CA is no longer trusted');
  assert.equal((await rest(cs, 'GET', `/certificates/root${api}`)).status, 404);
  const notCert = await rest(cs, 'PUT', `/certificates/junk${api}`, { properties: { certificate: 'hello' } });
  assert.equal(notCert.status, 400);
  assert.match(notCert.body.Message, /not a certificate/);
});

test('fleethub cert and fleethub ca: a root, its proof, an intermediate, a device certificate with its chain; a self-signed device', async () => {
  const at = (name) => path.join(dir, name);
  const cert = (...args) => {
    const r = server.cli(['cert', ...args]);
    assert.equal(r.code, 0, `cert ${args.join(' ')}: ${r.stderr}`);
    return r.stdout.trim();
  };
  cert('root', at('cli-root'));
  const up = server.cli(['ca', 'upload', 'cli-root', '--certificate', at('cli-root.pem')]);
  assert.equal(up.code, 0, up.stderr);
  const code = JSON.parse(up.stdout).properties.verificationCode;
  assert.match(code, /^[0-9A-F]{32}$/);
  assert.match(up.stderr, new RegExp(`fleethub cert verification ${code} --issuer CA\\n  fleethub ca verify cli-root --certificate ${code}.pem`));
  cert('verification', at(code), '--issuer', at('cli-root'));
  const ver = server.cli(['ca', 'verify', 'cli-root', '--certificate', at(`${code}.pem`)]);
  assert.equal(ver.code, 0, ver.stderr);
  assert.equal(JSON.parse(ver.stdout).properties.isVerified, true);
  const list = JSON.parse(server.cli(['ca', 'list']).stdout);
  assert.ok(list.some((c) => c.name === 'cli-root' && c.properties.isVerified));
  assert.equal(JSON.parse(server.cli(['ca', 'show', 'cli-root']).stdout).properties.isVerified, true);
  const again = server.cli(['ca', 'verify', 'cli-root', '--certificate', at(`${code}.pem`)]);
  assert.equal(again.code, 1, 'a verification code is used once');
  assert.match(again.stderr, /no verification code is pending/);

  cert('intermediate', at('cli-inter'), '--issuer', at('cli-root'));
  cert('device', at('cli-dev'), '--issuer', at('cli-inter'));
  const chainPem = fs.readFileSync(at('cli-dev.pem'), 'utf8');
  assert.equal((chainPem.match(/BEGIN CERTIFICATE/g) || []).length, 2, 'the device file carries its intermediate');
  assert.equal(server.cli(['device', 'create', 'cli-dev', '--x509-ca']).code, 0);
  let client = x509Client('cli-dev', { cert: chainPem, key: fs.readFileSync(at('cli-dev.key'), 'utf8') });
  await withTimeout(client.open(), 10000, 'CA device open');
  await client.close();

  const self = cert('device', at('cli-self'));
  const sha256 = /sha256=([0-9A-F]{64})/.exec(self)[1];
  assert.equal(server.cli(['device', 'create', 'cli-self', '--x509-thumbprint', sha256]).code, 0);
  client = x509Client('cli-self', { cert: fs.readFileSync(at('cli-self.pem'), 'utf8'), key: fs.readFileSync(at('cli-self.key'), 'utf8') });
  await withTimeout(client.open(), 10000, 'self-signed device open');
  await client.close();

  assert.equal(server.cli(['ca', 'delete', 'cli-root']).code, 0);
  assert.equal(server.cli(['ca', 'show', 'cli-root']).code, 1);
  assert.equal(server.cli(['ca', 'upload', 'x']).code, 2, '--certificate is required');
  assert.equal(server.cli(['cert', 'intermediate', at('x')]).code, 2, '--issuer is required');
  const noIssuer = server.cli(['cert', 'device', at('y'), '--issuer', at('missing')]);
  assert.equal(noIssuer.code, 1);
  assert.match(noIssuer.stderr, /are not a certificate and its key/);
});

test('a certificate device rides out a kill -9: the SDK reconnects with its certificate by itself, and the CA records are still there', async () => {
  const root = issue('k-root', 'fleethub kill root', null, true);
  const put = await rest(server.ownerCs(), 'PUT', '/certificates/k-root?api-version=2021-04-12', { properties: { certificate: root.text } });
  assert.equal(put.status, 200);
  const client = Client.fromConnectionString('HostName=localhost;DeviceId=x5-1;x509=true', Mqtt);
  client.setOptions({ cert: a.cert, key: a.key }); // the SDK's default retry policy
  await withTimeout(client.open(), 10000, 'open');
  try {
    const twin = await withTimeout(client.getTwin(), 10000, 'getTwin');
    const seen = [];
    twin.on('properties.desired', (d) => seen.push(d));
    await server.kill();
    await server.start();
    registry = Registry.fromConnectionString(server.ownerCs());
    await waitFor(async () => (await registry.get('x5-1')).responseBody.connectionState === 'Connected', 30000,
      'the SDK to reconnect with its certificate');
    await registry.updateTwin('x5-1', { properties: { desired: { after: 'kill' } } }, '*');
    await waitFor(() => seen.some((d) => d.after === 'kill'), 10000, 'the desired change after the restart');
    const kept = await rest(server.ownerCs(), 'GET', '/certificates/k-root?api-version=2021-04-12');
    assert.equal(kept.status, 200);
    assert.equal(kept.body.etag, put.body.etag);
  } finally {
    await client.close().catch(() => {});
  }
});

test('a hub and the DPS both named localhost keep their CA certificates apart', async () => {
  const at = (name) => path.join(dir, name);
  assert.equal(server.cli(['cert', 'root', at('apart-ca')]).code, 0);
  const up = server.cli(['ca', 'upload', 'apart-ca', '--certificate', at('apart-ca.pem'), '--dps']);
  assert.equal(up.code, 0, up.stderr);
  const code = JSON.parse(up.stdout).properties.verificationCode;
  assert.equal(server.cli(['cert', 'verification', at(code), '--issuer', at('apart-ca')]).code, 0);
  assert.equal(server.cli(['ca', 'verify', 'apart-ca', '--certificate', at(`${code}.pem`), '--dps']).code, 0);
  assert.ok(JSON.parse(server.cli(['ca', 'list', '--dps']).stdout).some((c) => c.name === 'apart-ca'));
  assert.ok(!JSON.parse(server.cli(['ca', 'list']).stdout).some((c) => c.name === 'apart-ca'),
    'the DPS\'s CA is not the hub\'s');
  // A certificateAuthority device of the hub is not trusted through the DPS's CA.
  assert.equal(server.cli(['cert', 'device', at('apart-dev'), '--issuer', at('apart-ca')]).code, 0);
  assert.equal(server.cli(['device', 'create', 'apart-dev', '--x509-ca']).code, 0);
  const client = x509Client('apart-dev', { cert: fs.readFileSync(at('apart-dev.pem'), 'utf8'),
    key: fs.readFileSync(at('apart-dev.key'), 'utf8') });
  const err = await withTimeout(client.open().then(() => null, (e) => e), 10000, 'open');
  await client.close().catch(() => {});
  assert.ok(err, 'the hub must refuse it');
});

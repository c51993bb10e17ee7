// TPM attestation at the DPS (issue 16), with real (software) TPMs: swtpm.
// Two independent devices: one made of tpm2-tools only (tpm-device.sh,
// driving the HTTPS API by hand), and the official Node client
// (azure-iot-provisioning-device + -http + azure-iot-security-tpm,
// unmodified, on swtpm at 127.0.0.1:2323 where it looks for a TPM) with a
// custom allocation webhook that checks deviceRuntimeContext.tpm. Each
// device activates the challenge blob in its TPM, signs its registration,
// activates the hub-key blob and connects to its hub with a SAS its TPM
// signs. Then every refusal: wrong EK, SRK mismatch, unknown id, an
// expired challenge, a SAS signed with a stale key, a disabled enrollment,
// truncated and oversized keys, MQTT.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const https = require('node:https');
const path = require('node:path');
const { Client } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { NoRetry } = require('azure-iot-common');
const { Registry } = require('azure-iothub');
const { ProvisioningServiceClient } = require('azure-iot-provisioning-service');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Http } = require('azure-iot-provisioning-device-http');
const { TpmSecurityClient, TpmAuthenticationProvider } = require('azure-iot-security-tpm');
const mqtt = require('mqtt');
const { Server, tempDir, withTimeout, waitFor } = require('./lib/server');
const { Webhook, CERTS, DPS } = require('./lib/dps');
const { Swtpm, ToolsDevice } = require('./lib/tpm');

const H1 = 'hub1.fleethub.test';
const SCOPE = '0ne00B7A11';
const API = 'api-version=2021-06-01';
const TTL = 8; // tpm_challenge_ttl_s: short, for the expired-challenge test

let server;
let svc;
let hook;
let dir;
let tpmA; // the tpm2-tools device's TPM
let tpmB; // a second TPM: another device's keys
let tpmNode; // the Node SDK's TPM, on 2323

// The device API by hand: resolves { status, headers, body }.
function call(method, regId, suffix, body, auth) {
  const data = body ? Buffer.from(JSON.stringify(body)) : null;
  return new Promise((resolve, reject) => {
    const req = https.request({
      host: DPS, port: 443, method, agent: false,
      path: `/${SCOPE}/registrations/${regId}${suffix}?${API}`,
      headers: { 'Content-Type': 'application/json', ...(data ? { 'Content-Length': data.length } : {}),
        ...(auth ? { Authorization: auth } : {}) },
    }, (res) => {
      let text = '';
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: JSON.parse(text || 'null') }));
    });
    req.on('error', reject);
    req.end(data);
  });
}

const registration = (regId) => `${SCOPE}/registrations/${regId}`;

// The tools device through the whole flow; returns the assigned state.
async function toolsRegister(dev, regId, keys, payload) {
  const first = await call('PUT', regId, '/register', { registrationId: regId, tpm: keys, payload });
  assert.equal(first.status, 401, JSON.stringify(first.body));
  assert.equal(first.body.keyName, 'registration');
  assert.equal(first.body.status, undefined, 'a challenge carries no status');
  assert.equal(Buffer.from(first.body.authenticationKey, 'base64').length, 766);
  dev.activate(first.body.authenticationKey);
  const sas = dev.sas(registration(regId), 'registration');
  const second = await call('PUT', regId, '/register', { registrationId: regId, tpm: keys, payload }, sas);
  assert.equal(second.status, 202, JSON.stringify(second.body));
  return waitFor(async () => {
    const p = await call('GET', regId, `/operations/${second.body.operationId}`, null, sas);
    assert.ok(p.status === 202 || p.status === 200, JSON.stringify(p.body));
    return p.status === 200 ? p.body : null;
  }, 15000, `the registration of ${regId}`);
}

before(async () => {
  dir = tempDir('dps-tpm');
  tpmA = await new Swtpm(dir, 2431).start();
  tpmB = await new Swtpm(dir, 2433).start();
  tpmNode = await new Swtpm(dir, 2323).start();
  hook = await new Webhook().listen();
  server = await new Server({
    name: 'dps-tpm', mqtt: '', https: '',
    hubs: [{ name: H1, mqtt: '127.0.0.4:8883', https: '127.0.0.4:443' }],
    dps: {
      name: DPS,
      lines: [`id_scope = ${SCOPE}`, `linked_hubs = ${H1}`, `tpm_challenge_ttl_s = ${TTL}`,
        `webhook_ca = ${path.join(CERTS, 'dps-trust.pem')}`,
        'mqtt_listen = 127.0.0.3:8883', 'https_listen = 127.0.0.3:443'],
    },
  }).start();
  svc = ProvisioningServiceClient.fromConnectionString(server.dpsCs);
});

after(async () => {
  await server?.stop();
  await hook?.close();
  tpmA?.stop();
  tpmB?.stop();
  tpmNode?.stop();
});

test('a device of tpm2-tools: challenge, activation, signed registration, the hub key, the hub', async () => {
  const dev = new ToolsDevice(tpmA, path.join(dir, 'a'));
  const keys = dev.keys();
  await svc.createOrUpdateIndividualEnrollment({
    registrationId: 'tpm-tools-1', allocationPolicy: 'static', iotHubs: [H1],
    attestation: { type: 'tpm', tpm: { endorsementKey: keys.endorsementKey } },
    initialTwin: { tags: { kind: 'tpm' } },
  });
  const done = await toolsRegister(dev, 'tpm-tools-1', keys, { model: 't1' });
  assert.equal(done.status, 'assigned');
  const st = done.registrationState;
  assert.equal(st.assignedHub, H1);
  assert.equal(st.deviceId, 'tpm-tools-1');
  assert.equal(st._tpmHubKey, undefined, 'the hub key itself is never shown');
  assert.equal(Buffer.from(st.tpm.authenticationKey, 'base64').length, 766);
  // The hub key, opened by the TPM, is the identity's key: the TPM signs
  // the device's hub SAS.
  dev.activate(st.tpm.authenticationKey);
  const identity = (await Registry.fromConnectionString(server.ownerCs(H1)).get('tpm-tools-1')).responseBody;
  assert.equal(identity.authentication.type, 'sas');
  const client = Client.fromSharedAccessSignature(dev.sas(`${H1}/devices/tpm-tools-1`), Mqtt);
  client.setRetryPolicy(new NoRetry());
  await withTimeout(client.open(), 10000, 'open with the TPM-signed SAS');
  const twin = await withTimeout(client.getTwin(), 10000, 'getTwin');
  assert.ok(twin.properties.desired);
  await client.close();
  assert.equal((await Registry.fromConnectionString(server.ownerCs(H1)).getTwin('tpm-tools-1')).responseBody.tags.kind, 'tpm');

  // Registering again wraps the same hub key: the SAS the TPM signs with
  // the new blob is the same key's.
  const again = await toolsRegister(dev, 'tpm-tools-1', keys);
  dev.activate(again.registrationState.tpm.authenticationKey);
  const key = (await Registry.fromConnectionString(server.ownerCs(H1)).get('tpm-tools-1')).responseBody
    .authentication.symmetricKey.primaryKey;
  assert.equal(key, identity.authentication.symmetricKey.primaryKey);
  const c2 = Client.fromSharedAccessSignature(dev.sas(`${H1}/devices/tpm-tools-1`), Mqtt);
  c2.setRetryPolicy(new NoRetry());
  await withTimeout(c2.open(), 10000, 'open again');
  await c2.close();

  // The other official clients' SAS encodings (tpm.md §1.2): the C SDK's
  // lowercase %2f, IoT Edge's lowercased audience (and its 30 s expiry).
  for (const [style, ttl] of [['c', 2400], ['aziot', 30]]) {
    const ch = await call('PUT', 'tpm-tools-1', '/register', { registrationId: 'tpm-tools-1', tpm: keys });
    assert.equal(ch.status, 401);
    dev.activate(ch.body.authenticationKey);
    const sas = dev.sas(registration('tpm-tools-1'), 'registration', ttl, style);
    assert.match(sas, style === 'c' ? /sr=0ne00B7A11%2fregistrations%2f/ : /sr=0ne00b7a11%2fregistrations%2f/);
    const reg = await call('PUT', 'tpm-tools-1', '/register', { registrationId: 'tpm-tools-1' }, sas);
    assert.equal(reg.status, 202, `${style}: ${JSON.stringify(reg.body)}`);
    const done = await waitFor(async () => {
      const p = await call('GET', 'tpm-tools-1', `/operations/${reg.body.operationId}`, null, sas);
      return p.status === 200 ? p.body : null;
    }, 15000, `the ${style} registration`);
    assert.equal(done.status, 'assigned');
  }
});

test('a TPM registration interrupted by a kill -9 is finished after the restart; the device polls on with its SAS', async () => {
  const dev = new ToolsDevice(tpmA, path.join(dir, 'a'));
  const keys = dev.keys();
  await svc.createOrUpdateIndividualEnrollment({
    registrationId: 'tpm-crash', allocationPolicy: 'custom',
    customAllocationDefinition: { webhookUrl: hook.url('/crash'), apiVersion: '2021-10-01' },
    attestation: { type: 'tpm', tpm: { endorsementKey: keys.endorsementKey } },
  });
  hook.calls = [];
  hook.handler = () => null; // the first call hangs
  const ch = await call('PUT', 'tpm-crash', '/register', { tpm: keys });
  assert.equal(ch.status, 401);
  dev.activate(ch.body.authenticationKey);
  const sas = dev.sas(registration('tpm-crash'), 'registration');
  const reg = await call('PUT', 'tpm-crash', '/register', { tpm: keys }, sas);
  assert.equal(reg.status, 202);
  await waitFor(() => hook.calls.length > 0, 10000, 'the webhook call');
  await server.kill();
  hook.handler = (req, body) => ({ status: 200, body: { iotHubHostName: H1,
    payload: { ek: body.deviceRuntimeContext.tpm.endorsementKey === keys.endorsementKey } } });
  await server.start();
  svc = ProvisioningServiceClient.fromConnectionString(server.dpsCs);
  // The challenge is in the store: the same SAS still authenticates the polls.
  const done = await waitFor(async () => {
    const p = await call('GET', 'tpm-crash', `/operations/${reg.body.operationId}`, null, sas);
    assert.ok(p.status === 200 || p.status === 202, JSON.stringify(p.body));
    return p.status === 200 ? p.body : null;
  }, 20000, 'the resumed registration');
  assert.equal(done.status, 'assigned');
  assert.deepEqual(done.registrationState.payload, { ek: true }, 'the resumed webhook call had the TPM keys');
  dev.activate(done.registrationState.tpm.authenticationKey);
  const client = Client.fromSharedAccessSignature(dev.sas(`${H1}/devices/tpm-crash`), Mqtt);
  client.setRetryPolicy(new NoRetry());
  await withTimeout(client.open(), 10000, 'open with the hub key after the restart');
  await client.close();
});

test('the official Node client on swtpm: register over HTTPS with a payload and a custom webhook, then the hub with signWithIdentity', async () => {
  const sec = new TpmSecurityClient();
  const get = (fn) => new Promise((resolve, reject) => sec[fn]((e, v) => (e ? reject(e) : resolve(v))));
  const ek = (await get('getEndorsementKey')).toString('base64');
  const srk = (await get('getStorageRootKey')).toString('base64');
  const regId = await get('getRegistrationId');
  assert.match(regId, /^[a-z2-7]{52}$/);
  await svc.createOrUpdateIndividualEnrollment({
    registrationId: regId, allocationPolicy: 'custom',
    customAllocationDefinition: { webhookUrl: hook.url('/tpm'), apiVersion: '2021-10-01' },
    attestation: { type: 'tpm', tpm: { endorsementKey: ek, storageRootKey: srk } },
  });
  hook.calls = [];
  hook.handler = (req, body) => ({ status: 200, body: { iotHubHostName: H1,
    initialTwin: { tags: { by: 'webhook' } }, payload: { echo: body.deviceRuntimeContext.payload } } });
  const client = ProvisioningDeviceClient.create(DPS, SCOPE, new Http(), sec);
  client.setProvisioningPayload({ firmware: '2.1' });
  // The TPM flow of the SDK resolves with the whole operation result.
  const result = (await withTimeout(client.register(), 60000, 'register with the TPM')).registrationState;
  assert.equal(result.assignedHub, H1);
  assert.deepEqual(result.payload, { echo: { firmware: '2.1' } });
  assert.equal(hook.calls.length, 1);
  const ctx = hook.calls[0].body.deviceRuntimeContext;
  assert.deepEqual(ctx.tpm, { endorsementKey: ek, storageRootKey: srk });
  assert.equal(ctx.registrationId, regId);
  assert.deepEqual(hook.calls[0].body.individualEnrollment.attestation, { type: 'tpm', tpm: {} },
    'the enrollment the webhook sees has no keys');

  const auth = TpmAuthenticationProvider.fromTpmSecurityClient(result.deviceId, result.assignedHub, sec);
  const device = Client.fromAuthenticationProvider(auth, Mqtt);
  device.setRetryPolicy(new NoRetry());
  await withTimeout(device.open(), 15000, 'open with TpmAuthenticationProvider');
  const twin = await withTimeout(device.getTwin(), 10000, 'getTwin');
  assert.ok(twin.properties.desired);
  await device.close();
  assert.equal((await Registry.fromConnectionString(server.ownerCs(H1)).getTwin(result.deviceId)).responseBody.tags.by, 'webhook');
});

test('refusals: wrong EK, SRK mismatch, unknown id, expired challenge, stale key, disabled, bad keys, MQTT; nothing assigned, the server up', async () => {
  const dev = new ToolsDevice(tpmA, path.join(dir, 'a'));
  const keys = dev.keys();
  const other = new ToolsDevice(tpmB, path.join(dir, 'b')).keys();
  const noKey = (r) => assert.equal(r.body?.authenticationKey, undefined, 'a refusal carries no key');

  await svc.createOrUpdateIndividualEnrollment({ registrationId: 'tpm-wrong-ek',
    attestation: { type: 'tpm', tpm: { endorsementKey: other.endorsementKey } } });
  let r = await call('PUT', 'tpm-wrong-ek', '/register', { tpm: keys });
  assert.equal(r.status, 401);
  assert.match(r.body.message, /endorsement key is not the enrollment's/);
  noKey(r);

  await svc.createOrUpdateIndividualEnrollment({ registrationId: 'tpm-srk',
    attestation: { type: 'tpm', tpm: { endorsementKey: keys.endorsementKey, storageRootKey: other.storageRootKey } } });
  r = await call('PUT', 'tpm-srk', '/register', { tpm: keys });
  assert.equal(r.status, 401);
  assert.match(r.body.message, /storage root key is not the enrollment's/);
  noKey(r);

  r = await call('PUT', 'tpm-nobody', '/register', { tpm: keys });
  assert.equal(r.status, 401);
  assert.match(r.body.message, /no individual enrollment with TPM attestation/);
  noKey(r);

  // Bad keys in the body: truncated, oversized, not base64.
  const ekBytes = Buffer.from(keys.endorsementKey, 'base64');
  await svc.createOrUpdateIndividualEnrollment({ registrationId: 'tpm-ok',
    attestation: { type: 'tpm', tpm: { endorsementKey: keys.endorsementKey } } });
  r = await call('PUT', 'tpm-ok', '/register', { tpm: { ...keys, endorsementKey: ekBytes.subarray(0, 100).toString('base64') } });
  assert.equal(r.status, 400);
  assert.match(r.body.message, /endorsementKey is not usable/);
  r = await call('PUT', 'tpm-ok', '/register', { tpm: { ...keys, endorsementKey: Buffer.alloc(3000, 1).toString('base64') } });
  assert.equal(r.status, 400);
  assert.match(r.body.message, /at most 1024 bytes/);
  r = await call('PUT', 'tpm-ok', '/register', { tpm: { endorsementKey: keys.endorsementKey } });
  assert.equal(r.status, 400);
  assert.match(r.body.message, /storageRootKey is required/);
  // A key the service SDK gives the enrollment must be a TPM public area too.
  await assert.rejects(svc.createOrUpdateIndividualEnrollment({ registrationId: 'tpm-junk',
    attestation: { type: 'tpm', tpm: { endorsementKey: 'AToA' } } }), /TPM2B_PUBLIC/);

  // The CLI makes TPM enrollments too, and says what is wrong with a key.
  const made = server.cli(['enrollment', 'create', 'tpm-cli', '--tpm-ek', keys.endorsementKey,
    '--tpm-srk', keys.storageRootKey, '--hubs', H1, '--policy', 'static']);
  assert.equal(made.code, 0, made.stderr);
  assert.equal(JSON.parse(made.stdout).attestation.tpm.storageRootKey, keys.storageRootKey);
  const junk = server.cli(['enrollment', 'create', 'tpm-cli-2', '--tpm-ek', 'AToA']);
  assert.equal(junk.code, 1);
  assert.match(junk.stderr, /endorsementKey must be the base64 of the TPM2B_PUBLIC/);
  assert.equal(server.cli(['enrollment', 'create', 'tpm-cli-3', '--tpm-srk', 'AToA']).code, 2);
  const viaCli = await toolsRegister(dev, 'tpm-cli', keys);
  assert.equal(viaCli.registrationState.assignedHub, H1);
  // Deleting the enrollment deletes its challenge: made again, the
  // enrollment does not take the SAS of the old challenge's key.
  const oldSas = dev.sas(registration('tpm-cli'), 'registration');
  assert.equal(server.cli(['enrollment', 'delete', 'tpm-cli']).code, 0);
  assert.equal(server.cli(['enrollment', 'create', 'tpm-cli', '--tpm-ek', keys.endorsementKey]).code, 0);
  r = await call('PUT', 'tpm-cli', '/register', { tpm: keys }, oldSas);
  assert.equal(r.status, 401);
  await waitFor(() => /no TPM challenge was given to this registration id/.test(server.log), 5000,
    'the missing challenge in the log');

  // A SAS signed with the key of an older challenge: refused, no key given.
  const c1 = await call('PUT', 'tpm-ok', '/register', { tpm: keys });
  assert.equal(c1.status, 401);
  dev.activate(c1.body.authenticationKey);
  const staleSas = dev.sas(registration('tpm-ok'), 'registration');
  const c2 = await call('PUT', 'tpm-ok', '/register', { tpm: keys });
  assert.equal(c2.status, 401);
  r = await call('PUT', 'tpm-ok', '/register', { tpm: keys }, staleSas);
  assert.equal(r.status, 401);
  noKey(r);
  // The current one works; after the challenge's lifetime it does not.
  dev.activate(c2.body.authenticationKey);
  const sas = dev.sas(registration('tpm-ok'), 'registration');
  await new Promise((res) => setTimeout(res, (TTL + 1) * 1000));
  r = await call('PUT', 'tpm-ok', '/register', { tpm: keys }, sas);
  assert.equal(r.status, 401);
  noKey(r);
  await waitFor(() => /the TPM challenge has expired/.test(server.log), 5000, 'the expiry in the log');

  // A disabled enrollment: the registration ends "disabled".
  await svc.createOrUpdateIndividualEnrollment({ registrationId: 'tpm-off', provisioningStatus: 'disabled',
    attestation: { type: 'tpm', tpm: { endorsementKey: keys.endorsementKey } } });
  const off = await call('PUT', 'tpm-off', '/register', { tpm: keys });
  assert.equal(off.status, 401);
  dev.activate(off.body.authenticationKey);
  r = await call('PUT', 'tpm-off', '/register', { tpm: keys }, dev.sas(registration('tpm-off'), 'registration'));
  assert.equal(r.status, 200);
  assert.equal(r.body.status, 'disabled');

  // MQTT: no TPM there, said as such.
  const m = mqtt.connect(`mqtts://${DPS}:8883`, { clientId: 'tpm-ok', username: `${SCOPE}/registrations/tpm-ok/api-version=2021-06-01`,
    reconnectPeriod: 0, protocolVersion: 4 });
  const err = await new Promise((resolve) => { m.on('error', resolve); m.on('connect', () => resolve(null)); });
  m.end(true);
  assert.ok(err, 'CONNECT must be refused');
  await waitFor(() => /refused tpm-ok: TPM attestation is served over HTTPS only/.test(server.log), 5000, 'the MQTT reason');

  for (const id of ['tpm-wrong-ek', 'tpm-srk', 'tpm-ok', 'tpm-off']) {
    await assert.rejects(svc.getDeviceRegistrationState(id), (e) => e.response?.statusCode === 404 || /not found/i.test(e.message), id);
  }
  await assert.rejects(Registry.fromConnectionString(server.ownerCs(H1)).get('tpm-ok'));
});

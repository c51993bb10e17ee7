// X.509 attestation at the DPS (issue 15): the official
// azure-iot-provisioning-device with azure-iot-security-x509 over MQTT and
// HTTPS, individual enrollments (the device's own certificate) and groups
// (a root signing certificate; an intermediate registered as a DPS CA,
// proven and verified), each followed by the device connecting to its hub
// with the same certificate; the identity the DPS creates
// (certificateAuthority where the hub trusts the CA, else the SHA-1
// thumbprint); a custom allocation webhook that allocates by certificate
// subject and gets deviceRuntimeContext.x509; every refusal with its
// reason; disabled enrollments; symmetric keys on the same listeners.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const https = require('node:https');
const path = require('node:path');
const { Client } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { NoRetry } = require('azure-iot-common');
const { Registry } = require('azure-iothub');
const mqtt = require('mqtt');
const { ProvisioningServiceClient } = require('azure-iot-provisioning-service');
const { Server, tempDir, withTimeout, waitFor, report, rest } = require('./lib/server');
const { register, registerX509, Webhook, CERTS, DPS, deriveKey } = require('./lib/dps');
const certs = require('./lib/certs');

const H1 = 'hub1.fleethub.test';
const H2 = 'hub2.fleethub.test';
const SCOPE = '0ne00C3A7E';
const API = 'api-version=2021-10-01';

let server;
let svc;
let hook;
let dir;

const issue = (name, cn, signer, isCa) => certs.issue(dir, name, cn, signer, isCa);
const device = (leaf, ...chain) => ({ cert: leaf.text + chain.map((c) => c.text).join(''), key: leaf.keyText });

function dpsRest(method, pathAndQuery, body) {
  return rest(server.dpsCs, method, pathAndQuery, body);
}

// The device API over HTTPS with a client certificate, without the SDK:
// resolves { status, body }.
function deviceCall(regId, cert, method = 'PUT', suffix = '/register') {
  const data = Buffer.from(JSON.stringify({ registrationId: regId }));
  return new Promise((resolve, reject) => {
    const req = https.request({
      host: DPS, port: 443, method, path: `/${SCOPE}/registrations/${regId}${suffix}?${API}`,
      cert: cert.cert, key: cert.key, agent: false,
      headers: { 'Content-Type': 'application/json', 'Content-Length': data.length },
    }, (res) => {
      let text = '';
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode, body: JSON.parse(text || 'null') }));
    });
    req.on('error', reject);
    req.end(data);
  });
}

async function hubConnect(state, cert) {
  const client = Client.fromConnectionString(`HostName=${state.assignedHub};DeviceId=${state.deviceId};x509=true`, Mqtt);
  client.setOptions({ cert: cert.cert, key: cert.key });
  client.setRetryPolicy(new NoRetry());
  await withTimeout(client.open(), 10000, `open ${state.deviceId} on ${state.assignedHub}`);
  return client;
}

async function refused(promise) {
  const err = await promise.then(() => null, (e) => e);
  assert.ok(err, 'the registration must be refused');
  return err;
}

before(async () => {
  dir = tempDir('dps-x509');
  hook = await new Webhook().listen();
  server = await new Server({
    name: 'dps-x509', mqtt: '', https: '',
    serverExtra: ['x509_max_intermediates = 2'],
    hubs: [
      { name: H1, mqtt: '127.0.0.4:8883', https: '127.0.0.4:443' },
      { name: H2, mqtt: '127.0.0.5:8883', https: '127.0.0.5:443' },
    ],
    dps: {
      name: DPS,
      lines: [
        `id_scope = ${SCOPE}`, `linked_hubs = ${H1}, ${H2}`,
        `webhook_ca = ${path.join(CERTS, 'dps-trust.pem')}`,
        'mqtt_listen = 127.0.0.3:8883', 'https_listen = 127.0.0.3:443',
      ],
    },
  }).start();
  svc = ProvisioningServiceClient.fromConnectionString(server.dpsCs);
});

after(async () => {
  await server?.stop();
  await hook?.close();
});

test('individual enrollments: the device\'s own certificate over MQTT and HTTPS, then the hub with the same certificate', async () => {
  const a = certs.selfSigned(dir, 'ind-a', 'x509-ind-a');
  const b = certs.selfSigned(dir, 'ind-b', 'x509-ind-b');
  const b2 = certs.selfSigned(dir, 'ind-b2', 'x509-ind-b');
  const made = (await svc.createOrUpdateIndividualEnrollment({
    registrationId: 'x509-ind-a', allocationPolicy: 'static', iotHubs: [H1],
    attestation: { type: 'x509', x509: { clientCertificates: { primary: { certificate: a.cert } } } },
    initialTwin: { tags: { line: 'x' }, properties: { desired: { rate: 5 } } },
  })).responseBody;
  const info = made.attestation.x509.clientCertificates.primary.info;
  assert.equal(info.sha256Thumbprint, a.sha256);
  assert.equal(info.sha1Thumbprint, a.sha1);
  assert.equal(info.subjectName, 'CN=x509-ind-a');
  // The secondary certificate (the base64 of its DER, as the portal takes it) matches too.
  const der = (pem) => pem.replace(/-----[A-Z ]+-----|\s/g, '');
  await svc.createOrUpdateIndividualEnrollment({
    registrationId: 'x509-ind-b', allocationPolicy: 'static', iotHubs: [H2],
    attestation: { type: 'x509', x509: { clientCertificates: {
      primary: { certificate: b2.cert }, secondary: { certificate: der(b.cert) } } } },
  });

  const state = await registerX509(SCOPE, 'mqtt', 'x509-ind-a', a, { hello: 'mqtt' });
  assert.equal(state.status, 'assigned');
  assert.equal(state.assignedHub, H1);
  assert.equal(state.deviceId, 'x509-ind-a');
  const stored = (await svc.getDeviceRegistrationState('x509-ind-a')).responseBody;
  assert.equal(stored.x509.certificateInfo.sha1Thumbprint, a.sha1);
  assert.equal(stored.x509.enrollmentGroupId, undefined);
  const identity = (await Registry.fromConnectionString(server.ownerCs(H1)).get('x509-ind-a')).responseBody;
  assert.equal(identity.authentication.type, 'selfSigned');
  assert.equal(identity.authentication.x509Thumbprint.primaryThumbprint, a.sha1);
  const client = await hubConnect(state, a);
  const twin = await withTimeout(client.getTwin(), 10000, 'getTwin');
  assert.equal(twin.properties.desired.rate, 5);
  await report(twin, { firmware: '1.0' });
  await client.close();
  const t = (await Registry.fromConnectionString(server.ownerCs(H1)).getTwin('x509-ind-a')).responseBody;
  assert.equal(t.properties.reported.firmware, '1.0');
  assert.equal(t.tags.line, 'x');

  const sb = await registerX509(SCOPE, 'https', 'x509-ind-b', b);
  assert.equal(sb.assignedHub, H2);
  assert.equal((await Registry.fromConnectionString(server.ownerCs(H2)).get('x509-ind-b')).responseBody
    .authentication.x509Thumbprint.primaryThumbprint, b.sha1);
  (await hubConnect(sb, b)).close();
  // Registering again, over MQTT over WebSockets, with the same certificate
  // gives the same identity.
  const again = await registerX509(SCOPE, 'ws', 'x509-ind-b', b);
  assert.equal(again.deviceId, 'x509-ind-b');
  assert.equal(again.assignedHub, H2);
  (await hubConnect(again, b)).close();
});

test('groups: a root signing certificate over HTTPS, an intermediate as a verified DPS CA over MQTT; the identity trusts the hub\'s CA where it has one', async () => {
  const root = issue('g-root', 'fleet root', null, true);
  const croot = issue('g-croot', 'fleet CA root', null, true);
  const inter = issue('g-inter', 'fleet intermediate', croot, true);
  const d1 = issue('g-d1', 'x509-g-d1', root, false);
  const d2 = issue('g-d2', 'x509-g-d2', inter, false);
  await svc.createOrUpdateEnrollmentGroup({
    enrollmentGroupId: 'root-group', allocationPolicy: 'static', iotHubs: [H1],
    attestation: { type: 'x509', x509: { signingCertificates: { primary: { certificate: root.text } } } },
  });

  // The intermediate as the DPS's CA certificate: uploaded, proven, verified.
  const up = await dpsRest('PUT', `/dps/certificates/fleet-inter?${API}`, { properties: { certificate: inter.text } });
  assert.equal(up.status, 200, JSON.stringify(up.body));
  assert.equal(up.body.properties.isVerified, false);
  await svc.createOrUpdateEnrollmentGroup({
    enrollmentGroupId: 'inter-group', allocationPolicy: 'static', iotHubs: [H2],
    attestation: { type: 'x509', x509: { caReferences: { primary: 'fleet-inter' } } },
  });
  const early = await refused(registerX509(SCOPE, 'mqtt', 'x509-g-d2', device(d2, inter)));
  assert.ok(early);
  await waitFor(() => /refused x509-g-d2: the CA certificate the enrollment references is not verified/.test(server.log),
    5000, 'the unverified CA in the log');
  const code = await dpsRest('POST', `/dps/certificates/fleet-inter/generateVerificationCode?${API}`);
  assert.equal(code.status, 200);
  const proof = issue('g-proof', code.body.properties.verificationCode, inter, false);
  const ok = await dpsRest('POST', `/dps/certificates/fleet-inter/verify?${API}`, { certificate: proof.text });
  assert.equal(ok.status, 200, JSON.stringify(ok.body));
  assert.equal(ok.body.properties.isVerified, true);
  const list = await dpsRest('GET', `/dps/certificates?${API}`);
  assert.deepEqual(list.body.value.map((c) => c.name), ['fleet-inter']);
  // The hub's CA certificates are another list.
  assert.deepEqual((await rest(server.ownerCs(H2), 'GET', '/certificates?api-version=2021-04-12')).body.value, []);

  // A group of the CA root too: d2's nearest anchor is still the intermediate.
  await svc.createOrUpdateEnrollmentGroup({
    enrollmentGroupId: 'croot-group', allocationPolicy: 'static', iotHubs: [H1],
    attestation: { type: 'x509', x509: { signingCertificates: { primary: { certificate: croot.text } } } },
  });
  // H2 trusts the CA root (verified there): the identity is certificateAuthority.
  const hubCs = server.ownerCs(H2);
  await rest(hubCs, 'PUT', '/certificates/root?api-version=2021-04-12', { properties: { certificate: croot.text } });
  const hc = await rest(hubCs, 'POST', '/certificates/root/generateVerificationCode?api-version=2021-04-12');
  const hproof = issue('h-proof', hc.body.properties.verificationCode, croot, false);
  assert.equal((await rest(hubCs, 'POST', '/certificates/root/verify?api-version=2021-04-12', { certificate: hproof.text })).status, 200);

  const s1 = await registerX509(SCOPE, 'https', 'x509-g-d1', device(d1));
  assert.equal(s1.assignedHub, H1);
  const r1 = (await svc.getDeviceRegistrationState('x509-g-d1')).responseBody;
  assert.equal(r1.x509.enrollmentGroupId, 'root-group');
  assert.equal(r1.x509.signingCertificateInfo.sha1Thumbprint, root.sha1);
  assert.equal((await Registry.fromConnectionString(server.ownerCs(H1)).get('x509-g-d1')).responseBody
    .authentication.x509Thumbprint.primaryThumbprint, d1.sha1, 'H1 has no CA: the thumbprint');
  (await hubConnect(s1, device(d1))).close();

  // d2 sends its intermediate: the nearest anchor is the intermediate (inter-group),
  // not the root (croot-group) behind it.
  const s2 = await registerX509(SCOPE, 'mqtt', 'x509-g-d2', device(d2, inter));
  assert.equal(s2.assignedHub, H2);
  const r2 = (await svc.getDeviceRegistrationState('x509-g-d2')).responseBody;
  assert.equal(r2.x509.enrollmentGroupId, 'inter-group');
  const id2 = (await Registry.fromConnectionString(hubCs).get('x509-g-d2')).responseBody;
  assert.equal(id2.authentication.type, 'certificateAuthority');
  const c2 = await hubConnect(s2, device(d2, inter));
  await withTimeout(c2.getTwin(), 10000, 'getTwin');
  await c2.close();
});

test('a custom allocation webhook allocates by certificate subject and gets deviceRuntimeContext.x509', async () => {
  const root = issue('w-root', 'webhook root', null, true);
  const dev = issue('w-dev', 'x509-w-east', root, false);
  await svc.createOrUpdateEnrollmentGroup({
    enrollmentGroupId: 'webhook-group', allocationPolicy: 'custom',
    customAllocationDefinition: { webhookUrl: hook.url('/alloc'), apiVersion: '2021-10-01' },
    attestation: { type: 'x509', x509: { signingCertificates: { primary: { certificate: root.text } } } },
  });
  hook.calls = [];
  hook.handler = (req, body) => {
    const subject = body.deviceRuntimeContext.x509.certificateInfo.subjectName;
    return { status: 200, body: { iotHubHostName: /east/.test(subject) ? H2 : H1,
      initialTwin: { tags: { subject } }, payload: { seen: body.deviceRuntimeContext.payload } } };
  };
  const state = await registerX509(SCOPE, 'https', 'x509-w-east', device(dev), { model: 'm1' });
  assert.equal(state.assignedHub, H2);
  assert.deepEqual(state.payload, { seen: { model: 'm1' } });
  assert.equal(hook.calls.length, 1);
  const ctx = hook.calls[0].body.deviceRuntimeContext;
  const fp = (alg) => certs.ossl('x509', '-in', dev.pem, '-noout', '-fingerprint', `-${alg}`).trim().split('=')[1].replace(/:/g, '');
  const serial = certs.ossl('x509', '-in', dev.pem, '-noout', '-serial').trim().split('=')[1];
  const dates = certs.ossl('x509', '-in', dev.pem, '-noout', '-startdate', '-enddate');
  const iso = (line) => new Date(/=(.*)/.exec(line)[1]).toISOString().replace('.000Z', 'Z');
  const [notBefore, notAfter] = dates.trim().split('\n').map(iso);
  assert.deepEqual(Object.keys(ctx).sort(), ['payload', 'registrationId', 'x509']);
  assert.deepEqual(ctx.x509, {
    certificateInfo: {
      subjectName: 'CN=x509-w-east', sha1Thumbprint: fp('sha1'), sha256Thumbprint: fp('sha256'),
      issuerName: 'CN=webhook root', notBeforeUtc: notBefore, notAfterUtc: notAfter,
      serialNumber: serial.toUpperCase(), version: 3,
    },
    enrollmentGroupId: 'webhook-group',
    signingCertificateInfo: ctx.x509.signingCertificateInfo,
  });
  assert.equal(ctx.x509.signingCertificateInfo.sha1Thumbprint, root.sha1);
  assert.equal(ctx.x509.signingCertificateInfo.subjectName, 'CN=webhook root');
  assert.equal(hook.calls[0].body.enrollmentGroup.enrollmentGroupId, 'webhook-group');
  const twin = (await Registry.fromConnectionString(server.ownerCs(H2)).getTwin('x509-w-east')).responseBody;
  assert.equal(twin.tags.subject, 'CN=x509-w-east');
});

test('refusals: expired, not yet valid, CN not the registration id, unknown, another CA, chain too long, thumbprint mismatch; each with its reason and the server up', async () => {
  const expired = certs.selfSigned(dir, 'r-exp', 'x509-r-exp', '20200101000000Z', '20200201000000Z');
  const future = certs.selfSigned(dir, 'r-fut', 'x509-r-fut', '20400101000000Z', '20400201000000Z');
  const right = certs.selfSigned(dir, 'r-right', 'x509-r-thumb');
  const wrong = certs.selfSigned(dir, 'r-wrong', 'x509-r-thumb');
  for (const [id, c] of [['x509-r-exp', expired], ['x509-r-fut', future], ['x509-r-thumb', right]]) {
    await svc.createOrUpdateIndividualEnrollment({ registrationId: id, attestation: { type: 'x509',
      x509: { clientCertificates: { primary: { certificate: c.cert } } } } });
  }
  const cases = [
    ['x509-r-exp', expired, /the certificate has expired/],
    ['x509-r-fut', future, /the certificate is not valid yet/],
    ['x509-r-other', right, /subject CN is not the registration id/],
    ['x509-r-thumb', wrong, /not the individual enrollment's/],
  ];
  const stranger = issue('r-stranger', 'stranger root', null, true);
  const lost = issue('r-lost', 'x509-r-lost', stranger, false);
  cases.push(['x509-r-lost', device(lost), /no enrollment trusts a certificate of this chain/]);
  const unknown = certs.selfSigned(dir, 'r-unknown', 'x509-r-unknown');
  cases.push(['x509-r-unknown', unknown, /no enrollment trusts/]);
  // Three intermediates between the leaf and the group's root; 2 are allowed.
  const root = issue('r-root', 'long root', null, true);
  await svc.createOrUpdateEnrollmentGroup({ enrollmentGroupId: 'long-group', attestation: { type: 'x509',
    x509: { signingCertificates: { primary: { certificate: root.text } } } } });
  const i1 = issue('r-i1', 'long i1', root, true);
  const i2 = issue('r-i2', 'long i2', i1, true);
  const i3 = issue('r-i3', 'long i3', i2, true);
  const deep = issue('r-deep', 'x509-r-deep', i3, false);
  cases.push(['x509-r-deep', device(deep, i3, i2, i1), /chain is longer than allowed/]);
  const shallow = issue('r-shallow', 'x509-r-shallow', i2, false);

  for (const [id, c, reason] of cases) {
    const r = await deviceCall(id, c);
    assert.equal(r.status, 401, `${id}: ${JSON.stringify(r.body)}`);
    assert.equal(r.body.errorCode, 401002);
    assert.match(r.body.message, reason, id);
  }
  // The SDK sees the refusal over both transports.
  await refused(registerX509(SCOPE, 'mqtt', 'x509-r-exp', expired));
  await waitFor(() => /mqtt .*refused x509-r-exp: the certificate has expired/.test(server.log), 5000, 'the MQTT refusal logged');
  await refused(registerX509(SCOPE, 'https', 'x509-r-thumb', wrong));
  // Two intermediates are within the limit.
  const ok = await registerX509(SCOPE, 'https', 'x509-r-shallow', device(shallow, i2, i1));
  assert.equal(ok.status, 'assigned');
  // A device with neither a SAS token nor a certificate.
  const bare = await new Promise((resolve) => {
    https.request({ host: DPS, port: 443, method: 'PUT', agent: false,
      path: `/${SCOPE}/registrations/x509-r-bare/register?${API}` }, (res) => {
      let text = '';
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode, body: JSON.parse(text) }));
    }).end();
  });
  assert.equal(bare.status, 401);
  assert.match(bare.body.message, /no SAS token and no client certificate/);
});

test('disabled: an individual enrollment, a group, a device on its hub; symmetric keys on the same listeners', async () => {
  const ind = certs.selfSigned(dir, 'dis-ind', 'x509-dis-ind');
  const created = (await svc.createOrUpdateIndividualEnrollment({ registrationId: 'x509-dis-ind', provisioningStatus: 'disabled',
    attestation: { type: 'x509', x509: { clientCertificates: { primary: { certificate: ind.cert } } } } })).responseBody;
  assert.equal(created.provisioningStatus, 'disabled');
  const e1 = await refused(registerX509(SCOPE, 'https', 'x509-dis-ind', ind));
  assert.equal(e1.result?.registrationState?.status ?? e1.result?.status, 'disabled', `${e1}`);

  const root = issue('dis-root', 'disabled root', null, true);
  const dev = issue('dis-dev', 'x509-dis-dev', root, false);
  await svc.createOrUpdateEnrollmentGroup({ enrollmentGroupId: 'dis-group', iotHubs: [H1], allocationPolicy: 'static',
    attestation: { type: 'x509', x509: { signingCertificates: { primary: { certificate: root.text } } } } });
  const state = await registerX509(SCOPE, 'mqtt', 'x509-dis-dev', device(dev));
  const client = await hubConnect(state, device(dev));
  const closed = new Promise((resolve) => client.on('disconnect', resolve));
  // A DPS session attested by the group, open while the group is disabled.
  const dpsSession = mqtt.connect(`mqtts://${DPS}:8883`, { clientId: 'x509-dis-dev', reconnectPeriod: 0,
    username: `${SCOPE}/registrations/x509-dis-dev/api-version=2021-06-01`, ...device(dev) });
  await withTimeout(new Promise((resolve, reject) => { dpsSession.on('connect', resolve); dpsSession.on('error', reject); }),
    10000, 'the DPS session');
  const dpsClosed = new Promise((resolve) => dpsSession.on('close', resolve));
  const group = (await svc.getEnrollmentGroup('dis-group')).responseBody;
  group.provisioningStatus = 'disabled';
  await svc.createOrUpdateEnrollmentGroup(group);
  await withTimeout(dpsClosed, 10000, 'the DPS session closed by the disable');
  dpsSession.end(true);
  await waitFor(() => /x509-dis-dev closed: its enrollment group dis-group was disabled/.test(server.log), 5000, 'the reason');
  const e2 = await refused(registerX509(SCOPE, 'mqtt', 'x509-dis-dev', device(dev)));
  assert.equal(e2.result?.registrationState?.status ?? e2.result?.status, 'disabled', `${e2}`);
  // Disabling the device on its hub closes its live session at once.
  const reg = Registry.fromConnectionString(server.ownerCs(H1));
  const d = (await reg.get('x509-dis-dev')).responseBody;
  await reg.update({ deviceId: d.deviceId, status: 'disabled', etag: d.etag, authentication: d.authentication });
  await withTimeout(closed, 10000, 'the disabled device disconnected');
  await client.close().catch(() => {});

  // Symmetric keys: unchanged beside certificates.
  const key = Buffer.alloc(32, 7).toString('base64');
  await svc.createOrUpdateEnrollmentGroup({ enrollmentGroupId: 'sas-group', iotHubs: [H1], allocationPolicy: 'static',
    attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: key, secondaryKey: key } } });
  const sas = await register(SCOPE, 'mqtt', 'sas-beside-x509', deriveKey(key, 'sas-beside-x509'));
  assert.equal(sas.status, 'assigned');
});

test('an X.509 registration interrupted by a kill -9 is finished after the restart, with the certificate\'s identity', async () => {
  const root = issue('k-root', 'crash root', null, true);
  const dev = issue('k-dev', 'x509-k-dev', root, false);
  await svc.createOrUpdateEnrollmentGroup({
    enrollmentGroupId: 'crash-group', allocationPolicy: 'custom',
    customAllocationDefinition: { webhookUrl: hook.url('/crash'), apiVersion: '2021-10-01' },
    attestation: { type: 'x509', x509: { signingCertificates: { primary: { certificate: root.text } } } },
  });
  hook.calls = [];
  hook.handler = () => null; // the first call hangs
  const pending = registerX509(SCOPE, 'https', 'x509-k-dev', device(dev)).catch((e) => e);
  await waitFor(() => hook.calls.length > 0, 10000, 'the webhook call');
  await server.kill();
  await pending;
  hook.handler = (req, body) => ({ status: 200, body: { iotHubHostName: H1,
    payload: { subject: body.deviceRuntimeContext.x509.certificateInfo.subjectName } } });
  await server.start();
  svc = ProvisioningServiceClient.fromConnectionString(server.dpsCs);
  const st = await waitFor(async () => {
    const s = (await svc.getDeviceRegistrationState('x509-k-dev').catch(() => null))?.responseBody;
    return s?.status === 'assigned' ? s : null;
  }, 15000, 'the resumed registration');
  assert.deepEqual(st.payload, { subject: 'CN=x509-k-dev' }, 'the resumed call carried the certificate');
  assert.equal(st.x509.enrollmentGroupId, 'crash-group');
  const identity = (await Registry.fromConnectionString(server.ownerCs(H1)).get('x509-k-dev')).responseBody;
  assert.equal(identity.authentication.x509Thumbprint.primaryThumbprint, dev.sha1);
  (await hubConnect(st, device(dev))).close();
});

test('the CLI: a DPS CA with fleethub cert and fleethub ca --dps, an enrollment group on it, an individual enrollment by certificate; the device registers and connects', async () => {
  const at = (name) => path.join(dir, name);
  const cli = (...args) => {
    const r = server.cli(args);
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    return r;
  };
  cli('cert', 'root', at('walk-root'));
  const up = cli('ca', 'upload', 'walk-root', '--certificate', at('walk-root.pem'), '--dps');
  const code = JSON.parse(up.stdout).properties.verificationCode;
  assert.match(up.stderr, new RegExp(`fleethub ca verify walk-root --certificate ${code}.pem --dps`));
  cli('cert', 'verification', at(code), '--issuer', at('walk-root'));
  const ver = cli('ca', 'verify', 'walk-root', '--certificate', at(`${code}.pem`), '--dps');
  assert.equal(JSON.parse(ver.stdout).properties.isVerified, true);
  assert.ok(JSON.parse(cli('ca', 'list', '--dps').stdout).some((c) => c.name === 'walk-root'));
  assert.equal(JSON.parse(cli('ca', 'show', 'walk-root', '--dps').stdout).properties.isVerified, true);
  assert.equal(server.cli(['ca', 'show', 'walk-root']).code, 1, 'the hub has no such CA');

  const g = JSON.parse(cli('enrollment-group', 'create', 'walk-fleet', '--ca-ref', 'walk-root',
    '--policy', 'static', '--hubs', H1).stdout);
  assert.deepEqual(g.attestation, { type: 'x509', x509: { caReferences: { primary: 'walk-root' } } });
  cli('cert', 'device', at('walk-sensor-1'), '--issuer', at('walk-root'));
  const cert = { cert: fs.readFileSync(at('walk-sensor-1.pem'), 'utf8'),
    key: fs.readFileSync(at('walk-sensor-1.key'), 'utf8') };
  const state = await registerX509(SCOPE, 'mqtt', 'walk-sensor-1', cert);
  assert.equal(state.assignedHub, H1);
  const client = await hubConnect(state, cert);
  await withTimeout(client.getTwin(), 10000, 'getTwin');
  await client.close();

  // An individual enrollment from the device's own certificate file.
  cli('cert', 'device', at('walk-solo'));
  const e = JSON.parse(cli('enrollment', 'create', 'walk-solo', '--certificate', at('walk-solo.pem'),
    '--policy', 'static', '--hubs', H2).stdout);
  assert.match(e.attestation.x509.clientCertificates.primary.info.sha256Thumbprint, /^[0-9A-F]{64}$/);
  const solo = { cert: fs.readFileSync(at('walk-solo.pem'), 'utf8'),
    key: fs.readFileSync(at('walk-solo.key'), 'utf8') };
  assert.equal((await registerX509(SCOPE, 'https', 'walk-solo', solo)).assignedHub, H2);
  // Usage errors: both kinds, a secondary alone, keys with a certificate.
  assert.equal(server.cli(['enrollment', 'create', 'x1', '--certificate', at('walk-solo.pem'), '--ca-ref', 'walk-root']).code, 2);
  assert.equal(server.cli(['enrollment-group', 'create', 'x2', '--secondary-ca-ref', 'walk-root']).code, 2);
  const keys = server.cli(['enrollment', 'create', 'x3', '--certificate', at('walk-solo.pem'), '--primary-key', 'a2V5']);
  assert.equal(keys.code, 2);
  assert.match(keys.stderr, /symmetric-key attestation only/);
});

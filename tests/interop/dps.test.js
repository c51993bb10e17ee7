// The Device Provisioning Service against the official SDKs:
// azure-iot-provisioning-service for enrollments and registration states,
// azure-iot-provisioning-device over MQTT, MQTT over WebSockets and HTTPS
// with symmetric keys (individual and group), a custom allocation webhook
// written here (HTTPS, its own CA), reprovisioning, every webhook failure,
// and the device connecting to the hub it was given.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('path');
const { Client } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { Registry } = require('azure-iothub');
const { ProvisioningServiceClient } = require('azure-iot-provisioning-service');
const { Server, deviceCs, withTimeout, waitFor, report, rest } = require('./lib/server');
const { deriveKey, register, Webhook, CERTS, DPS } = require('./lib/dps');

const H1 = 'hub1.fleethub.test';
const H2 = 'hub2.fleethub.test';
const SCOPE = '0ne00F1EE7';
const DPS_KEY = Buffer.alloc(32, 0x44).toString('base64');
const KEY = (n) => Buffer.alloc(32, n).toString('base64');

// Node's global agent keeps connections alive: device polls and service
// calls share them, as in a real application (a stale OpenSSL error left by
// a failed webhook handshake once made the server drop such a connection).

let server;
let svc;
let hook;
let rogue;

function hubRegistry(hub) {
  return Registry.fromConnectionString(server.ownerCs(hub));
}

async function connectedTwin(state, key) {
  const client = Client.fromConnectionString(deviceCs(state.assignedHub, state.deviceId, key), Mqtt);
  await withTimeout(client.open(), 10000, `open ${state.deviceId} on ${state.assignedHub}`);
  const twin = await withTimeout(client.getTwin(), 10000, 'getTwin');
  return { client, twin };
}

function notFound(e) {
  return e.name === 'DeviceNotFoundError' || e.response?.statusCode === 404 || /not found/i.test(e.message);
}

async function failedState(promise) {
  const err = await promise.then(() => null, (e) => e);
  assert.ok(err, 'registration must fail');
  assert.match(err.name, /RegistrationFailedError$/, `${err}`);
  return err.result.registrationState;
}

before(async () => {
  hook = await new Webhook().listen();
  rogue = await new Webhook('rogue').listen();
  server = await new Server({
    name: 'dps', mqtt: '', https: '',
    hubs: [
      { name: H1, mqtt: '127.0.0.4:8883', https: '127.0.0.4:443' },
      { name: H2, mqtt: '127.0.0.5:8883', https: '127.0.0.5:443' },
    ],
    dps: {
      name: DPS,
      lines: [
        `id_scope = ${SCOPE}`, `owner_key = ${DPS_KEY}`,
        `linked_hubs = ${H1}, ${H2}`,
        `webhook_ca = ${path.join(CERTS, 'dps-trust.pem')}`,
        'webhook_timeout_ms = 1000', 'webhook_attempts = 3', 'webhook_retry_ms = 100',
        'mqtt_listen = 127.0.0.3:8883', 'https_listen = 127.0.0.3:443',
      ],
    },
  }).start();
  assert.equal(server.idScope, SCOPE);
  assert.equal(server.dpsCs, `HostName=${DPS};SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=${DPS_KEY}`);
  svc = ProvisioningServiceClient.fromConnectionString(server.dpsCs);
});

after(async () => {
  await server?.stop();
  await hook?.close();
  await rogue?.close();
});

test('individual enrollment over MQTT: static hub, initial twin, the device connects', async () => {
  const key = KEY(1);
  const created = (await svc.createOrUpdateIndividualEnrollment({
    registrationId: 'ind-mqtt-1', deviceId: 'thermostat-1',
    attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: key, secondaryKey: KEY(2) } },
    allocationPolicy: 'static', iotHubs: [H2],
    initialTwin: { tags: { site: 'lab-7' }, properties: { desired: { telemetryInterval: 10 } } },
  })).responseBody;
  assert.equal(created.registrationId, 'ind-mqtt-1');
  assert.equal(created.provisioningStatus, 'enabled');
  assert.match(created.etag, /^".+"$/);
  assert.ok(created.createdDateTimeUtc);

  const state = await register(SCOPE, 'mqtt', 'ind-mqtt-1', key, { modelId: 'dtmi:x;1' });
  assert.equal(state.assignedHub, H2);
  assert.equal(state.deviceId, 'thermostat-1');
  assert.equal(state.status, 'assigned');
  assert.equal(state.substatus, 'initialAssignment');
  assert.equal(state.payload, undefined, 'no webhook, no payload');

  const { client, twin } = await connectedTwin(state, key);
  assert.equal(twin.properties.desired.telemetryInterval, 10);
  await client.close();
  const t = (await hubRegistry(H2).getTwin('thermostat-1')).responseBody;
  assert.equal(t.tags.site, 'lab-7');
  await assert.rejects(hubRegistry(H1).get('thermostat-1'), (e) => e.name === 'DeviceNotFoundError');

  const rs = (await svc.getDeviceRegistrationState('ind-mqtt-1')).responseBody;
  assert.equal(rs.assignedHub, H2);
  assert.equal(rs.status, 'assigned');
  assert.equal(Object.keys(rs).some((k) => k.startsWith('_')), false, 'no internal fields');
  // The secondary key works too, and the same hub and device are kept.
  const again = await register(SCOPE, 'https', 'ind-mqtt-1', KEY(2));
  assert.equal(again.assignedHub, H2);
  assert.equal(again.deviceId, 'thermostat-1');
});

test('group enrollment over HTTPS: derived keys, hashed over two hubs, stable per registration id', async () => {
  const groupKey = KEY(3);
  await svc.createOrUpdateEnrollmentGroup({
    enrollmentGroupId: 'hashed-group',
    attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: groupKey, secondaryKey: KEY(4) } },
    allocationPolicy: 'hashed',
    initialTwin: { tags: { group: 'hashed' }, properties: { desired: {} } },
  });
  const ids = Array.from({ length: 12 }, (_, i) => `hashed-dev-${i}`);
  const states = await Promise.all(ids.map((id) => register(SCOPE, 'https', id, deriveKey(groupKey, id))));
  const hubs = new Set(states.map((s) => s.assignedHub));
  assert.deepEqual([...hubs].sort(), [H1, H2], 'both hubs get devices');
  for (const s of states) assert.equal(s.deviceId, s.registrationId);
  // The same registration id lands on the same hub again.
  const again = await register(SCOPE, 'mqtt', ids[0], deriveKey(groupKey, ids[0]));
  assert.equal(again.assignedHub, states[0].assignedHub);
  assert.equal(again.substatus, 'initialAssignment');
  // A device key derived from the secondary group key works as well.
  const second = await register(SCOPE, 'https', 'hashed-dev-s', deriveKey(KEY(4), 'hashed-dev-s'));
  assert.equal(second.status, 'assigned');

  // The registrations of the group, through the SDK's query.
  const q = svc.createEnrollmentGroupDeviceRegistrationStateQuery({ query: '*' }, 'hashed-group');
  const page = (await q.next()).responseBody;
  assert.equal(page.length, 13);
  assert.ok(page.every((r) => r.status === 'assigned' && !('_group' in r)));
});

test('custom allocation over MQTT/WebSockets: the payload goes to the webhook and back', async () => {
  const groupKey = KEY(5);
  hook.calls.length = 0;
  hook.handler = (req, body) => ({
    status: 200,
    body: {
      iotHubHostName: body.deviceRuntimeContext.payload.modelId === 'toaster' ? H2 : H1,
      initialTwin: { tags: { deviceType: body.deviceRuntimeContext.payload.modelId },
        properties: { desired: { state: 'ready', darknessSetting: 'medium' } } },
      payload: { echo: body.deviceRuntimeContext.payload, hubConfig: { telemetryInterval: 10 } },
    },
  });
  await svc.createOrUpdateEnrollmentGroup({
    enrollmentGroupId: 'custom-group',
    attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: groupKey, secondaryKey: KEY(6) } },
    allocationPolicy: 'custom',
    customAllocationDefinition: { webhookUrl: hook.url('/api/allocate?code=s3cr%2Bt'), apiVersion: '2021-10-01' },
    iotHubs: [H1, H2],
  });
  const key = deriveKey(groupKey, 'toaster-1');
  const state = await register(SCOPE, 'ws', 'toaster-1', key, { modelId: 'toaster', site: 'lab-7' });
  assert.equal(state.assignedHub, H2);
  assert.deepEqual(state.payload, { echo: { modelId: 'toaster', site: 'lab-7' }, hubConfig: { telemetryInterval: 10 } });

  assert.equal(hook.calls.length, 1);
  const call = hook.calls[0];
  assert.equal(call.url, '/api/allocate?code=s3cr%2Bt', 'the query string is kept as given');
  assert.equal(call.body.enrollmentGroup.enrollmentGroupId, 'custom-group');
  assert.equal(call.body.enrollmentGroup.attestation.type, 'symmetricKey');
  assert.doesNotMatch(JSON.stringify(call.body), new RegExp(groupKey.replace(/[+/=]/g, '.')), 'no key material');
  assert.equal(call.body.deviceRuntimeContext.registrationId, 'toaster-1');
  assert.deepEqual(call.body.deviceRuntimeContext.symmetricKey, {});
  assert.deepEqual(call.body.deviceRuntimeContext.payload, { modelId: 'toaster', site: 'lab-7' });
  assert.equal(call.body.deviceRuntimeContext.currentIotHubHostName, undefined);
  assert.deepEqual(call.body.linkedHubs.sort(), [H1, H2]);

  const { client, twin } = await connectedTwin(state, key);
  assert.equal(twin.properties.desired.state, 'ready');
  assert.equal(twin.properties.desired.darknessSetting, 'medium');
  await client.close();
  assert.equal((await hubRegistry(H2).getTwin('toaster-1')).responseBody.tags.deviceType, 'toaster');

  // The call is in the log, without its query string (keys ride there).
  const cli = server.cli(['webhook', 'calls', 'toaster-1']);
  assert.equal(cli.code, 0, cli.stderr);
  assert.match(cli.stdout, /POST https:\/\/127\.0\.0\.1:\d+\/api\/allocate -> 200 in \d+ ms: hub hub2\.fleethub\.test/);
  assert.doesNotMatch(cli.stdout, /code=/);
});

// An individual enrollment whose webhook sends the device where its payload asks.
async function movable(regId, reprovisionPolicy) {
  const key = KEY(7);
  await svc.createOrUpdateIndividualEnrollment({
    registrationId: regId,
    attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: key, secondaryKey: KEY(8) } },
    allocationPolicy: 'custom', reprovisionPolicy,
    customAllocationDefinition: { webhookUrl: hook.url('/move'), apiVersion: '2021-10-01' },
    initialTwin: { tags: { origin: 'enrollment' }, properties: { desired: { mode: 'initial' } } },
  });
  hook.handler = (req, body) => ({ status: 200, body: { iotHubHostName: body.deviceRuntimeContext.payload.want } });
  return key;
}

test('reprovisioning: migrate moves the twin, then back reads reprovisionedToInitialAssignment', async () => {
  const key = await movable('mover-migrate', { updateHubAssignment: true, migrateDeviceData: true });
  const first = await register(SCOPE, 'mqtt', 'mover-migrate', key, { want: H1 });
  assert.equal(first.assignedHub, H1);
  const { client, twin } = await connectedTwin(first, key);
  await report(twin, { firmware: '1.2.3' });
  await client.close();
  await hubRegistry(H1).updateTwin('mover-migrate', { tags: { owner: 'ops' }, properties: { desired: { mode: 'tuned' } } }, '*');

  hook.calls.length = 0;
  const moved = await register(SCOPE, 'mqtt', 'mover-migrate', key, { want: H2 });
  assert.equal(moved.assignedHub, H2);
  assert.equal(moved.substatus, 'deviceDataMigrated');
  const ctx = hook.calls[0].body.deviceRuntimeContext;
  assert.equal(ctx.currentIotHubHostName, H1);
  assert.equal(ctx.currentDeviceId, 'mover-migrate');
  const t2 = (await hubRegistry(H2).getTwin('mover-migrate')).responseBody;
  assert.equal(t2.tags.owner, 'ops');
  assert.equal(t2.properties.desired.mode, 'tuned');
  assert.equal(t2.properties.reported.firmware, '1.2.3');
  await assert.rejects(hubRegistry(H1).get('mover-migrate'), (e) => e.name === 'DeviceNotFoundError');
  const c2 = await connectedTwin(moved, key);
  await c2.client.close();

  const back = await register(SCOPE, 'https', 'mover-migrate', key, { want: H1 });
  assert.equal(back.assignedHub, H1);
  assert.equal(back.substatus, 'reprovisionedToInitialAssignment');
});

test('reprovisioning: reset starts from the initial twin; never keeps the hub', async () => {
  const key = await movable('mover-reset', { updateHubAssignment: true, migrateDeviceData: false });
  await register(SCOPE, 'mqtt', 'mover-reset', key, { want: H1 });
  await hubRegistry(H1).updateTwin('mover-reset', { properties: { desired: { mode: 'tuned' } } }, '*');
  const reset = await register(SCOPE, 'mqtt', 'mover-reset', key, { want: H2 });
  assert.equal(reset.assignedHub, H2);
  assert.equal(reset.substatus, 'deviceDataReset');
  const t = (await hubRegistry(H2).getTwin('mover-reset')).responseBody;
  assert.equal(t.properties.desired.mode, 'initial');
  assert.equal(t.tags.origin, 'enrollment');
  await assert.rejects(hubRegistry(H1).get('mover-reset'), (e) => e.name === 'DeviceNotFoundError');

  const key2 = await movable('mover-never', { updateHubAssignment: false, migrateDeviceData: false });
  await register(SCOPE, 'mqtt', 'mover-never', key2, { want: H1 });
  const stay = await register(SCOPE, 'mqtt', 'mover-never', key2, { want: H2 });
  assert.equal(stay.assignedHub, H1);
  assert.equal(stay.substatus, 'initialAssignment');
  await assert.rejects(hubRegistry(H2).get('mover-never'), (e) => e.name === 'DeviceNotFoundError');
});

test('every webhook failure fails the registration with a code and a message', async () => {
  const key = KEY(9);
  const cases = [
    ['no-hub', () => ({ status: 200, body: { payload: {} } }), 400208, /iotHubHostName/],
    ['unauthorized', () => ({ status: 401, body: {} }), 400209, /401|unauthori/i],
    ['bad-request', () => ({ status: 400, body: {} }), 400207, /status code: 400/],
    ['unlinked', () => ({ status: 200, body: { iotHubHostName: 'elsewhere.example.com' } }), 400207, /elsewhere\.example\.com.*linked|linked.*elsewhere/],
    ['bad-json', () => ({ status: 200, body: '{"iotHubHostName": ' }), 400207, /JSON/],
    ['timeout', () => null, 400207, /timed out/],
    ['always-503', () => ({ status: 503, body: {} }), 400207, /3 attempts/],
  ];
  for (const [name, handler, code, message] of cases) {
    const regId = `hook-${name}`
    await svc.createOrUpdateIndividualEnrollment({
      registrationId: regId,
      attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: key, secondaryKey: KEY(10) } },
      allocationPolicy: 'custom',
      customAllocationDefinition: { webhookUrl: hook.url(`/${name}`), apiVersion: '2021-10-01' },
    });
    hook.handler = handler;
    const state = await failedState(register(SCOPE, 'mqtt', regId, key));
    assert.equal(state.status, 'failed', name);
    assert.equal(state.errorCode, code, `${name}: ${state.errorMessage}`);
    assert.match(state.errorMessage, message, name);
    const stored = (await svc.getDeviceRegistrationState(regId)).responseBody;
    assert.equal(stored.errorCode, code);
  }

  // TLS: a webhook whose certificate nobody trusts.
  await svc.createOrUpdateIndividualEnrollment({
    registrationId: 'hook-tls',
    attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: key, secondaryKey: KEY(10) } },
    allocationPolicy: 'custom',
    customAllocationDefinition: { webhookUrl: rogue.url('/x'), apiVersion: '2021-10-01' },
  });
  rogue.handler = () => ({ status: 200, body: { iotHubHostName: H1 } });
  const tls = await failedState(register(SCOPE, 'https', 'hook-tls', key));
  assert.equal(tls.errorCode, 400207);
  assert.match(tls.errorMessage, /TLS|certificate/i);
  assert.equal(rogue.calls.length, 0, 'no request reached the untrusted server');

  // 503 then 200: retried, assigned, both calls logged.
  await svc.createOrUpdateIndividualEnrollment({
    registrationId: 'hook-retry',
    attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: key, secondaryKey: KEY(10) } },
    allocationPolicy: 'custom',
    customAllocationDefinition: { webhookUrl: hook.url('/retry'), apiVersion: '2021-10-01' },
  });
  let n = 0;
  hook.handler = () => (n++ === 0 ? { status: 503, body: {} } : { status: 200, body: { iotHubHostName: H1 } });
  const ok = await register(SCOPE, 'https', 'hook-retry', key);
  assert.equal(ok.assignedHub, H1);
  const log = server.cli(['webhook', 'calls', 'hook-retry']);
  assert.equal(log.code, 0, log.stderr);
  assert.equal(log.stdout.trim().split('\n').length, 2, log.stdout);
  assert.match(log.stdout, /-> 503 .*retry/);
  assert.match(log.stdout, /-> 200 .*hub hub1\.fleethub\.test/);
  // Deleting the registration deletes its webhook call records.
  await svc.deleteDeviceRegistrationState('hook-retry');
  const gone = server.cli(['webhook', 'calls', 'hook-retry']);
  assert.equal(gone.code, 0, gone.stderr);
  assert.equal(gone.stdout.trim(), 'no webhook calls recorded for hook-retry');
});

test('a wrong key is refused over MQTT and HTTPS; a disabled enrollment answers disabled', async () => {
  const key = KEY(11);
  await svc.createOrUpdateIndividualEnrollment({
    registrationId: 'guarded',
    attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: key, secondaryKey: KEY(12) } },
  });
  await assert.rejects(register(SCOPE, 'mqtt', 'guarded', KEY(13)), /not authorized/i);
  await assert.rejects(register(SCOPE, 'https', 'guarded', KEY(13)), (e) => e.name === 'UnauthorizedError');
  // Another registration's key does not open this one.
  await assert.rejects(register(SCOPE, 'https', 'guarded', deriveKey(KEY(3), 'guarded')), (e) => e.name === 'UnauthorizedError');
  await assert.rejects(svc.getDeviceRegistrationState('guarded'), notFound);

  const e = (await svc.getIndividualEnrollment('guarded')).responseBody;
  e.provisioningStatus = 'disabled';
  await svc.createOrUpdateIndividualEnrollment(e);
  for (const t of ['mqtt', 'https']) {
    const err = await register(SCOPE, t, 'guarded', key).then(() => null, (x) => x);
    assert.ok(err, `disabled enrollment must not register over ${t}`);
    assert.equal(err.result.status, 'disabled', `${t}: ${err}`);
  }
  await assert.rejects(svc.getDeviceRegistrationState('guarded'), notFound);
});

test('CLI registration show|list|delete; read-only policy refused writes; a disabled group answers disabled', async () => {
  const groupKey = KEY(21);
  const group = {
    enrollmentGroupId: 'cli-group',
    attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: groupKey, secondaryKey: KEY(22) } },
    allocationPolicy: 'static',
    iotHubs: [H2],
  };
  await svc.createOrUpdateEnrollmentGroup(group);
  for (const id of ['cli-dev-1', 'cli-dev-2']) {
    const state = await register(SCOPE, 'mqtt', id, deriveKey(groupKey, id));
    assert.equal(state.assignedHub, H2);
  }
  await svc.createOrUpdateIndividualEnrollment({
    registrationId: 'cli-solo',
    attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: KEY(23), secondaryKey: KEY(24) } },
  });
  assert.ok((await register(SCOPE, 'https', 'cli-solo', KEY(23))).assignedHub);

  const show = server.cli(['registration', 'show', 'cli-dev-1']);
  assert.equal(show.code, 0, show.stderr);
  const shown = JSON.parse(show.stdout);
  assert.equal(shown.registrationId, 'cli-dev-1');
  assert.equal(shown.assignedHub, H2);
  assert.equal(shown.status, 'assigned');
  assert.ok(!Object.keys(shown).some((k) => k.startsWith('_')), `internal fields leak: ${show.stdout}`);
  const inGroup = server.cli(['registration', 'list', '--group', 'cli-group']);
  assert.equal(inGroup.code, 0, inGroup.stderr);
  assert.match(inGroup.stdout, /cli-dev-1/);
  assert.match(inGroup.stdout, /cli-dev-2/);
  assert.doesNotMatch(inGroup.stdout, /cli-solo/, 'only this group');
  const all = server.cli(['registration', 'list']);
  assert.equal(all.code, 0, all.stderr);
  assert.match(all.stdout, /cli-dev-2/);
  assert.match(all.stdout, /cli-solo/);
  const del = server.cli(['registration', 'delete', 'cli-dev-1']);
  assert.equal(del.code, 0, del.stderr);
  const gone = server.cli(['registration', 'show', 'cli-dev-1']);
  assert.equal(gone.code, 1);
  assert.match(gone.stderr, /not found|404/i);
  await assert.rejects(svc.getDeviceRegistrationState('cli-dev-1'), notFound);

  // enrollmentread: reads work, every write is refused and changes nothing.
  const readCs = server.cli(['dps', 'connection-string', '--policy-name', 'enrollmentread']);
  assert.equal(readCs.code, 0, readCs.stderr);
  assert.match(readCs.stdout.trim(), new RegExp(`^HostName=${DPS};SharedAccessKeyName=enrollmentread;SharedAccessKey=\\S+$`));
  const reader = ProvisioningServiceClient.fromConnectionString(readCs.stdout.trim());
  const seen = (await reader.getEnrollmentGroup('cli-group')).responseBody;
  assert.equal(seen.enrollmentGroupId, 'cli-group');
  assert.equal((await reader.getDeviceRegistrationState('cli-dev-2')).responseBody.assignedHub, H2);
  const refused = (e) => (e.response?.statusCode ?? e.responseBody?.statusCode) === 401 || e.name === 'UnauthorizedError';
  await assert.rejects(reader.createOrUpdateEnrollmentGroup({ ...seen, allocationPolicy: 'hashed', iotHubs: [] }), refused);
  await assert.rejects(reader.deleteEnrollmentGroup('cli-group'), refused);
  await assert.rejects(reader.deleteDeviceRegistrationState('cli-dev-2'), refused);
  await assert.rejects(reader.createOrUpdateIndividualEnrollment({
    registrationId: 'by-reader', attestation: { type: 'symmetricKey', symmetricKey: {} },
  }), refused);
  const after = (await svc.getEnrollmentGroup('cli-group')).responseBody;
  assert.equal(after.etag, seen.etag, 'the group is unchanged');
  assert.equal(after.allocationPolicy, 'static');
  assert.equal((await svc.getDeviceRegistrationState('cli-dev-2')).responseBody.status, 'assigned');
  await assert.rejects(svc.getIndividualEnrollment('by-reader'), notFound);
  const unknown = server.cli(['dps', 'connection-string', '--policy-name', 'nosuchpolicy']);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /no policy nosuchpolicy.*provisioningserviceowner, enrollmentread, enrollmentwrite/);

  // The hubs' other policies, the same way: registryRead reads, never writes.
  const hubRead = server.cli(['hub', 'connection-string', '--hub', H2, '--policy-name', 'registryRead']);
  assert.equal(hubRead.code, 0, hubRead.stderr);
  assert.match(hubRead.stdout.trim(), new RegExp(`^HostName=${H2};SharedAccessKeyName=registryRead;SharedAccessKey=\\S+$`));
  const hubReader = Registry.fromConnectionString(hubRead.stdout.trim());
  assert.equal((await hubReader.get('cli-dev-2')).responseBody.deviceId, 'cli-dev-2');
  await assert.rejects(hubReader.create({ deviceId: 'by-reader' }), (e) => e.response?.statusCode === 401);
  await assert.rejects(hubRegistry(H2).get('by-reader'), notFound);
  const noHubPolicy = server.cli(['hub', 'connection-string', '--hub', H2, '--policy-name', 'nosuch']);
  assert.equal(noHubPolicy.code, 1);
  assert.match(noHubPolicy.stderr, /known: iothubowner, service, device, registryRead, registryReadWrite/);

  // enrollmentwrite may write.
  const writeCs = server.cli(['dps', 'connection-string', '--policy-name', 'enrollmentwrite']).stdout.trim();
  const writer = ProvisioningServiceClient.fromConnectionString(writeCs);
  const disabled = (await writer.createOrUpdateEnrollmentGroup({ ...after, provisioningStatus: 'disabled' })).responseBody;
  assert.equal(disabled.provisioningStatus, 'disabled');

  // A disabled group: new and known devices answer disabled, nothing stored.
  for (const [id, t] of [['cli-dev-3', 'mqtt'], ['cli-dev-2', 'https']]) {
    const err = await register(SCOPE, t, id, deriveKey(groupKey, id)).then(() => null, (x) => x);
    assert.ok(err, `${id}: a disabled group must not register`);
    assert.equal(err.result.status, 'disabled', `${id}: ${err}`);
  }
  await assert.rejects(svc.getDeviceRegistrationState('cli-dev-3'), notFound);
  await assert.rejects(hubRegistry(H2).get('cli-dev-3'), notFound);
});

test('service API: etags (412), generated keys, validation, queries with paging, bulk, attestation', async () => {
  const made = (await svc.createOrUpdateIndividualEnrollment({ registrationId: 'svc-1', attestation: { type: 'symmetricKey' } })).responseBody;
  const keys = made.attestation.symmetricKey;
  assert.equal(Buffer.from(keys.primaryKey, 'base64').length, 64, 'generated keys');
  assert.notEqual(keys.primaryKey, keys.secondaryKey);
  const mech = (await svc.getIndividualEnrollmentAttestationMechanism('svc-1')).responseBody;
  assert.equal(mech.symmetricKey.primaryKey, keys.primaryKey);

  const updated = (await svc.createOrUpdateIndividualEnrollment({ ...made, initialTwin: { tags: { v: 2 }, properties: { desired: {} } } })).responseBody;
  assert.notEqual(updated.etag, made.etag);
  assert.equal(updated.attestation.symmetricKey.primaryKey, keys.primaryKey, 'keys kept on update');
  assert.equal(updated.createdDateTimeUtc, made.createdDateTimeUtc);
  const stale = await svc.createOrUpdateIndividualEnrollment({ ...made, provisioningStatus: 'disabled' }).then(() => null, (x) => x);
  assert.ok(stale, 'a stale etag must be refused');
  assert.equal(stale.response?.statusCode ?? stale.responseBody?.statusCode, 412, `${stale}`);
  assert.equal((await svc.getIndividualEnrollment('svc-1')).responseBody.provisioningStatus, 'enabled', 'nothing changed');

  for (const [bad, why] of [
    [{ registrationId: 'svc-bad', attestation: { type: 'symmetricKey' }, allocationPolicy: 'custom' }, /customAllocationDefinition/],
    [{ registrationId: 'svc-bad', attestation: { type: 'symmetricKey' }, iotHubs: ['nothere.example.com'] }, /nothere\.example\.com/],
    [{ registrationId: 'svc-bad', attestation: { type: 'symmetricKey' }, allocationPolicy: 'custom',
      customAllocationDefinition: { webhookUrl: 'http://example.com/hook', apiVersion: '2021-10-01' } }, /http/],
  ]) {
    const err = await svc.createOrUpdateIndividualEnrollment(bad).then(() => null, (x) => x);
    assert.ok(err, JSON.stringify(bad));
    assert.equal(err.name, 'ArgumentError', `${err}`);
    assert.match(err.responseBody?.message ?? JSON.stringify(err.response?.body ?? '') + err.message, why);
  }

  const q = svc.createIndividualEnrollmentQuery({ query: 'SELECT * FROM enrollments' }, 2);
  const seen = [];
  let page = (await q.next()).responseBody;
  assert.equal(page.length, 2);
  seen.push(...page);
  while (q.hasMoreResults) {
    page = (await q.next(q.continuationToken)).responseBody;
    assert.ok(page.length <= 2);
    seen.push(...page);
  }
  const ids = seen.map((e) => e.registrationId);
  assert.equal(new Set(ids).size, ids.length, 'no duplicates across pages');
  assert.ok(ids.includes('svc-1') && ids.includes('guarded') && ids.includes('ind-mqtt-1'));

  const bulk = (op) => new Promise((resolve, reject) => svc.runBulkEnrollmentOperation(op, (err, res) => (err ? reject(err) : resolve(res))));
  const r = await bulk({ mode: 'create', enrollments: [
    { registrationId: 'bulk-1', attestation: { type: 'symmetricKey' } },
    { registrationId: 'bulk-2', attestation: { type: 'symmetricKey' } },
    { registrationId: 'svc-1', attestation: { type: 'symmetricKey' } },
  ] });
  assert.equal(r.isSuccessful, false);
  assert.deepEqual(r.errors.map((e) => e.registrationId), ['svc-1'], 'only the existing one fails');
  assert.equal((await svc.getIndividualEnrollment('bulk-2')).responseBody.registrationId, 'bulk-2');
  const d = await bulk({ mode: 'delete', enrollments: [{ registrationId: 'bulk-1' }, { registrationId: 'bulk-2' }] });
  assert.equal(d.isSuccessful, true);
  await assert.rejects(svc.getIndividualEnrollment('bulk-1'), notFound);

  await svc.deleteIndividualEnrollment('svc-1');
  await assert.rejects(svc.getIndividualEnrollment('svc-1'), notFound);
  await svc.deleteDeviceRegistrationState('hashed-dev-s');
  await assert.rejects(svc.getDeviceRegistrationState('hashed-dev-s'), notFound);
});

test('a registration interrupted by a crash is finished after the restart', async () => {
  const key = KEY(14);
  await svc.createOrUpdateIndividualEnrollment({
    registrationId: 'crash-1',
    attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: key, secondaryKey: KEY(15) } },
    allocationPolicy: 'custom',
    customAllocationDefinition: { webhookUrl: hook.url('/crash'), apiVersion: '2021-10-01' },
  });
  hook.calls.length = 0;
  hook.handler = () => null; // the first call hangs
  const pending = register(SCOPE, 'https', 'crash-1', key).catch((e) => e);
  await waitFor(() => hook.calls.length > 0, 10000, 'the webhook call');
  await server.kill();
  await pending;
  hook.handler = () => ({ status: 200, body: { iotHubHostName: H1, payload: { resumed: true } } });
  await server.start();
  svc = ProvisioningServiceClient.fromConnectionString(server.dpsCs);
  const st = await waitFor(async () => {
    const s = (await svc.getDeviceRegistrationState('crash-1').catch(() => null))?.responseBody;
    return s?.status === 'assigned' ? s : null;
  }, 15000, 'the resumed registration');
  assert.equal(st.assignedHub, H1);
  assert.deepEqual(st.payload, { resumed: true });
  // The device, registering again, gets the same answer shape.
  const again = await register(SCOPE, 'mqtt', 'crash-1', key);
  assert.equal(again.assignedHub, H1);
});

test('identity rules: a device disabled on its hub stays disabled; new keys close its live session on the target hub', async () => {
  const { mqttDevice } = require('./lib/server');
  await svc.createOrUpdateEnrollmentGroup({
    enrollmentGroupId: 'rotating-group',
    attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: KEY(30), secondaryKey: KEY(31) } },
    allocationPolicy: 'static', iotHubs: [H1],
  });
  const regId = 'rot-dev-1';
  const key1 = deriveKey(KEY(30), regId);
  let state = await register(SCOPE, 'mqtt', regId, key1);
  assert.equal(state.assignedHub, H1);

  // The operator disables the device on the hub; it registers again: the
  // DPS assigns it, and the hub's status stays the operator's.
  const reg = hubRegistry(H1);
  const dev = (await reg.get(regId)).responseBody;
  await reg.update({ ...dev, status: 'disabled' });
  state = await register(SCOPE, 'https', regId, key1);
  assert.equal(state.status, 'assigned');
  assert.equal((await reg.get(regId)).responseBody.status, 'disabled', 're-registration re-enabled a disabled device');
  await reg.update({ ...(await reg.get(regId)).responseBody, status: 'enabled' });

  // Connected with its current key; the group's keys are rotated and the
  // device registers again with its new derived key: the hub identity gets
  // the new keys, and the connection made with the old one is closed.
  const { c } = await mqttDevice(server, regId, key1, { clean: false }, H1);
  const closed = new Promise((resolve) => c.once('close', resolve));
  const group = (await svc.getEnrollmentGroup('rotating-group')).responseBody;
  group.attestation.symmetricKey = { primaryKey: KEY(32), secondaryKey: KEY(33) };
  await svc.createOrUpdateEnrollmentGroup(group);
  const key2 = deriveKey(KEY(32), regId);
  state = await register(SCOPE, 'mqtt', regId, key2);
  assert.equal(state.assignedHub, H1);
  await withTimeout(closed, 5000, 'the connection made with the old key to close');
  assert.equal((await reg.get(regId)).responseBody.authentication.symmetricKey.primaryKey, key2);
  await assert.rejects(mqttDevice(server, regId, key1, {}, H1), /Not authorized/i, 'the old key is refused');
  const { c: c2 } = await mqttDevice(server, regId, key2, {}, H1);
  c2.end(true);
});

test('service API queries with WHERE and TOP in the IoT Hub query language; a bad query is a 400 that says where', async () => {
  const all = async (q) => {
    const out = [];
    let page = (await q.next()).responseBody;
    out.push(...page);
    while (q.hasMoreResults) {
      page = (await q.next(q.continuationToken)).responseBody;
      out.push(...page);
    }
    return out;
  };
  for (const [id, policy] of [['qw-1', 'hashed'], ['qw-2', 'static'], ['qw-3', 'static']]) {
    await svc.createOrUpdateIndividualEnrollment({
      registrationId: id, allocationPolicy: policy, iotHubs: [H1],
      attestation: { type: 'symmetricKey', symmetricKey: {} },
      initialTwin: { tags: { line: id === 'qw-3' ? 'b' : 'a' }, properties: { desired: {} } },
    });
  }
  const statics = await all(svc.createIndividualEnrollmentQuery(
    { query: "SELECT * FROM enrollments WHERE allocationPolicy = 'static' AND STARTSWITH(registrationId, 'qw-')" }, 1));
  assert.deepEqual(statics.map((e) => e.registrationId).sort(), ['qw-2', 'qw-3']);
  const lineB = await all(svc.createIndividualEnrollmentQuery(
    { query: "SELECT * FROM enrollments WHERE initialTwin.tags.line = 'b'" }));
  assert.deepEqual(lineB.map((e) => e.registrationId), ['qw-3']);
  const undefinedIsNotNull = await all(svc.createIndividualEnrollmentQuery(
    { query: "SELECT * FROM enrollments WHERE registrationId IN ['qw-1', 'qw-2'] AND initialTwin.tags.nothing = null" }));
  assert.equal(undefinedIsNotNull.length, 0);
  const top = svc.createIndividualEnrollmentQuery({ query: 'SELECT TOP 2 * FROM enrollments' });
  assert.equal((await top.next()).responseBody.length, 2);
  assert.equal(top.hasMoreResults, false, 'TOP ends with its page');
  await svc.createOrUpdateEnrollmentGroup({
    enrollmentGroupId: 'qw-group', allocationPolicy: 'static', iotHubs: [H1],
    attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: KEY(40), secondaryKey: KEY(41) } },
  });
  await register(SCOPE, 'https', 'qw-dev-1', deriveKey(KEY(40), 'qw-dev-1'));
  const states = await all(svc.createEnrollmentGroupDeviceRegistrationStateQuery(
    { query: "SELECT * FROM enrollments WHERE status = 'assigned' AND assignedHub = 'hub1.fleethub.test'" }, 'qw-group'));
  assert.deepEqual(states.map((r) => r.registrationId), ['qw-dev-1']);
  const none = await all(svc.createEnrollmentGroupDeviceRegistrationStateQuery(
    { query: "SELECT * FROM enrollments WHERE status = 'failed'" }, 'qw-group'));
  assert.equal(none.length, 0);

  const bad = await rest(server.dpsCs, 'POST', '/enrollments/query?api-version=2021-10-01',
    { query: 'SELECT * FROM enrollments WHERE allocationPolicy = ' });
  assert.equal(bad.status, 400);
  assert.match(bad.body.message, /^the query is not valid: at 51: the query ends where a value is expected/);
  const wrongFrom = await rest(server.dpsCs, 'POST', '/enrollments/query?api-version=2021-10-01',
    { query: 'SELECT * FROM devices' });
  assert.equal(wrongFrom.status, 400);
  assert.match(wrongFrom.body.message, /names the hub's devices/);
  const star = await rest(server.dpsCs, 'POST', '/enrollments/query?api-version=2021-10-01', { query: '*' });
  assert.equal(star.status, 200);
});

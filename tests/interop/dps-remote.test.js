// The DPS with a REMOTE linked hub: two fleethub processes. R serves the
// hub hub2.fleethub.test (127.0.0.5) and nothing else; D serves the DPS
// (127.0.0.3) and a local hub hub1.fleethub.test (127.0.0.4), and reaches R
// only through R's service REST API with R's owner connection string
// (linked_hub_connection_string), trusting the test CA (webhook_ca). The
// name hub2.fleethub.test resolves for the Node SDKs only (lib/resolve.js),
// so D is told where to dial it (linked_hub_addresses); TLS still checks
// the name. Official SDKs throughout: azure-iot-provisioning-service for
// enrollments, azure-iot-provisioning-device(-mqtt/-http) to register,
// azure-iothub against R and D's hub to check, azure-iot-device to connect.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const https = require('https');
const path = require('path');
const { Client } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { Registry } = require('azure-iothub');
const { ProvisioningServiceClient } = require('azure-iot-provisioning-service');
const { Server, deviceCs, withTimeout, report } = require('./lib/server');
const { deriveKey, register, CERTS, DPS } = require('./lib/dps');

const H1 = 'hub1.fleethub.test'; // local to D
const H2 = 'hub2.fleethub.test'; // served by R
const H2_IP = '127.0.0.5';       // R's hub again, by address: linked with a wrong key
const SCOPE = '0ne00BEEF2';
const DPS_KEY = Buffer.alloc(32, 0x45).toString('base64');
const R_KEY = Buffer.alloc(32, 0x52).toString('base64');
const WRONG_KEY = Buffer.alloc(32, 0x57).toString('base64');
const KEY = (n) => Buffer.alloc(32, n).toString('base64');
const R_CS = `HostName=${H2};SharedAccessKeyName=iothubowner;SharedAccessKey=${R_KEY}`;

// The DPS tests' known keep-alive issue (see dps.test.js): one connection
// per request.
https.globalAgent = new https.Agent({ keepAlive: false });

let remote; // R
let local;  // D
let svc;

const registry = (hub) => Registry.fromConnectionString(hub === H2 ? R_CS : local.ownerCs(H1));

function notFound(e) {
  return e.name === 'DeviceNotFoundError' || e.response?.statusCode === 404;
}

async function gone(hub, deviceId) {
  await assert.rejects(registry(hub).get(deviceId), notFound, `${deviceId} must not exist on ${hub}`);
}

async function connectedTwin(state, key) {
  const client = Client.fromConnectionString(deviceCs(state.assignedHub, state.deviceId, key), Mqtt);
  await withTimeout(client.open(), 10000, `open ${state.deviceId} on ${state.assignedHub}`);
  const twin = await withTimeout(client.getTwin(), 10000, 'getTwin');
  return { client, twin };
}

async function failedState(promise) {
  const err = await promise.then(() => null, (e) => e);
  assert.ok(err, 'registration must fail');
  assert.match(err.name, /RegistrationFailedError$/, `${err}`);
  return err.result.registrationState;
}

async function enroll(registrationId, key, extra) {
  await svc.createOrUpdateIndividualEnrollment({
    registrationId,
    attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: key, secondaryKey: KEY(99) } },
    ...extra,
  });
}

// Changes an individual enrollment in place (etag kept: a real update).
async function amend(registrationId, change) {
  const e = (await svc.getIndividualEnrollment(registrationId)).responseBody;
  Object.assign(e, change);
  await svc.createOrUpdateIndividualEnrollment(e);
}

before(async () => {
  remote = await new Server({
    name: 'remote-hub', mqtt: '', https: '',
    hubs: [{ name: H2, mqtt: '127.0.0.5:8883', https: '127.0.0.5:443', ownerKey: R_KEY }],
  }).start();
  assert.equal(remote.ownerCs(H2), R_CS);
  local = await new Server({
    name: 'dps-remote', mqtt: '', https: '',
    hubs: [{ name: H1, mqtt: '127.0.0.4:8883', https: '127.0.0.4:443' }],
    dps: {
      name: DPS,
      lines: [
        `id_scope = ${SCOPE}`, `owner_key = ${DPS_KEY}`,
        `linked_hubs = ${H1}`,
        // One per line: a line holds at most 198 characters.
        `linked_hub_connection_string = ${R_CS}`,
        `linked_hub_connection_string = HostName=${H2_IP};SharedAccessKeyName=iothubowner;SharedAccessKey=${WRONG_KEY}`,
        `linked_hub_addresses = ${H2}=127.0.0.5:443`,
        `webhook_ca = ${path.join(CERTS, 'dps-trust.pem')}`,
        'mqtt_listen = 127.0.0.3:8883', 'https_listen = 127.0.0.3:443',
      ],
    },
  }).start();
  assert.equal(local.idScope, SCOPE);
  svc = ProvisioningServiceClient.fromConnectionString(local.dpsCs);
});

after(async () => {
  await local?.stop();
  await remote?.stop();
});

test('individual enrollment, static on the remote hub: identity, key and initial twin on R; the device connects there', async () => {
  const key = KEY(1);
  await enroll('far-1', key, {
    deviceId: 'far-device-1', allocationPolicy: 'static', iotHubs: [H2],
    initialTwin: { tags: { site: 'remote-lab' }, properties: { desired: { interval: 30 } } },
  });
  const state = await register(SCOPE, 'mqtt', 'far-1', key);
  assert.equal(state.status, 'assigned');
  assert.equal(state.assignedHub, H2);
  assert.equal(state.deviceId, 'far-device-1');
  assert.equal(state.substatus, 'initialAssignment');

  const dev = (await registry(H2).get('far-device-1')).responseBody;
  assert.equal(dev.status, 'enabled');
  assert.equal(dev.authentication.type, 'sas');
  assert.equal(dev.authentication.symmetricKey.primaryKey, key, 'the attested key');
  assert.equal(dev.authentication.symmetricKey.secondaryKey, KEY(99));
  const t = (await registry(H2).getTwin('far-device-1')).responseBody;
  assert.equal(t.tags.site, 'remote-lab');
  assert.equal(t.properties.desired.interval, 30);
  await gone(H1, 'far-device-1');

  const { client, twin } = await connectedTwin(state, key);
  assert.equal(twin.properties.desired.interval, 30);
  await report(twin, { booted: true });
  await client.close();

  // Registering again (same hub, the default policy migrates): R's twin is
  // kept as it is, not reset to the initial one.
  await registry(H2).updateTwin('far-device-1', { properties: { desired: { interval: 5 } } }, '*');
  const again = await register(SCOPE, 'https', 'far-1', KEY(99));
  assert.equal(again.assignedHub, H2);
  assert.equal(again.deviceId, 'far-device-1');
  const kept = (await registry(H2).getTwin('far-device-1')).responseBody;
  assert.equal(kept.properties.desired.interval, 5);
  assert.equal(kept.properties.reported.booted, true);
  const rs = (await svc.getDeviceRegistrationState('far-1')).responseBody;
  assert.equal(rs.assignedHub, H2);
  assert.equal(rs.status, 'assigned');
});

test('group enrollment hashed over the local and the remote hub: devices land on both and connect where they were sent', async () => {
  const groupKey = KEY(3);
  await svc.createOrUpdateEnrollmentGroup({
    enrollmentGroupId: 'split-group',
    attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: groupKey, secondaryKey: KEY(4) } },
    allocationPolicy: 'hashed', iotHubs: [H1, H2],
    initialTwin: { tags: { group: 'split' }, properties: { desired: { fw: '1.0' } } },
  });
  const ids = Array.from({ length: 8 }, (_, i) => `split-${i}`);
  const states = await Promise.all(ids.map((id, i) =>
    register(SCOPE, i % 2 ? 'mqtt' : 'https', id, deriveKey(groupKey, id))));
  assert.deepEqual([...new Set(states.map((s) => s.assignedHub))].sort(), [H1, H2], 'both hubs get devices');
  for (const s of states) {
    const other = s.assignedHub === H1 ? H2 : H1;
    const dev = (await registry(s.assignedHub).get(s.deviceId)).responseBody;
    assert.equal(dev.authentication.symmetricKey.primaryKey, deriveKey(groupKey, s.registrationId));
    await gone(other, s.deviceId);
  }
  // One device of each hub connects with its derived key and reads the
  // group's initial twin.
  for (const hub of [H1, H2]) {
    const s = states.find((x) => x.assignedHub === hub);
    const { client, twin } = await connectedTwin(s, deriveKey(groupKey, s.registrationId));
    assert.equal(twin.properties.desired.fw, '1.0', hub);
    await client.close();
    assert.equal((await registry(hub).getTwin(s.deviceId)).responseBody.tags.group, 'split');
  }
});

test('reprovisioning across processes: migrate remote -> local and local -> remote, reset both ways', async () => {
  const key = KEY(5);
  const initialTwin = { tags: { origin: 'enrollment' }, properties: { desired: { mode: 'initial' } } };
  const migrate = { updateHubAssignment: true, migrateDeviceData: true };
  const reset = { updateHubAssignment: true, migrateDeviceData: false };

  // Remote -> local with migrate: R's twin (tags, desired, reported) moves
  // to hub1, the identity on R is deleted.
  await enroll('mover', key, { allocationPolicy: 'static', iotHubs: [H2], reprovisionPolicy: migrate, initialTwin });
  const first = await register(SCOPE, 'mqtt', 'mover', key);
  assert.equal(first.assignedHub, H2);
  const c1 = await connectedTwin(first, key);
  await report(c1.twin, { firmware: '2.0.1' });
  await c1.client.close();
  await registry(H2).updateTwin('mover', { tags: { owner: 'ops' }, properties: { desired: { mode: 'tuned' } } }, '*');

  await amend('mover', { iotHubs: [H1] });
  const moved = await register(SCOPE, 'mqtt', 'mover', key);
  assert.equal(moved.assignedHub, H1);
  assert.equal(moved.substatus, 'deviceDataMigrated');
  const t1 = (await registry(H1).getTwin('mover')).responseBody;
  assert.equal(t1.tags.owner, 'ops');
  assert.equal(t1.tags.origin, 'enrollment');
  assert.equal(t1.properties.desired.mode, 'tuned');
  assert.equal(t1.properties.reported.firmware, '2.0.1');
  await gone(H2, 'mover');
  const c2 = await connectedTwin(moved, key);
  assert.equal(c2.twin.properties.desired.mode, 'tuned');
  await c2.client.close();

  // Local -> remote with migrate: hub1's tags and desired properties go to
  // R (a service cannot write reported properties), hub1's identity goes.
  await registry(H1).updateTwin('mover', { tags: { rack: 'b7' }, properties: { desired: { mode: 'eco' } } }, '*');
  await amend('mover', { iotHubs: [H2] });
  const back = await register(SCOPE, 'https', 'mover', key);
  assert.equal(back.assignedHub, H2);
  assert.equal(back.substatus, 'reprovisionedToInitialAssignment');
  const t2 = (await registry(H2).getTwin('mover')).responseBody;
  assert.equal(t2.tags.owner, 'ops');
  assert.equal(t2.tags.rack, 'b7');
  assert.equal(t2.properties.desired.mode, 'eco');
  await gone(H1, 'mover');
  const c3 = await connectedTwin(back, key);
  assert.equal(c3.twin.properties.desired.mode, 'eco');
  await c3.client.close();

  // Remote -> local with reset: hub1 starts from the initial twin, R's
  // identity is deleted.
  await amend('mover', { iotHubs: [H1], reprovisionPolicy: reset });
  const r1 = await register(SCOPE, 'mqtt', 'mover', key);
  assert.equal(r1.assignedHub, H1);
  assert.equal(r1.substatus, 'deviceDataReset');
  const t3 = (await registry(H1).getTwin('mover')).responseBody;
  assert.equal(t3.properties.desired.mode, 'initial');
  assert.equal(t3.tags.origin, 'enrollment');
  assert.equal(t3.tags.owner, undefined);
  await gone(H2, 'mover');

  // Local -> remote with reset: R starts from the initial twin, hub1's
  // identity is deleted.
  await registry(H1).updateTwin('mover', { properties: { desired: { mode: 'tuned-again' } } }, '*');
  await amend('mover', { iotHubs: [H2] });
  const r2 = await register(SCOPE, 'https', 'mover', key);
  assert.equal(r2.assignedHub, H2);
  assert.equal(r2.substatus, 'reprovisionedToInitialAssignment');
  const t4 = (await registry(H2).getTwin('mover')).responseBody;
  assert.equal(t4.properties.desired.mode, 'initial');
  assert.equal(t4.tags.rack, undefined);
  await gone(H1, 'mover');
  const c4 = await connectedTwin(r2, key);
  assert.equal(c4.twin.properties.desired.mode, 'initial');
  await c4.client.close();
});

test('a remote hub with a wrong key, or stopped, fails the registration with a message; the DPS stays up', async () => {
  const key = KEY(7);
  // The connection string for R by address carries a wrong key: R refuses.
  await enroll('wrong-key', key, { allocationPolicy: 'static', iotHubs: [H2_IP] });
  const refused = await failedState(register(SCOPE, 'mqtt', 'wrong-key', key));
  assert.equal(refused.status, 'failed');
  assert.ok(refused.errorCode >= 400000, `${refused.errorCode}`);
  assert.match(refused.errorMessage, /linked hub 127\.0\.0\.5 refused the DPS's credentials \(401\)/, refused.errorMessage);
  assert.match(refused.errorMessage, /SharedAccessKey of its linked_hub_connection_string/);
  const stored = (await svc.getDeviceRegistrationState('wrong-key')).responseBody;
  assert.equal(stored.errorCode, refused.errorCode);

  // R stopped: the device registered in the first test cannot be (re)assigned
  // there; the answer comes at once, not after a hang.
  await remote.stop();
  const t0 = Date.now();
  const down = await failedState(register(SCOPE, 'https', 'far-1', KEY(1)));
  assert.ok(Date.now() - t0 < 15000, `took ${Date.now() - t0} ms`);
  assert.match(down.errorMessage,
    /linked hub hub2\.fleethub\.test \(dialled at 127\.0\.0\.5:443\) could not be reached: connection refused/,
    down.errorMessage);

  // D is still up: the local hub takes registrations, the service API answers.
  assert.equal(local.proc.exitCode, null, 'the DPS process is running');
  await enroll('near-1', key, { allocationPolicy: 'static', iotHubs: [H1] });
  const near = await register(SCOPE, 'mqtt', 'near-1', key);
  assert.equal(near.assignedHub, H1);
  assert.equal((await svc.getDeviceRegistrationState('far-1')).responseBody.status, 'failed');

  // R back (same data directory and key): the next registration succeeds.
  await remote.start();
  const back = await register(SCOPE, 'mqtt', 'far-1', KEY(1));
  assert.equal(back.assignedHub, H2);
  assert.equal(back.deviceId, 'far-device-1');
  assert.equal((await registry(H2).get('far-device-1')).responseBody.authentication.symmetricKey.primaryKey, KEY(1));
});

// The authorization matrix: every service REST route of the hub and of the
// DPS against every shared access policy (keys from `fleethub ...
// connection-string --policy-name`), plus tokens that must open nothing:
// device and DPS registration tokens, tokens for another host name, the hub's
// policies on the DPS and back, expired tokens and unknown key names. An
// allowed cell is answered (2xx, or 404 for what does not exist); a
// forbidden one is 401 and the owner sees nothing changed.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { SharedAccessSignature } = require('azure-iot-common');
const { Server, rest } = require('./lib/server');

const HUB_API = 'api-version=2021-04-12';
const DPS_API = 'api-version=2021-10-01';
const READ = 'registryRead';
const RW = 'registryReadWrite';
const SVC = 'service';
const DEV = 'device';
const OWNER = 'iothubowner';

let server;
const hubCs = {};
const dpsCs = {};

function cli(args) {
  const r = server.cli(args);
  assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
  return r.stdout.trim();
}

const keyOf = (cs) => /SharedAccessKey=([^;]+)/.exec(cs)[1];
const token = (sr, key, skn, ttl = 600) =>
  SharedAccessSignature.create(encodeURIComponent(sr), skn, key, Math.floor(Date.now() / 1000) + ttl).toString();
const attestation = { type: 'symmetricKey', symmetricKey: { primaryKey: Buffer.alloc(32, 7).toString('base64'), secondaryKey: Buffer.alloc(32, 8).toString('base64') } };

before(async () => {
  server = await new Server({ name: 'authz' }).start();
  for (const p of [OWNER, SVC, DEV, READ, RW]) hubCs[p] = cli(['hub', 'connection-string', '--policy-name', p]);
  for (const p of ['provisioningserviceowner', 'enrollmentread', 'enrollmentwrite']) dpsCs[p] = cli(['dps', 'connection-string', '--policy-name', p]);
  const owner = hubCs[OWNER];
  assert.equal((await rest(owner, 'PUT', `/devices/d-read?${HUB_API}`, { deviceId: 'd-read' })).status, 200);
  const dps = dpsCs.provisioningserviceowner;
  assert.equal((await rest(dps, 'PUT', `/enrollments/e-read?${DPS_API}`, { registrationId: 'e-read', attestation })).status, 200);
  assert.equal((await rest(dps, 'PUT', `/enrollmentGroups/g-read?${DPS_API}`, { enrollmentGroupId: 'g-read', attestation })).status, 200);
});

after(async () => {
  await server?.stop();
});

// Hub routes: [name, allowed policies, request(policyTag) -> [method, path, body], check(tag, allowed)].
const hubRoutes = [
  ['GET /devices', [OWNER, READ, RW], () => ['GET', `/devices?${HUB_API}`]],
  ['GET /devices/{id}', [OWNER, READ, RW], () => ['GET', `/devices/d-read?${HUB_API}`]],
  ['GET /statistics/devices', [OWNER, READ, RW], () => ['GET', `/statistics/devices?${HUB_API}`]],
  ['PUT /devices/{id}', [OWNER, RW], (t) => ['PUT', `/devices/new-${t}?${HUB_API}`, { deviceId: `new-${t}` }],
    async (t, allowed) => assert.equal((await rest(hubCs[OWNER], 'GET', `/devices/new-${t}?${HUB_API}`)).status, allowed ? 200 : 404)],
  ['DELETE /devices/{id}', [OWNER, RW], (t) => ['DELETE', `/devices/del-${t}?${HUB_API}`, undefined, { 'If-Match': '*' }],
    async (t, allowed) => assert.equal((await rest(hubCs[OWNER], 'GET', `/devices/del-${t}?${HUB_API}`)).status, allowed ? 404 : 200),
    async (t) => assert.equal((await rest(hubCs[OWNER], 'PUT', `/devices/del-${t}?${HUB_API}`, { deviceId: `del-${t}` })).status, 200)],
  ['GET /twins/{id}', [OWNER, SVC, READ, RW], () => ['GET', `/twins/d-read?${HUB_API}`]],
  ['PATCH /twins/{id}', [OWNER, SVC], (t) => ['PATCH', `/twins/d-read?${HUB_API}`, { tags: { [`patch_${t}`]: 1 } }],
    async (t, allowed) => assert.equal((await rest(hubCs[OWNER], 'GET', `/twins/d-read?${HUB_API}`)).body.tags?.[`patch_${t}`], allowed ? 1 : undefined)],
  ['PUT /twins/{id}', [OWNER, SVC], (t) => ['PUT', `/twins/d-read?${HUB_API}`, { tags: { [`put_${t}`]: 1 } }, { 'If-Match': '*' }],
    async (t, allowed) => assert.equal((await rest(hubCs[OWNER], 'GET', `/twins/d-read?${HUB_API}`)).body.tags?.[`put_${t}`], allowed ? 1 : undefined)],
];

const DOWNER = 'provisioningserviceowner';
const EREAD = 'enrollmentread';
const EWRITE = 'enrollmentwrite';
const ALL_DPS = [DOWNER, EREAD, EWRITE];
const dpsGet = (path) => rest(dpsCs[DOWNER], 'GET', `${path}?${DPS_API}`);
const dpsRoutes = [
  ['POST /enrollments/query', ALL_DPS, () => ['POST', `/enrollments/query?${DPS_API}`, { query: '*' }]],
  ['GET /enrollments/{id}', ALL_DPS, () => ['GET', `/enrollments/e-read?${DPS_API}`]],
  ['POST /enrollments/{id}/attestationmechanism', ALL_DPS, () => ['POST', `/enrollments/e-read/attestationmechanism?${DPS_API}`]],
  ['PUT /enrollments/{id}', [DOWNER, EWRITE], (t) => ['PUT', `/enrollments/new-${t}?${DPS_API}`, { registrationId: `new-${t}`, attestation }],
    async (t, allowed) => assert.equal((await dpsGet(`/enrollments/new-${t}`)).status, allowed ? 200 : 404)],
  ['POST /enrollments (bulk)', [DOWNER, EWRITE], (t) => ['POST', `/enrollments?${DPS_API}`, { mode: 'create', enrollments: [{ registrationId: `bulk-${t}`, attestation }] }],
    async (t, allowed) => assert.equal((await dpsGet(`/enrollments/bulk-${t}`)).status, allowed ? 200 : 404)],
  ['DELETE /enrollments/{id}', [DOWNER, EWRITE], (t) => ['DELETE', `/enrollments/del-${t}?${DPS_API}`],
    async (t, allowed) => assert.equal((await dpsGet(`/enrollments/del-${t}`)).status, allowed ? 404 : 200),
    async (t) => assert.equal((await rest(dpsCs[DOWNER], 'PUT', `/enrollments/del-${t}?${DPS_API}`, { registrationId: `del-${t}`, attestation })).status, 200)],
  ['POST /enrollmentGroups/query', ALL_DPS, () => ['POST', `/enrollmentGroups/query?${DPS_API}`, { query: '*' }]],
  ['GET /enrollmentGroups/{id}', ALL_DPS, () => ['GET', `/enrollmentGroups/g-read?${DPS_API}`]],
  ['POST /enrollmentGroups/{id}/attestationmechanism', ALL_DPS, () => ['POST', `/enrollmentGroups/g-read/attestationmechanism?${DPS_API}`]],
  ['PUT /enrollmentGroups/{id}', [DOWNER, EWRITE], (t) => ['PUT', `/enrollmentGroups/new-${t}?${DPS_API}`, { enrollmentGroupId: `new-${t}`, attestation }],
    async (t, allowed) => assert.equal((await dpsGet(`/enrollmentGroups/new-${t}`)).status, allowed ? 200 : 404)],
  ['DELETE /enrollmentGroups/{id}', [DOWNER, EWRITE], (t) => ['DELETE', `/enrollmentGroups/del-${t}?${DPS_API}`],
    async (t, allowed) => assert.equal((await dpsGet(`/enrollmentGroups/del-${t}`)).status, allowed ? 404 : 200),
    async (t) => assert.equal((await rest(dpsCs[DOWNER], 'PUT', `/enrollmentGroups/del-${t}?${DPS_API}`, { enrollmentGroupId: `del-${t}`, attestation })).status, 200)],
  ['POST /registrations/query', ALL_DPS, () => ['POST', `/registrations/query?${DPS_API}`, { query: '*' }]],
  ['POST /registrations/{group}/query', ALL_DPS, () => ['POST', `/registrations/g-read/query?${DPS_API}`, { query: '*' }]],
  ['GET /registrations/{id}', ALL_DPS, () => ['GET', `/registrations/e-read?${DPS_API}`]],
  ['GET /registrations/{id}/webhookcalls', ALL_DPS, () => ['GET', `/registrations/e-read/webhookcalls?${DPS_API}`]],
  ['DELETE /registrations/{id}', [DOWNER, EWRITE], () => ['DELETE', `/registrations/e-read?${DPS_API}`]],
];

async function runMatrix(routes, policies, csOf) {
  let cells = 0;
  for (const [name, allowedList, request, check, prepare] of routes) {
    for (const p of policies) {
      const tag = p.toLowerCase();
      if (prepare) await prepare(tag);
      const [method, path, body, headers] = request(tag);
      const r = await rest(csOf[p], method, path, body, headers);
      const allowed = allowedList.includes(p);
      if (allowed) {
        assert.ok(r.status < 300 || r.status === 404, `${p} on ${name}: allowed, got ${r.status} ${r.text.slice(0, 200)}`);
      } else {
        assert.equal(r.status, 401, `${p} on ${name}: must be refused, got ${r.status} ${r.text.slice(0, 200)}`);
      }
      if (check) await check(tag, allowed);
      cells++;
    }
  }
  return cells;
}

test('hub: every route against every policy', async () => {
  const cells = await runMatrix(hubRoutes, [OWNER, SVC, DEV, READ, RW], hubCs);
  assert.equal(cells, hubRoutes.length * 5);
});

test('DPS: every route against every policy', async () => {
  const cells = await runMatrix(dpsRoutes, ALL_DPS, dpsCs);
  assert.equal(cells, dpsRoutes.length * 3);
});

test('tokens that open no service route', async () => {
  const hubKey = keyOf(hubCs[OWNER]);
  const dpsKey = keyOf(dpsCs[DOWNER]);
  const devKey = (await rest(hubCs[OWNER], 'GET', `/devices/d-read?${HUB_API}`)).body.authentication.symmetricKey.primaryKey;
  const scope = server.idScope;
  const bad = {
    'device token': token('localhost/devices/d-read', devKey),
    'DPS registration token': token(`${scope}/registrations/e-read`, attestation.symmetricKey.primaryKey, 'registration'),
    'hub owner on the DPS (its key name there)': token('localhost', hubKey, DOWNER),
    'DPS owner on the hub (its key name there)': token('localhost', dpsKey, OWNER),
    'another host name': token('other.example.test', hubKey, OWNER),
    'expired': token('localhost', hubKey, OWNER, -5),
    'unknown key name': token('localhost', hubKey, 'nosuchpolicy'),
    'signature of another key': token('localhost', Buffer.alloc(32, 1).toString('base64'), OWNER),
    'not a SAS token': 'Bearer abc',
  };
  const targets = [
    ['PUT', `/devices/evil?${HUB_API}`, { deviceId: 'evil' }],
    ['PATCH', `/twins/d-read?${HUB_API}`, { tags: { evil: 1 } }],
    ['GET', `/devices/d-read?${HUB_API}`],
    ['PUT', `/enrollments/evil?${DPS_API}`, { registrationId: 'evil', attestation }],
    ['POST', `/enrollments/e-read/attestationmechanism?${DPS_API}`],
    ['DELETE', `/enrollmentGroups/g-read?${DPS_API}`],
  ];
  for (const [what, auth] of Object.entries(bad)) {
    for (const [method, path, body] of targets) {
      // The hub owner's key signs "hub owner on the DPS"; the DPS owner's
      // key under the hub's policy name is refused by the hub likewise.
      const r = await rest(hubCs[OWNER], method, path, body, { Authorization: auth });
      assert.equal(r.status, 401, `${what} on ${method} ${path}: ${r.status} ${r.text.slice(0, 160)}`);
    }
  }
  assert.equal((await rest(hubCs[OWNER], 'GET', `/devices/evil?${HUB_API}`)).status, 404);
  assert.equal((await rest(hubCs[OWNER], 'GET', `/twins/d-read?${HUB_API}`)).body.tags?.evil, undefined);
  assert.equal((await rest(dpsCs[DOWNER], 'GET', `/enrollments/evil?${DPS_API}`)).status, 404);
  assert.equal((await rest(dpsCs[DOWNER], 'GET', `/enrollmentGroups/g-read?${DPS_API}`)).status, 200);
});

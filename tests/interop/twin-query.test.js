// Twin queries with the official service SDK (issue 14): Registry.createQuery
// with nextAsTwin() and next(), a WHERE on tags and on reported state,
// paging that neither repeats nor skips while another client writes, TOP
// across pages, the seed tutorial's back end (tag, query by tag and by
// reported connectivity, update the found twins), aggregates and GROUP BY
// (paged, over missing paths, with and without WHERE), connectionState and
// lastActivityTime after a device connects, disconnects and the server is
// killed, and clear errors for bad queries and for what is not served yet.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Client } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { Registry } = require('azure-iothub');
const { NoRetry } = require('azure-iot-common');
const { Server, deviceCs, rest, withTimeout, report } = require('./lib/server');

let server;
let registry;
const ids = [];

before(async () => {
  server = await new Server({ name: 'twin-query' }).start();
  registry = Registry.fromConnectionString(server.ownerCs());
  for (let i = 0; i < 12; i++) {
    const deviceId = `q-${String(i).padStart(2, '0')}`;
    ids.push(deviceId);
    await registry.create({ deviceId });
    await registry.updateTwin(deviceId, { tags: { plant: i % 3 === 0 ? 'Redmond43' : 'Oslo', floor: i } }, '*');
  }
});

after(async () => {
  await server?.stop();
});

// Every page of query as twins; returns [rows, pages].
async function allPages(query) {
  const rows = [];
  let pages = 0;
  do {
    const { result } = await withTimeout(query.nextAsTwin(), 10000, 'nextAsTwin');
    rows.push(...result);
    pages++;
    assert.ok(pages < 100, 'paging ends');
  } while (query.hasMoreResults);
  return [rows, pages];
}

test('WHERE on tags, as twins and as plain objects', async () => {
  const [rows] = await allPages(registry.createQuery("SELECT * FROM devices WHERE tags.plant = 'Redmond43'"));
  assert.deepEqual(rows.map((t) => t.deviceId), ['q-00', 'q-03', 'q-06', 'q-09']);
  assert.equal(rows[0].tags.plant, 'Redmond43');
  assert.equal(typeof rows[0].update, 'function', 'nextAsTwin gives Twin objects');
  assert.equal(typeof rows[0].properties.desired.$version, 'number');
  const { result } = await registry.createQuery('SELECT * FROM devices WHERE tags.floor > 9 AND tags.floor <= 11').next();
  assert.deepEqual(result.map((t) => t.deviceId), ['q-10', 'q-11']);
  // Undefined is not null; types do not mix; strings keep their case.
  for (const [where, want] of [['tags.missing = null', 0], ['IS_DEFINED(tags.floor)', 12], ["tags.floor = '3'", 0],
    ["tags.plant = 'redmond43'", 0], ["STARTSWITH(deviceId, 'q-1')", 2], ['tags.floor IN [1, 2, 40]', 2],
    ["NOT (tags.plant = 'Oslo') AND tags.floor % 2 = 0", 2]]) {
    const r = await registry.createQuery(`SELECT * FROM devices WHERE ${where}`).next();
    assert.equal(r.result.length, want, where);
  }
});

test('pages neither repeat nor skip a row while another client writes; the last page says no more', async () => {
  const query = registry.createQuery('SELECT * FROM devices WHERE IS_DEFINED(tags.floor)', 5);
  const seen = [];
  let pages = 0;
  do {
    const { result, message } = await query.nextAsTwin();
    assert.equal(message.headers['x-ms-item-type'], 'Twin');
    seen.push(...result.map((t) => t.deviceId));
    pages++;
    // Writes between pages: a new device before the cursor, one after it,
    // and a tag change on a row still to come.
    if (pages === 1) {
      await registry.create({ deviceId: 'q-00a' });
      await registry.updateTwin('q-00a', { tags: { floor: 100 } }, '*');
      await registry.create({ deviceId: 'q-99' });
      await registry.updateTwin('q-99', { tags: { floor: 99 } }, '*');
      await registry.updateTwin('q-08', { tags: { plant: 'Oslo-2' } }, '*');
    }
  } while (query.hasMoreResults);
  assert.equal(new Set(seen).size, seen.length, `no row twice: ${seen}`);
  for (const id of ids) assert.ok(seen.includes(id), `${id} was not skipped`);
  assert.ok(!seen.includes('q-00a'), 'a row written behind the cursor is not shown');
  assert.ok(seen.includes('q-99'), 'a row written ahead of the cursor is shown');
  assert.equal(pages, 3, '13 rows in pages of 5: no empty page at the end');
  await registry.delete('q-00a');
  await registry.delete('q-99');
});

test('a continuation outlives a kill -9 and restart: paging goes on where it stopped', async () => {
  const query = registry.createQuery('SELECT * FROM devices WHERE IS_DEFINED(tags.floor)', 5);
  const first = await query.nextAsTwin();
  assert.ok(query.hasMoreResults);
  await server.kill();
  await server.start();
  const seen = first.result.map((t) => t.deviceId);
  while (query.hasMoreResults) seen.push(...(await withTimeout(query.nextAsTwin(), 10000, 'page after restart')).result.map((t) => t.deviceId));
  assert.deepEqual(seen, ids);
});

test('a page of large twins ends at its byte bound, and the next page goes on', async () => {
  const blob = {};
  for (let k = 0; k < 7; k++) blob[`part${k}`] = 'x'.repeat(4000);
  const big = [];
  for (let i = 0; i < 180; i++) {
    const deviceId = `r-big-${String(i).padStart(3, '0')}`;
    big.push(deviceId);
    await registry.create({ deviceId });
    await registry.updateTwin(deviceId, { properties: { desired: { blob } } }, '*');
  }
  const query = registry.createQuery("SELECT * FROM devices WHERE STARTSWITH(deviceId, 'r-big-')", 1000);
  const first = await query.nextAsTwin();
  assert.ok(first.result.length > 0 && first.result.length < 180, `first page: ${first.result.length} rows`);
  assert.ok(query.hasMoreResults);
  const seen = first.result.map((t) => t.deviceId);
  while (query.hasMoreResults) seen.push(...(await query.nextAsTwin()).result.map((t) => t.deviceId));
  assert.deepEqual(seen, big);
  // The CLI pages through all of them too.
  const table = server.cli(['query', "SELECT * FROM devices WHERE STARTSWITH(deviceId, 'r-big-')", '--table']);
  assert.equal(table.code, 0, table.stderr);
  const lines = table.stdout.trim().split('\n');
  assert.match(lines[0], /^deviceId\s+status\s+connectionState\s+tags$/);
  assert.deepEqual(lines.slice(1).map((l) => l.split(/\s+/)[0]), big);
  for (const id of big) await registry.delete(id);
});

test('TOP n ends the result after n rows over every page', async () => {
  const [rows, pages] = await allPages(registry.createQuery('SELECT TOP 7 * FROM devices', 3));
  assert.deepEqual(rows.map((t) => t.deviceId), ids.slice(0, 7));
  assert.equal(pages, 3);
});

test('the tutorial back end: query by tag and by reported connectivity, update the twins found', async () => {
  const created = (await registry.get('q-01')).responseBody;
  const client = Client.fromConnectionString(deviceCs('localhost', 'q-01', created.authentication.symmetricKey.primaryKey), Mqtt);
  await withTimeout(client.open(), 10000, 'device open');
  try {
    const twin = await client.getTwin();
    await report(twin, { connectivity: { type: 'cellular' } });
    const byTag = await registry.createQuery("SELECT * FROM devices WHERE tags.plant = 'Oslo' AND tags.floor < 3").nextAsTwin();
    assert.deepEqual(byTag.result.map((t) => t.deviceId), ['q-01', 'q-02']);
    const cellular = await registry.createQuery(
      "SELECT * FROM devices WHERE tags.plant = 'Oslo' AND properties.reported.connectivity.type = 'cellular'").nextAsTwin();
    assert.deepEqual(cellular.result.map((t) => t.deviceId), ['q-01']);
    const found = cellular.result[0];
    assert.equal(found.connectionState, 'Connected', 'rows carry the connection state');
    assert.equal(found.properties.reported.connectivity.type, 'cellular');
    await found.update({ tags: { network: 'cellular' } });
    const after = await registry.createQuery("SELECT * FROM devices WHERE tags.network = 'cellular'").next();
    assert.deepEqual(after.result.map((t) => t.deviceId), ['q-01']);
  } finally {
    await client.close();
  }
});

test('projections: paths under their last name or alias, expressions, undefined left out', async () => {
  const query = registry.createQuery(
    'SELECT deviceId, tags.plant AS plant, tags.floor * 2, tags.missing FROM devices WHERE tags.floor < 3', 2);
  const { result, message } = await query.next();
  assert.equal(message.headers['x-ms-item-type'], 'raw');
  assert.deepEqual(result, [{ deviceId: 'q-00', plant: 'Redmond43', $3: 0 }, { deviceId: 'q-01', plant: 'Oslo', $3: 2 }]);
  assert.ok(query.hasMoreResults);
  const next = await query.next(query.continuationToken);
  assert.deepEqual(next.result, [{ deviceId: 'q-02', plant: 'Oslo', $3: 4 }]);
  assert.ok(!query.hasMoreResults);
  const reported = await registry.createQuery(
    "SELECT properties.reported.connectivity.type, properties.desired.$version AS dv FROM devices WHERE deviceId = 'q-05'").next();
  assert.equal(reported.result.length, 1);
  assert.equal(typeof reported.result[0].dv, 'number');
});

test('fleethub query prints JSON or a table, and a bad query\'s error', async () => {
  const json = server.cli(['query', "SELECT * FROM devices WHERE tags.plant = 'Redmond43'"]);
  assert.equal(json.code, 0, json.stderr);
  const rows = JSON.parse(json.stdout);
  assert.deepEqual(rows.map((t) => t.deviceId), ['q-00', 'q-03', 'q-06', 'q-09']);
  assert.equal(rows[1].tags.plant, 'Redmond43');
  const table = server.cli(['query', 'SELECT TOP 2 * FROM devices WHERE tags.floor >= 4', '--table']);
  assert.equal(table.code, 0, table.stderr);
  assert.deepEqual(table.stdout.trim().split('\n').map((l) => l.split(/\s+/)[0]), ['deviceId', 'q-04', 'q-05']);
  // (Members in stored order: as sent on SQLite, jsonb's order on PostgreSQL.)
  assert.match(table.stdout, /^q-04 .*(\{"plant":"Oslo","floor":4\}|\{"floor":4,"plant":"Oslo"\})$/m);
  const empty = server.cli(['query', "SELECT * FROM devices WHERE tags.plant = 'nowhere'"]);
  assert.equal(empty.code, 0);
  assert.deepEqual(JSON.parse(empty.stdout), []);
  const bad = server.cli(['query', 'SELECT * FROM devices WHERE']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^error: 400 .*the query is not valid: at 27: /);
  assert.equal(server.cli(['query']).code, 2);
});

// Every page of query through next(); the rows.
async function allRows(query) {
  const rows = [];
  do rows.push(...(await withTimeout(query.next(query.continuationToken), 10000, 'next')).result);
  while (query.hasMoreResults);
  return rows;
}

test('aggregates: COUNT, SUM, AVG, MIN, MAX with and without WHERE; GROUP BY paged and over missing paths', async () => {
  const all = await registry.createQuery(
    'SELECT COUNT() AS n, SUM(tags.floor) AS s, AVG(tags.floor) AS a, MIN(tags.floor) AS lo, MAX(tags.floor) AS hi FROM devices').next();
  assert.equal(all.message.headers['x-ms-item-type'], 'raw');
  assert.deepEqual(all.result, [{ n: 12, s: 66, a: 5.5, lo: 0, hi: 11 }]);
  // The store's own aggregate (a WHERE it holds entirely) and the
  // row-by-row one (a WHERE it cannot) agree.
  // (An earlier test moved q-08 to plant Oslo-2.)
  const twins = await allRows(registry.createQuery('SELECT * FROM devices'));
  const osloFloors = twins.filter((t) => t.tags.plant === 'Oslo').map((t) => t.tags.floor);
  assert.equal(osloFloors.length, 7);
  const want = { n: 7, s: osloFloors.reduce((x, y) => x + y, 0), hi: Math.max(...osloFloors) };
  const oslo = "tags.plant = 'Oslo'";
  for (const where of [oslo, `(${oslo} OR tags.floor = 100) AND IS_NUMBER(tags.floor)`]) {
    const r = await registry.createQuery(`SELECT COUNT() AS n, SUM(tags.floor) AS s, MAX(tags.floor) AS hi FROM devices WHERE ${where}`).next();
    assert.deepEqual(r.result, [want], where);
  }
  const none = await registry.createQuery("SELECT COUNT() AS n, SUM(tags.floor) AS s FROM devices WHERE tags.plant = 'nowhere'").next();
  assert.deepEqual(none.result, [{ n: 0 }], 'no rows: a count of 0, an undefined sum left out');
  const byPlant = await registry.createQuery(
    'SELECT tags.plant AS plant, COUNT() AS n, AVG(tags.floor) AS avgFloor FROM devices GROUP BY tags.plant').next();
  assert.deepEqual(byPlant.result, [{ plant: 'Oslo', n: 7, avgFloor: want.s / 7 }, { plant: 'Oslo-2', n: 1, avgFloor: 8 },
    { plant: 'Redmond43', n: 4, avgFloor: 4.5 }]);
  const missing = await registry.createQuery('SELECT tags.missing, COUNT() AS n FROM devices GROUP BY tags.missing').next();
  assert.deepEqual(missing.result, [{ n: 12 }], 'a missing path is one group whose key is left out');
  const byStatus = await registry.createQuery('SELECT status, COUNT() AS n FROM devices GROUP BY status').next();
  assert.deepEqual(byStatus.result, [{ status: 'enabled', n: 12 }]);
  const paged = registry.createQuery('SELECT tags.floor AS floor, COUNT() AS n FROM devices GROUP BY tags.floor', 5);
  const groups = await allRows(paged);
  assert.equal(groups.length, 12);
  assert.deepEqual(new Set(groups.map((g) => g.floor)), new Set(ids.map((_, i) => i)));
  assert.ok(groups.every((g) => g.n === 1));
  const cli = server.cli(['query', 'SELECT tags.plant AS plant, COUNT() AS n FROM devices GROUP BY tags.plant', '--table']);
  assert.equal(cli.code, 0, cli.stderr);
  assert.match(cli.stdout, /Oslo\s+7/);
});

test('connectionState and lastActivityTime: queryable as a device connects, disconnects, and after a kill -9', async () => {
  const open = async (id) => {
    const created = (await registry.get(id)).responseBody;
    const client = Client.fromConnectionString(deviceCs('localhost', id, created.authentication.symmetricKey.primaryKey), Mqtt);
    client.setRetryPolicy(new NoRetry());
    await withTimeout(client.open(), 10000, 'device open');
    return client;
  };
  // The state is written after CONNACK, in the next commit: poll briefly.
  const connected = async (want) => {
    let got;
    for (let i = 0; i < 50; i++) {
      got = (await registry.createQuery("SELECT deviceId FROM devices WHERE connectionState = 'Connected'").next())
        .result.map((r) => r.deviceId);
      if (JSON.stringify(got) === JSON.stringify(want)) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.deepEqual(got, want);
  };
  const a = await open('q-02');
  const b = await open('q-04');
  await connected(['q-02', 'q-04']);
  const row = (await registry.createQuery("SELECT * FROM devices WHERE deviceId = 'q-02'").nextAsTwin()).result[0];
  assert.equal(row.connectionState, 'Connected');
  assert.ok(Date.now() - Date.parse(row.lastActivityTime) < 60000, row.lastActivityTime);
  await a.close();
  await connected(['q-04']);
  const gone = await registry.createQuery(
    "SELECT deviceId, lastActivityTime FROM devices WHERE connectionState = 'Disconnected' AND deviceId = 'q-02'").next();
  assert.equal(gone.result.length, 1);
  assert.notEqual(gone.result[0].lastActivityTime, '0001-01-01T00:00:00Z', 'the last activity outlives the connection');
  const dev = (await registry.get('q-02')).responseBody;
  assert.equal(dev.connectionState, 'Disconnected');
  assert.equal(dev.lastActivityTime, gone.result[0].lastActivityTime, 'the device document shows the stored last activity');
  assert.ok(Date.now() - Date.parse(dev.connectionStateUpdatedTime) < 60000, dev.connectionStateUpdatedTime);
  const counts = await registry.createQuery('SELECT connectionState, COUNT() AS n FROM devices GROUP BY connectionState').next();
  assert.deepEqual(counts.result, [{ connectionState: 'Connected', n: 1 }, { connectionState: 'Disconnected', n: 11 }]);
  // A crash leaves q-04's row saying Connected; the restart clears it.
  b.on('error', () => {});
  await server.kill();
  await server.start();
  await connected([]);
  await b.close().catch(() => {});
});

test('bad queries are 400s that say where; what is not served yet is a 501 that says so', async () => {
  const bad = await registry.createQuery('SELECT * FROM devices WHERE tags.a = = 1').next().then(() => null, (e) => e);
  assert.equal(bad?.response?.statusCode, 400);
  assert.match(bad.message, /the query is not valid: at 37: /);
  for (const [sql, what] of [['SELECT tags.plant, COUNT() AS n FROM devices', /at 7: an aggregate cannot be mixed with other items without GROUP BY/],
    ['SELECT tags.floor, COUNT() AS n FROM devices GROUP BY tags.plant', /at 7: with GROUP BY, a SELECT item is an aggregate or the grouped path/],
    ['SELECT * FROM devices GROUP BY tags.plant', /at 31: GROUP BY needs an aggregate/]]) {
    const e = await registry.createQuery(sql).next().then(() => null, (x) => x);
    assert.equal(e?.response?.statusCode, 400, sql);
    assert.match(e.message, what, sql);
  }
  const jobs = await registry.createQuery('SELECT * FROM devices.jobs').next().then(() => null, (x) => x);
  assert.equal(jobs?.response?.statusCode, 501);
  assert.match(jobs.message, /^fleethub does not serve job queries \(FROM devices.jobs\) yet$/);
  const mods = await registry.createQuery('SELECT * FROM devices.modules').next();
  assert.deepEqual(mods.result, [], 'no modules yet: an empty set');
  const other = await rest(server.ownerCs(), 'POST', '/devices/query?api-version=2021-04-12', { query: 'SELECT * FROM enrollments' });
  assert.equal(other.status, 400);
  const token = await rest(server.ownerCs(), 'POST', '/devices/query?api-version=2021-04-12', { query: 'SELECT * FROM devices' },
    { 'x-ms-continuation': 'bm90IG91cnM=' });
  assert.equal(token.status, 400);
  assert.match(token.body.Message, /continuation/);
  const noQuery = await rest(server.ownerCs(), 'POST', '/devices/query?api-version=2021-04-12', { sql: 'x' });
  assert.equal(noQuery.status, 400);
});

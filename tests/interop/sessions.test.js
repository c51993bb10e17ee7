// Device sessions that outlive a connection (issue 11): the official Node
// device SDK connects with clean session 0 and, after losing its
// connection, reconnects without subscribing again, so its subscriptions
// must survive a server restart, a kill -9 and a takeover. Raw MQTT
// clients check the session-present flag on every path, a takeover with
// clean session 1, and that a deleted, re-created or disabled device never
// resumes what it should not.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Client } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
const { Registry } = require('azure-iothub');
const { Server, deviceCs, withTimeout, waitFor, report, mqttDevice } = require('./lib/server');

let server;
let registry;

before(async () => {
  server = await new Server({ name: 'sessions' }).start();
  registry = Registry.fromConnectionString(server.ownerCs());
});

after(async () => {
  await server?.stop();
});

async function createDevice(deviceId) {
  return (await registry.create({ deviceId })).responseBody.authentication.symmetricKey.primaryKey;
}

async function connected(deviceId) {
  return (await registry.get(deviceId)).responseBody.connectionState === 'Connected';
}

function subscribe(c, filter) {
  return new Promise((resolve, reject) => c.subscribe(filter, { qos: 0 }, (e, granted) => (e ? reject(e) : resolve(granted))));
}

// Records every message a raw client receives, in order.
function inbox(c) {
  const got = [];
  c.on('message', (topic, payload) => got.push({ topic, body: payload.toString() }));
  return got;
}

// A twin GET from a raw client; resolves once its answer is in `got`.
// Messages that arrived before it were sent before it.
async function twinGet(c, got, rid) {
  c.publish(`$iothub/twin/GET/?$rid=${rid}`, ' ');
  return waitFor(() => got.find((m) => m.topic.startsWith(`$iothub/twin/res/200/?$rid=${rid}`)), 5000, `twin GET ${rid}`);
}

const isDesired = (m) => m.topic.startsWith('$iothub/twin/PATCH/properties/desired/');

async function setDesired(deviceId, desired) {
  await registry.updateTwin(deviceId, { properties: { desired } }, '*');
}

// A TCP relay on 127.0.0.1 to 127.0.0.1:port. hold(): connections that
// arrive from now on wait, unconnected, until release().
async function holdingRelay(port) {
  const net = require('net');
  let holding = false;
  let waiting = [];
  const sockets = new Set();
  const pipe = (sock) => {
    const up = net.connect(port, '127.0.0.1');
    sockets.add(up);
    sock.pipe(up).pipe(sock);
    const end = () => { sock.destroy(); up.destroy(); };
    sock.on('error', end).on('close', end);
    up.on('error', end).on('close', end);
  };
  const srv = net.createServer((sock) => {
    sockets.add(sock);
    sock.pause();
    if (holding) waiting.push(sock); else pipe(sock);
  });
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  return {
    port: srv.address().port,
    hold: () => { holding = true; },
    held: () => waiting.length,
    release: () => { holding = false; for (const s of waiting) pipe(s); waiting = []; },
    close: () => { srv.close(); for (const s of sockets) s.destroy(); },
  };
}

async function restart(how) {
  if (how === 'SIGTERM') await server.stop();
  else await server.kill();
  await server.start();
  registry = Registry.fromConnectionString(server.ownerCs());
}

for (const [label, transport] of [['MQTT', Mqtt], ['MQTT over WebSockets', MqttWs]]) {
  test(`an SDK device keeps working across a SIGTERM restart and a kill -9 (${label})`, async () => {
    const deviceId = `restart-${transport === Mqtt ? 'mqtt' : 'ws'}`;
    const key = await createDevice(deviceId);
    const client = Client.fromConnectionString(deviceCs('localhost', deviceId, key), transport);
    await withTimeout(client.open(), 10000, 'open');
    try {
      const twin = await withTimeout(client.getTwin(), 10000, 'getTwin');
      const seen = [];
      twin.on('properties.desired', (delta) => seen.push(delta));
      await report(twin, { round: 0 });
      for (const [round, how] of [[1, 'SIGTERM'], [2, 'SIGKILL']]) {
        await restart(how);
        // No reconnect logic here: the SDK reconnects by itself, with
        // clean session 0, and never subscribes again.
        await waitFor(() => connected(deviceId), 30000, `the SDK to reconnect after ${how}`);
        await setDesired(deviceId, { round });
        await waitFor(() => seen.some((d) => d.round === round), 10000,
          `the desired change made after ${how} to reach the handler`);
        await withTimeout(report(twin, { round }), 10000, `a reported update after ${how}`);
        const got = await withTimeout(new Promise((resolve, reject) => twin.get((e, t) => (e ? reject(e) : resolve(t)))),
          10000, `a twin GET after ${how}`);
        assert.equal(got.properties.reported.round, round);
        assert.equal(got.properties.desired.round, round);
      }
    } finally {
      await client.close().catch(() => {});
    }
  });
}

test('a clean-session-0 takeover keeps the live subscriptions; the SDK takes them back', async () => {
  const deviceId = 'takeover-0';
  const key = await createDevice(deviceId);
  // The SDK dials fleethub through a TCP relay that can hold new
  // connections: the SDK reconnects at once after the takeover, and the
  // relay keeps that reconnection waiting until the raw client below has
  // looked at the session it took over.
  const relay = await holdingRelay(8883);
  const cs = `${deviceCs('localhost', deviceId, key)};GatewayHostName=127.0.0.1:${relay.port}`;
  const client = Client.fromConnectionString(cs, Mqtt);
  await withTimeout(client.open(), 10000, 'open');
  try {
    const twin = await withTimeout(client.getTwin(), 10000, 'getTwin');
    const seen = [];
    twin.on('properties.desired', (delta) => seen.push(delta));
    await waitFor(() => seen.length > 0, 5000, 'the SDK\'s start-up desired event');

    // A second connection of the same device, clean session 0, that never
    // subscribes: it takes over the SDK's session and its subscriptions.
    relay.hold();
    const { c, connack } = await mqttDevice(server, deviceId, key, { clean: false });
    const closed = new Promise((resolve) => c.once('close', resolve));
    assert.equal(connack.sessionPresent, true, 'takeover of a live clean-session-0 session');
    const got = inbox(c);
    await setDesired(deviceId, { via: 'raw' });
    await twinGet(c, got, 'r1'); // twin responses: inherited too
    const desired = got.filter(isDesired);
    assert.equal(desired.length, 1, 'the desired change reached the new connection');
    assert.equal(JSON.parse(desired[0].body).via, 'raw');

    // The SDK lost its connection to the takeover and reconnects on its
    // own, taking the session back from the raw client.
    await waitFor(() => relay.held() > 0, 10000, 'the SDK to dial again');
    relay.release();
    await withTimeout(closed, 30000, 'the SDK to take the session back');
    await waitFor(() => connected(deviceId), 10000, 'the SDK connected again');
    await setDesired(deviceId, { via: 'sdk' });
    await waitFor(() => seen.some((d) => d.via === 'sdk'), 10000, 'the desired change at the SDK');
    await withTimeout(report(twin, { back: true }), 10000, 'a reported update from the SDK');
  } finally {
    await client.close().catch(() => {});
    relay.close();
  }
});

test('session present on every path; a clean-session-1 takeover discards the subscriptions', async () => {
  const deviceId = 'present-1';
  const key = await createDevice(deviceId);
  const open = async (clean) => mqttDevice(server, deviceId, key, { clean });

  let { c, connack } = await open(false);
  assert.equal(connack.sessionPresent, false, 'first clean-session-0 CONNECT: no session before');
  await subscribe(c, '$iothub/twin/PATCH/properties/desired/#');
  c.end(true);
  await waitFor(async () => !(await connected(deviceId)), 5000, 'disconnect');

  ({ c, connack } = await open(false));
  assert.equal(connack.sessionPresent, true, 'reconnect with clean session 0');
  const first = c;
  ({ c, connack } = await open(false));
  assert.equal(connack.sessionPresent, true, 'takeover with clean session 0');
  await waitFor(() => first.disconnected || !first.connected, 5000, 'the first connection closed');

  // A clean-session-1 takeover starts empty and drops the stored session.
  const live = c;
  ({ c, connack } = await open(true));
  assert.equal(connack.sessionPresent, false, 'takeover with clean session 1');
  await waitFor(() => !live.connected, 5000, 'the clean-session-0 connection closed');
  await subscribe(c, '$iothub/twin/res/#');
  let got = inbox(c);
  await setDesired(deviceId, { discarded: 1 });
  await twinGet(c, got, 'c1');
  assert.equal(got.filter(isDesired).length, 0, 'no desired change after a clean-session-1 takeover');
  c.end(true);
  await waitFor(async () => !(await connected(deviceId)), 5000, 'disconnect');

  ({ c, connack } = await open(false));
  assert.equal(connack.sessionPresent, false, 'clean session 0 after clean session 1: a new session');
  await subscribe(c, '$iothub/twin/res/#');
  got = inbox(c);
  await setDesired(deviceId, { discarded: 2 });
  await twinGet(c, got, 'c2');
  assert.equal(got.filter(isDesired).length, 0, 'the discarded subscription did not come back');
  c.end(true);
});

test('subscriptions acknowledged before a kill -9 are in force after it; SIGTERM too', async () => {
  const deviceId = 'durable-1';
  const key = await createDevice(deviceId);
  let { c } = await mqttDevice(server, deviceId, key, { clean: false });
  await subscribe(c, '$iothub/twin/res/#');
  await subscribe(c, '$iothub/twin/PATCH/properties/desired/#');
  for (const how of ['SIGKILL', 'SIGTERM']) {
    // The SUBACK came after the commit: the kill follows it at once.
    await restart(how);
    c.end(true);
    let connack;
    ({ c, connack } = await mqttDevice(server, deviceId, key, { clean: false }));
    assert.equal(connack.sessionPresent, true, `session present after ${how}`);
    const got = inbox(c);
    await setDesired(deviceId, { after: how });
    await twinGet(c, got, how);
    const desired = got.filter(isDesired);
    assert.equal(desired.length, 1, `the desired change after ${how}, without subscribing again`);
    assert.equal(JSON.parse(desired[0].body).after, how);
  }
  // UNSUBSCRIBE is stored too.
  await new Promise((resolve, reject) => c.unsubscribe('$iothub/twin/PATCH/properties/desired/#', (e) => (e ? reject(e) : resolve())));
  await restart('SIGKILL');
  c.end(true);
  ({ c } = await mqttDevice(server, deviceId, key, { clean: false }));
  const got = inbox(c);
  await setDesired(deviceId, { after: 'unsubscribe' });
  await twinGet(c, got, 'u1');
  assert.equal(got.filter(isDesired).length, 0, 'no desired change after UNSUBSCRIBE and a kill -9');
  c.end(true);
});

test('a deleted and re-created device id starts with no session', async () => {
  const deviceId = 'recreated-1';
  const check = async (key, rid) => {
    const { c, connack } = await mqttDevice(server, deviceId, key, { clean: false });
    assert.equal(connack.sessionPresent, false, 'the re-created device has no session');
    await subscribe(c, '$iothub/twin/res/#');
    const got = inbox(c);
    await setDesired(deviceId, { fresh: rid });
    await twinGet(c, got, rid);
    assert.equal(got.filter(isDesired).length, 0, 'the old device\'s subscription did not carry over');
    return c;
  };
  // Deleted while disconnected...
  let key = await createDevice(deviceId);
  let { c } = await mqttDevice(server, deviceId, key, { clean: false });
  await subscribe(c, '$iothub/twin/PATCH/properties/desired/#');
  c.end(true);
  await waitFor(async () => !(await connected(deviceId)), 5000, 'disconnect');
  await registry.delete(deviceId);
  key = await createDevice(deviceId);
  c = await check(key, 'n1');
  // ... and while connected (the connection is closed).
  await subscribe(c, '$iothub/twin/PATCH/properties/desired/#');
  const closed = new Promise((resolve) => c.once('close', resolve));
  await registry.delete(deviceId);
  await withTimeout(closed, 5000, 'the deleted device\'s connection to close');
  key = await createDevice(deviceId);
  c = await check(key, 'n2');
  c.end(true);
});

test('a disabled device\'s session is not resumed until it is enabled and connects again', async () => {
  const deviceId = 'disabled-1';
  const key = await createDevice(deviceId);
  let { c } = await mqttDevice(server, deviceId, key, { clean: false });
  await subscribe(c, '$iothub/twin/res/#');
  await subscribe(c, '$iothub/twin/PATCH/properties/desired/#');
  const closed = new Promise((resolve) => c.once('close', resolve));
  const dev = (await registry.get(deviceId)).responseBody;
  await registry.update({ ...dev, status: 'disabled' });
  await withTimeout(closed, 5000, 'the disabled device\'s connection to close');
  await assert.rejects(mqttDevice(server, deviceId, key, { clean: false }), /unavailable/i, 'a disabled device is refused');

  await registry.update({ ...(await registry.get(deviceId)).responseBody, status: 'enabled' });
  let connack;
  ({ c, connack } = await mqttDevice(server, deviceId, key, { clean: false }));
  assert.equal(connack.sessionPresent, true, 'the session is back once the device is enabled');
  const got = inbox(c);
  await setDesired(deviceId, { enabled: true });
  await twinGet(c, got, 'e1');
  assert.equal(got.filter(isDesired).length, 1, 'its subscriptions are in force again');
  c.end(true);
});

// Hostile MQTT input, byte-exact, against the real binary: packets before
// CONNECT, a second CONNECT, packets only a server may send, broken
// remaining lengths, huge declared lengths dripped slowly, bad topics and
// QoS, invalid UTF-8, $rid injection, subscription floods, oversized
// payloads and a CONNECT dripped byte by byte. Each case must end in a
// refusal or a closed connection; after each one the server is still up and
// a well-behaved SDK device on another connection keeps working.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const {
  interop, Server, withTimeout, deviceCs, rawConnect, expectClose,
  packet, connect, publish, subscribe, deviceConnect, CONNACK_OK, rssKiB, assertRssBound,
} = require('./lib');

const { Client } = interop('azure-iot-device');
const { Mqtt } = interop('azure-iot-device-mqtt');
const { Registry } = interop('azure-iothub');

let server;
let registry;
let key;
let witness;
let witnessTwin;
let round = 0;

before(async () => {
  server = await new Server({ name: 'hostile-mqtt' }).start();
  registry = Registry.fromConnectionString(server.ownerCs());
  key = (await registry.create({ deviceId: 'h-1' })).responseBody.authentication.symmetricKey.primaryKey;
  const wkey = (await registry.create({ deviceId: 'witness' })).responseBody.authentication.symmetricKey.primaryKey;
  witness = Client.fromConnectionString(deviceCs('localhost', 'witness', wkey), Mqtt);
  await withTimeout(witness.open(), 10000, 'witness open');
  witnessTwin = await withTimeout(witness.getTwin(), 10000, 'witness twin');
});

after(async () => {
  await witness?.close();
  await server?.stop();
});

// The server is up, and the witness device (connected all along) still
// gets its reported properties stored.
async function stillServing(what) {
  assert.equal(server.proc.exitCode, null, `server exited after ${what}`);
  round++;
  await withTimeout(new Promise((resolve, reject) => {
    witnessTwin.properties.reported.update({ round }, (err) => (err ? reject(err) : resolve()));
  }), 5000, `witness update after ${what}`);
  const twin = (await registry.getTwin('witness')).responseBody;
  assert.equal(twin.properties.reported.round, round, `witness state after ${what}`);
}

// A connection that completed CONNECT as h-1, then got `bytes`.
async function afterConnect(bytes, what, limitMs = 5000) {
  const r = await expectClose(server, [deviceConnect('h-1', key), ...[].concat(bytes)], limitMs, what);
  assert.deepEqual([...r.received.subarray(0, 4)], CONNACK_OK, `${what}: CONNECT accepted first`);
  return r;
}

test('packets before CONNECT close the connection without an answer', async () => {
  const cases = {
    'PUBLISH first': publish('devices/h-1/messages/events/', 'x'),
    'SUBSCRIBE first': subscribe(['$iothub/twin/res/#']),
    'PINGREQ first': Buffer.from([0xc0, 0x00]),
    'DISCONNECT first': Buffer.from([0xe0, 0x00]),
    'reserved type 0': Buffer.from([0x00, 0x00]),
    'reserved type 15': Buffer.from([0xf0, 0x00]),
  };
  for (const [what, bytes] of Object.entries(cases)) {
    const r = await expectClose(server, bytes, 5000, what);
    assert.equal(r.received.length, 0, `${what}: nothing is answered`);
    await stillServing(what);
  }
});

test('malformed CONNECTs are refused', async () => {
  const password = 'SharedAccessSignature sr=x&sig=y&se=1';
  const cases = {
    'protocol name MQTX': connect({ clientId: 'h-1', protocol: 'MQTX' }),
    'reserved flag bit': connect({ clientId: 'h-1', username: 'u', password, flags: 0xc3 }),
    'password without user name': connect({ clientId: 'h-1', password, flags: 0x42 }),
    'will QoS 3': connect({ clientId: 'h-1', flags: 0x1e }),
    'invalid UTF-8 client id': connect({ clientId: Buffer.from([0x68, 0xc3, 0x28]), username: 'localhost/h-1/?api-version=2021-04-12', password }),
    'NUL in client id': connect({ clientId: Buffer.from('h\u00001'), username: 'localhost/h-1/?api-version=2021-04-12', password }),
    'CONNECT ending inside its protocol name': Buffer.from([0x10, 0x03, 0x00, 0x04, 0x4d]),
    'string longer than the packet': packet(0x10, Buffer.from([0x00, 0xff, 0x4d, 0x51])),
  };
  for (const [what, bytes] of Object.entries(cases)) {
    const r = await expectClose(server, bytes, 12000, what);
    // Either closed silently or with a refusing CONNACK, never accepted.
    if (r.received.length) {
      assert.equal(r.received[0], 0x20, `${what}: only a CONNACK may come back`);
      assert.notEqual(r.received[3], 0x00, `${what}: must not be accepted`);
    }
    await stillServing(what);
  }
});

test('a second CONNECT and packets only a server sends close the session', async () => {
  const cases = {
    'second CONNECT': deviceConnect('h-1', key),
    CONNACK: Buffer.from([0x20, 0x02, 0x00, 0x00]),
    SUBACK: Buffer.from([0x90, 0x03, 0x00, 0x01, 0x00]),
    UNSUBACK: Buffer.from([0xb0, 0x02, 0x00, 0x01]),
    PINGRESP: Buffer.from([0xd0, 0x00]),
    'PUBREC for nothing': Buffer.from([0x50, 0x02, 0x00, 0x07]),
  };
  for (const [what, bytes] of Object.entries(cases)) {
    const r = await afterConnect(bytes, what);
    assert.equal(r.received.length, 4, `${what}: nothing after the CONNACK`);
    await stillServing(what);
  }
});

test('broken remaining lengths close the connection at once', async () => {
  const cases = {
    'five length bytes': Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]),
    'largest 4-byte length, nothing after': Buffer.from([0x30, 0xff, 0xff, 0xff, 0x7f]),
    'length above max_packet': Buffer.from([0x30, 0x80, 0x80, 0x20]), // 512 KiB > 256 KiB
  };
  for (const [what, bytes] of Object.entries(cases)) {
    const before = await expectClose(server, bytes, 3000, `${what} before CONNECT`);
    assert.ok(before.ms < 3000);
    await afterConnect(bytes, `${what} after CONNECT`, 3000);
    await stillServing(what);
  }
});

test('declared lengths are not allocated before the bytes arrive', async () => {
  // 200 unauthenticated connections each declare a 60 KiB CONNECT (under
  // max_packet) and send 10 bytes of it. Allocating the declared size up
  // front would cost about 12 MiB; the server may only hold what arrived.
  const rss0 = rssKiB(server);
  const conns = [];
  let grown;
  try {
    for (let i = 0; i < 200; i++) {
      const c = await rawConnect(server);
      conns.push(c);
      await c.write(Buffer.concat([Buffer.from([0x10, 0x80, 0xe0, 0x03]), Buffer.alloc(10, 0x61)]));
    }
    grown = rssKiB(server) - rss0;
  } finally {
    for (const c of conns) c.end();
  }
  assertRssBound(grown, 8 * 1024, '200 partial 60 KiB CONNECTs');
  await stillServing('partial packets');
});

test('a huge declared length dripped slowly is closed before its bytes arrive', async () => {
  const c = await rawConnect(server);
  await c.write(deviceConnect('h-1', key));
  await c.write(Buffer.from([0x30, 0xff, 0xff, 0xff, 0x7f])); // 256 MiB declared
  let sent = 0;
  const drip = setInterval(() => { if (!c.sock.destroyed) { c.sock.write(Buffer.alloc(100, 0x61)); sent += 100; } }, 50);
  try {
    await withTimeout(c.closed, 3000, 'close of the dripping connection');
  } finally {
    clearInterval(drip);
    c.end();
  }
  assert.ok(sent < 10000, `closed after ${sent} dripped bytes`);
  await stillServing('huge declared length');
});

test('bad topics, QoS and payloads after CONNECT close the session', async () => {
  const cases = {
    'zero-length topic': publish('', 'x'),
    'wildcard # in topic': publish('devices/h-1/messages/events/#', 'x'),
    'wildcard + in topic': publish('devices/+/messages/events/', 'x'),
    'QoS 2': publish('devices/h-1/messages/events/', 'x', { qos: 2 }),
    'QoS 3': publish('devices/h-1/messages/events/', 'x', { flags: 0x36 }),
    'invalid UTF-8 topic': publish(Buffer.from([0x24, 0x69, 0xff, 0xfe]), 'x'),
    'NUL in topic': publish(Buffer.from('$iothub/twin/GET/?$rid=1\u0000x'), ''),
    "another device's topic": publish('devices/witness/messages/events/', 'x'),
    '$rid with a slash': publish('$iothub/twin/GET/?$rid=1/../x', ''),
    '$rid with a wildcard': publish('$iothub/twin/GET/?$rid=#', ''),
    'empty $rid': publish('$iothub/twin/GET/?$rid=', ''),
    'payload above max_packet': publish('$iothub/twin/PATCH/properties/reported/?$rid=9', Buffer.alloc(300 * 1024, 0x20)),
    'SUBSCRIBE with 17 filters': subscribe(Array.from({ length: 17 }, () => '$iothub/twin/res/#')),
    'SUBSCRIBE with an empty filter': subscribe(['']),
    'SUBSCRIBE with reserved flags': Buffer.from([0x80, 0x06, 0x00, 0x01, 0x00, 0x01, 0x61, 0x00]),
  };
  for (const [what, bytes] of Object.entries(cases)) {
    await afterConnect(bytes, what);
    await stillServing(what);
  }
});

test('bad twin JSON gets a 400 on the twin response topic; the session stays', async () => {
  const deep = '['.repeat(100000) + ']'.repeat(100000); // 200 KB, under max_packet
  const cases = {
    'nested 100,000 deep': deep,
    'duplicate keys': '{"a":1,"a":2}',
    'NUL in a string': '{"a":"x\\u0000y"}',
    'giant number': `{"a":1${'0'.repeat(400)}}`,
    'not JSON': '{"a":',
  };
  let rid = 100;
  for (const [what, body] of Object.entries(cases)) {
    const c = await rawConnect(server);
    try {
      await c.write(deviceConnect('h-1', key));
      await c.write(subscribe(['$iothub/twin/res/#']));
      rid++;
      await c.write(publish(`$iothub/twin/PATCH/properties/reported/?$rid=${rid}`, body));
      const topic = Buffer.from(`$iothub/twin/res/400/?$rid=${rid}`);
      await withTimeout((async () => {
        while (!c.received.includes(topic) && !c.sock.destroyed) await new Promise((r) => setTimeout(r, 20));
      })(), 5000, `400 for ${what}`);
      assert.ok(c.received.includes(topic), `${what}: a 400 answer before any close`);
    } finally {
      c.end();
    }
    await stillServing(what);
  }
  const twin = (await registry.getTwin('h-1')).responseBody;
  assert.deepEqual(Object.keys(twin.properties.reported).filter((k) => !k.startsWith('$')), [], 'nothing was stored');
});

test('thousands of subscriptions stay bounded', async () => {
  const c = await rawConnect(server);
  await c.write(deviceConnect('h-1', key));
  const rss0 = rssKiB(server);
  const batch = [];
  for (let i = 1; i <= 5000; i++) batch.push(subscribe(Array.from({ length: 16 }, (_, k) => `t/${k}/${i}`), i));
  let grown;
  try {
    await c.write(Buffer.concat(batch));
    await new Promise((r) => setTimeout(r, 500));
    grown = rssKiB(server) - rss0;
  } finally {
    c.end();
  }
  assertRssBound(grown, 16 * 1024, '80,000 subscription filters');
  await stillServing('subscription flood');
});

test('a CONNECT dripped one byte at a time is cut off at the CONNECT deadline', async () => {
  const bytes = deviceConnect('h-1', key);
  const c = await rawConnect(server);
  let i = 0;
  const drip = setInterval(() => { if (i < bytes.length - 1 && !c.sock.destroyed) c.sock.write(bytes.subarray(i, ++i)); }, 500);
  try {
    const ms = await withTimeout(c.closed, 14000, 'the CONNECT deadline');
    assert.ok(ms >= 9000 && ms < 13000, `closed after ${ms} ms (the deadline is 10 s)`);
  } finally {
    clearInterval(drip);
    c.end();
  }
  await stillServing('dripped CONNECT');
});

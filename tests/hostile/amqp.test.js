// Hostile AMQP input against the real binary (issue 19): garbage after the
// protocol header, a SASL frame over the limit, put-tokens with a wrong
// signature or an expired token, a token that expires under live links,
// 10,000 links on one connection, a device link (device AMQP is not
// served). Each case ends in a refusal or a closed connection; after each
// one the server is still up and the service SDK on another connection
// still sends cloud-to-device messages.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { interop, Server, withTimeout, rawConnect, expectClose, rssKiB, assertRssBound } = require('./lib');
const { parseCs, waitFor } = require('../interop/lib/server');

const { Registry, Client: ServiceClient, Amqp } = interop('azure-iothub');
const { Message, SharedAccessSignature } = interop('azure-iot-common');
const { Connection } = interop('rhea-promise');
const { Client: DeviceClient } = interop('azure-iot-device');
const { AmqpWs: DeviceAmqpWs, Amqp: DeviceAmqp } = interop('azure-iot-device-amqp');

let server;
let registry;
let witness;
let round = 0;

before(async () => {
  server = await new Server({ name: 'hostile-amqp' }).start();
  registry = Registry.fromConnectionString(server.ownerCs());
  await registry.create({ deviceId: 'witness' });
  witness = ServiceClient.fromConnectionString(server.ownerCs(), Amqp);
  await withTimeout(witness.open(), 10000, 'witness open');
});

after(async () => {
  await witness?.close();
  await server?.stop();
});

// The server is up and the witness service client still queues messages.
async function stillServing(what) {
  assert.equal(server.proc.exitCode, null, `server exited after ${what}`);
  round++;
  await withTimeout(witness.send('witness', new Message(`round ${round}`)), 5000, `witness send after ${what}`);
  const n = (await registry.get('witness')).responseBody.cloudToDeviceMessageCount;
  assert.equal(n, Math.min(round, 50), `witness queue after ${what}`);
}

// The server's log (read from its stderr pipe, which may trail what the
// client saw on the socket) comes to say so.
const logged = (re) => waitFor(() => re.test(server.log), 5000, `the log to say ${re}`);

const AMQP_PORT = { port: 5671 };
const BARE = Buffer.from('AMQP\x00\x01\x00\x00', 'latin1');
const SASL = Buffer.from('AMQP\x03\x01\x00\x00', 'latin1');

// A frame header: size, doff 2, type (0 AMQP, 1 SASL), channel 0.
function frameHeader(size, type) {
  const b = Buffer.alloc(8);
  b.writeUInt32BE(size);
  b[4] = 2;
  b[5] = type;
  return b;
}

test('garbage instead of the header, and after it, closes the connection', async () => {
  let r = await expectClose(server, [Buffer.from('GET / HTTP/1.1\r\n\r\n')], 5000, 'an HTTP request', AMQP_PORT);
  assert.ok(r.received.length === 0 || r.received.subarray(0, 4).toString() === 'AMQP', 'nothing but AMQP back');
  // a frame the engine cannot read: closed with amqp:connection:framing-error
  r = await expectClose(server, [BARE, Buffer.alloc(64, 0xff)], 5000, 'a frame of 0xff bytes', AMQP_PORT);
  assert.match(r.received.toString('latin1'), /amqp:connection:framing-error/);
  // a frame whose body is no performative is skipped by the engine: the
  // connection never opens, and the handshake deadline (10 s) closes it
  r = await expectClose(server, [BARE, Buffer.from('\x00\x00\x00\x10\x02\x00\x00\x00garbagegarbage!!', 'latin1')], 12000, 'garbage after the header', AMQP_PORT);
  assert.equal(r.received.subarray(0, 8).toString('latin1'), BARE.toString('latin1'));
  await stillServing('garbage');
});

test('a SASL frame over the limit closes the connection at once', async () => {
  // declared: 16 MiB; sent: its first 64 KiB
  let r = await expectClose(server, [SASL, frameHeader(16 * 1024 * 1024, 1), Buffer.alloc(64 * 1024, 0x41)], 5000, 'a 16 MiB SASL frame', AMQP_PORT);
  assert.ok(r.ms < 5000);
  // a whole SASL frame bigger than the largest frame accepted (64 KiB)
  r = await expectClose(server, [SASL, frameHeader(200 * 1024, 1), Buffer.alloc(200 * 1024 - 8, 0x41)], 5000, 'a 200 KiB SASL frame', AMQP_PORT);
  await stillServing('SASL frames');
});

// An AMQP frame on a channel: a performative encoded by hand (doff 2).
function frame(channel, body) {
  const b = frameHeader(8 + body.length, 0);
  b.writeUInt16BE(channel, 6);
  return Buffer.concat([b, body]);
}
const OPEN = Buffer.from('005310c00f02a10178a1096c6f63616c686f7374', 'hex'); // container "x", hostname "localhost"
const BEGIN = Buffer.from('005311c00d04404370000008007000000800', 'hex');
const END = Buffer.from('00531745', 'hex');
const DISPOSITION = Buffer.from('005315c0050441434041', 'hex'); // receiver, first 0, settled
const FLOW = Buffer.from('005313c00d04437000000800437000000800', 'hex'); // a session flow

// The AMQP frames in bytes received after the protocol header.
function framesOf(received) {
  const out = [];
  for (let at = 8; at + 8 <= received.length;) {
    const size = received.readUInt32BE(at);
    if (size < 8 || at + size > received.length) break;
    out.push({ channel: received.readUInt16BE(at + 6), body: received.subarray(at + 4 * received[at + 4], at + size) });
    at += size;
  }
  return out;
}

test('frames a client sends on a channel after ending it are dropped: the connection goes on', async () => {
  // rhea settles the deliveries that reach it after its end frame; the
  // engine alone would close the whole connection ("no such channel").
  const c = await rawConnect(server, AMQP_PORT);
  try {
    await c.write(Buffer.concat([BARE, frame(0, OPEN), frame(0, BEGIN)]));
    await c.write(Buffer.concat([frame(0, END), frame(0, DISPOSITION), frame(0, FLOW)]));
    // byte by byte too: the frames split anywhere
    const more = Buffer.concat([frame(1, BEGIN), frame(1, END), frame(1, DISPOSITION)]);
    for (const b of more) await c.write(Buffer.from([b]));
    await c.write(frame(2, BEGIN));
    const is = (f, code) => f.body.subarray(0, 3).equals(Buffer.from([0, 0x53, code]));
    const closes = () => framesOf(c.received).filter((f) => is(f, 0x18));
    // the server's begin names the client's channel as its remote-channel
    // (a ushort, the first field of its list)
    const remote = (f) => (f.body[3] === 0xc0 ? f.body.subarray(6, 9) : f.body.subarray(12, 15));
    const begun = () => framesOf(c.received).some((f) => is(f, 0x11) && remote(f).equals(Buffer.from([0x60, 0, 2])));
    await withTimeout((async () => {
      while (!begun() && !closes().length) await new Promise((r) => setTimeout(r, 20));
    })(), 5000, 'the begin on channel 2 answered');
    assert.equal(closes().length, 0, `the server closed the connection: ${closes().map((f) => f.body.toString('latin1')).join(' ')}`);
    const ends = framesOf(c.received).filter((f) => is(f, 0x17));
    assert.equal(ends.length, 2, 'each end answered');
  } finally {
    c.end();
  }
  await logged(/frame\(s\) on a channel the client had ended dropped/);
  await stillServing('frames after end');
});

test('put-tokens with a wrong signature or an expired token are refused', async () => {
  const o = parseCs(server.ownerCs());
  const wrong = ServiceClient.fromConnectionString(`HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=${Buffer.alloc(32, 7).toString('base64')}`, Amqp);
  await assert.rejects(withTimeout(wrong.open(), 15000, 'open with a wrong key'), /connect|unauthori/i);
  await wrong.close().catch(() => {});
  const expired = SharedAccessSignature.create('localhost', 'iothubowner', o.SharedAccessKey, Math.floor(Date.now() / 1000) - 60).toString();
  const old = ServiceClient.fromSharedAccessSignature(expired, Amqp);
  await assert.rejects(withTimeout(old.open(), 15000, 'open with an expired token'), /connect|unauthori/i);
  await old.close().catch(() => {});
  await logged(/put-token for localhost refused: signature does not match/);
  await logged(/put-token for localhost refused: the token has expired/);
  await stillServing('bad tokens');
});

test('a token that expires closes the links it authorized', async () => {
  const o = parseCs(server.ownerCs());
  const token = SharedAccessSignature.create('localhost', 'iothubowner', o.SharedAccessKey, Math.floor(Date.now() / 1000) + 3).toString();
  const c = ServiceClient.fromSharedAccessSignature(token, Amqp);
  c.on('error', () => {});
  await withTimeout(c.open(), 10000, 'open with a short token');
  await withTimeout(c.send('witness', new Message('while valid')), 5000, 'send while the token is valid');
  round++;
  await new Promise((r) => setTimeout(r, 5000));
  await logged(/link \S+ closed: the token this link was authorized with has expired/);
  await assert.rejects(withTimeout(c.send('witness', new Message('after expiry')), 15000, 'send after expiry'));
  await c.close().catch(() => {});
  await stillServing('an expired token');
});

test('10,000 links on one connection: refused past the limit, then the connection is closed; memory stays bounded', async () => {
  const before = rssKiB(server);
  const conn = new Connection({ transport: 'tls', host: 'localhost', hostname: 'localhost', port: 5671, reconnect: false });
  await conn.open();
  const session = await conn.createSession();
  const closed = new Promise((resolve) => conn.once('connection_error', (ctx) => resolve(ctx.connection?.error))
    .once('disconnected', () => resolve(null)));
  // attach without waiting: the way a flood arrives
  const raw = session._session;
  for (let i = 0; i < 10000 && conn.isOpen(); i++) raw.open_receiver({ source: { address: '$management' } });
  const error = await withTimeout(closed, 20000, 'the connection to be closed');
  assert.equal(error?.condition, 'amqp:resource-limit-exceeded');
  assert.equal(error?.description, 'too many links refused on one connection');
  await conn.close().catch(() => {});
  await logged(/connection closed: too many links refused on one connection/);
  assertRssBound(rssKiB(server) - before, 32768, '10,000 links');
  await stillServing('10,000 links');
});

test('a device over AMQP gets a clear refusal (devices connect with MQTT or HTTPS)', async () => {
  const key = (await registry.create({ deviceId: 'amqp-dev' })).responseBody.authentication.symmetricKey.primaryKey;
  for (const transport of [DeviceAmqp, DeviceAmqpWs]) {
    const d = DeviceClient.fromConnectionString(`HostName=localhost;DeviceId=amqp-dev;SharedAccessKey=${key}`, transport);
    const err = await withTimeout(d.open().then(() => null, (e) => e), 20000, 'device AMQP open');
    assert.ok(err, 'the AMQP device connected');
    await d.close().catch(() => {});
  }
  await logged(/fleethub does not serve devices over AMQP/);
  await stillServing('a device over AMQP');
});

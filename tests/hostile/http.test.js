// Hostile HTTP and WebSocket input, byte-exact, against the real binary:
// header floods and huge headers, Content-Length with Transfer-Encoding,
// broken chunked bodies, requests dripped slowly (slowloris), hostile ids
// in paths, hostile JSON bodies, and WebSocket frames a client must never
// send. Each gets a 4xx or a closed connection; after each the server is up
// and the REST API answers a well-behaved client.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { interop, Server, withTimeout, rawConnect, expectClose } = require('./lib');
const { rest } = require('../interop/lib/server');

const { Registry } = interop('azure-iothub');
const { SharedAccessSignature } = interop('azure-iot-common');

let server;
let registry;
let round = 0;

before(async () => {
  server = await new Server({ name: 'hostile-http', serverExtra: ['request_timeout_s = 2'] }).start();
  registry = Registry.fromConnectionString(server.ownerCs());
  await registry.create({ deviceId: 'keeper' });
});

after(async () => {
  await server?.stop();
});

async function stillServing(what) {
  assert.equal(server.proc.exitCode, null, `server exited after ${what}`);
  round++;
  const r = await rest(server.ownerCs(), 'PATCH', '/twins/keeper?api-version=2021-04-12', { tags: { round } });
  assert.equal(r.status, 200, `twin patch after ${what}: ${r.text}`);
  assert.equal((await registry.getTwin('keeper')).responseBody.tags.round, round);
}

function ownerAuth() {
  return SharedAccessSignature.create('localhost', 'iothubowner',
    /SharedAccessKey=([^;]+)/.exec(server.ownerCs())[1], Math.floor(Date.now() / 1000) + 3600).toString();
}

// Sends raw request bytes; returns the status of the (first) answer.
async function statusOf(bytes, what) {
  const r = await expectClose(server, bytes, 5000, what, { port: 443 });
  const m = /^HTTP\/1\.1 (\d{3}) /.exec(r.received.toString('latin1'));
  return m ? Number(m[1]) : null;
}

test('malformed framing gets a 4xx and a close', async () => {
  const many = Array.from({ length: 1000 }, (_, i) => `X-Flood-${i}: y`).join('\r\n');
  const cases = [
    ['1,000 headers', `GET /devices/keeper HTTP/1.1\r\nHost: localhost\r\n${many}\r\n\r\n`, 431],
    ['one 100 KB header', `GET /devices/keeper HTTP/1.1\r\nHost: localhost\r\nX-Big: ${'a'.repeat(100000)}\r\n\r\n`, 431],
    ['Content-Length with Transfer-Encoding', 'PUT /devices/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 400],
    ['two Content-Lengths', 'PUT /devices/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}', 400],
    ['bad chunk size', 'PUT /devices/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n', 400],
    ['chunk longer than declared', 'PUT /devices/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}xx\r\n0\r\n\r\n', 400],
    ['chunked body above the limit', `PUT /devices/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n${'100001\r\n' + 'a'.repeat(0x100001) + '\r\n'}0\r\n\r\n`, 413],
    ['NUL in the request line', 'GET /devices/\x00 HTTP/1.1\r\nHost: localhost\r\n\r\n', 400],
    ['not HTTP', '\x00\x01\x02\x03\r\n\r\n', 400],
  ];
  for (const [what, bytes, status] of cases) {
    assert.equal(await statusOf(Buffer.from(bytes, 'latin1'), what), status, what);
    await stillServing(what);
  }
});

test('a request dripped slowly is cut off at request_timeout_s', async () => {
  for (const [what, bytes] of [
    ['headers', `GET /devices/keeper HTTP/1.1\r\nHost: localhost\r\nAuthorization: ${ownerAuth()}\r\n\r\n`],
    ['body', `PUT /devices/slow HTTP/1.1\r\nHost: localhost\r\nContent-Length: 200\r\n\r\n${' '.repeat(200)}`],
  ]) {
    const c = await rawConnect(server, { port: 443 });
    let i = 0;
    const drip = setInterval(() => { if (i < bytes.length - 1 && !c.sock.destroyed) c.sock.write(bytes.slice(i, ++i)); }, 100);
    try {
      const ms = await withTimeout(c.closed, 6000, `the request deadline (${what})`);
      assert.ok(ms >= 1800 && ms < 4500, `${what}: closed after ${ms} ms (request_timeout_s = 2)`);
    } finally {
      clearInterval(drip);
      c.end();
    }
    await stillServing(`slow ${what}`);
  }
  // An idle keep-alive connection between requests is not cut at 2 s.
  const c = await rawConnect(server, { port: 443 });
  await c.write(`GET /devices/keeper?api-version=2021-04-12 HTTP/1.1\r\nHost: localhost\r\nAuthorization: ${ownerAuth()}\r\n\r\n`);
  await new Promise((r) => setTimeout(r, 3000));
  assert.equal(c.sock.destroyed, false, 'idle keep-alive connection kept past request_timeout_s');
  assert.match(c.received.toString(), /^HTTP\/1\.1 200 /);
  c.end();
});

test('hostile ids in paths are refused and reach nothing', async () => {
  const cs = server.ownerCs();
  for (const id of ['..', '..%2F..%2Fetc%2Fpasswd', 'a%00b', '%C3%28', '%FF', 'x'.repeat(200), '%2E%2E']) {
    const r = await rest(cs, 'PUT', `/devices/${id}?api-version=2021-04-12`, { deviceId: decodeURIComponent(id.replace(/%00|%C3%28|%FF/g, 'x')) });
    assert.ok(r.status === 400 || r.status === 404, `PUT /devices/${id}: ${r.status} ${r.text}`);
    const g = await rest(cs, 'GET', `/twins/${id}?api-version=2021-04-12`);
    assert.ok(g.status === 400 || g.status === 404, `GET /twins/${id}: ${g.status} ${g.text}`);
  }
  const all = (await registry.list()).responseBody.map((d) => d.deviceId);
  assert.deepEqual(all, ['keeper'], 'no device was created');
  await stillServing('hostile ids');
});

test('hostile JSON bodies get a 400 and change nothing', async () => {
  const cs = server.ownerCs();
  const before = (await registry.getTwin('keeper')).responseBody;
  const bodies = {
    'nested 100,000 deep': '{"tags":' + '['.repeat(100000) + ']'.repeat(100000) + '}',
    'duplicate keys': '{"tags":{"a":1,"a":2}}',
    'NUL in a string': '{"tags":{"a":"x\\u0000y"}}',
    'NUL byte raw': '{"tags":{"a":"x\u0000y"}}',
    'giant number': `{"tags":{"a":1${'0'.repeat(400)}}}`,
    'invalid UTF-8': Buffer.concat([Buffer.from('{"tags":{"a":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}}')]),
    'truncated': '{"tags":{"a":',
  };
  for (const [what, body] of Object.entries(bodies)) {
    const r = await rest(cs, 'PATCH', '/twins/keeper?api-version=2021-04-12', body);
    assert.equal(r.status, 400, `${what}: ${r.status} ${r.text.slice(0, 200)}`);
    assert.ok(r.body && (r.body.Message || r.body.message), `${what}: an error message`);
  }
  const afterTwin = (await registry.getTwin('keeper')).responseBody;
  assert.equal(afterTwin.etag, before.etag, 'the twin is unchanged');
  await stillServing('hostile JSON');
});

// ---- WebSocket ----

const UPGRADE = 'GET /$iothub/websocket HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
  'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n';

function frame(opcode, payload, { fin = true, mask = true, len } = {}) {
  const p = Buffer.from(payload);
  const n = len ?? p.length;
  const head = [(fin ? 0x80 : 0) | opcode];
  if (n < 126) head.push((mask ? 0x80 : 0) | n);
  else if (n < 65536) head.push((mask ? 0x80 : 0) | 126, n >> 8, n & 0xff);
  else {
    head.push((mask ? 0x80 : 0) | 127);
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(BigInt(n));
    head.push(...b);
  }
  if (!mask) return Buffer.concat([Buffer.from(head), p]);
  const key = Buffer.from([1, 2, 3, 4]);
  return Buffer.concat([Buffer.from(head), key, Buffer.from(p.map((x, i) => x ^ key[i % 4]))]);
}

test('WebSocket frames a client must not send close the connection', async () => {
  const cases = {
    'unmasked frame': frame(2, [0x10, 0x00], { mask: false }),
    'fragmented ping': frame(9, 'x', { fin: false }),
    'control frame over 125 bytes': frame(9, Buffer.alloc(126)),
    'reserved opcode 3': frame(3, 'x'),
    'RSV bit set': Buffer.from([0xc2, 0x80, 1, 2, 3, 4]),
    'continuation without a start': frame(0, 'x'),
    'frame length of 2^63': frame(2, '', { len: 2 ** 53 }),
  };
  for (const [what, bytes] of Object.entries(cases)) {
    const r = await expectClose(server, [Buffer.from(UPGRADE), bytes], 5000, what, { port: 443 });
    assert.match(r.received.toString('latin1'), /^HTTP\/1\.1 101 /, `${what}: upgraded first`);
    await stillServing(what);
  }
});

// The HTTPS listener under pipelining and malformed requests: every
// pipelined request is answered in order without the server growing its
// stack or memory per request, and bad requests get a 4xx and a close.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('fs');
const tls = require('tls');
const { Registry } = require('azure-iothub');
const { Server, withTimeout, waitFor } = require('./lib/server');

let server;

before(async () => {
  server = await new Server({ name: 'http' }).start();
});

after(async () => {
  await server?.stop();
});

function exchange(bytes, until) {
  return new Promise((resolve, reject) => {
    const sock = tls.connect({ host: '127.0.0.1', port: 443, servername: 'localhost', ca: fs.readFileSync(server.caPath) });
    let text = '';
    sock.on('data', (d) => {
      text += d.toString('latin1');
      if (until && until(text)) sock.destroy();
    });
    sock.on('close', () => resolve(text));
    sock.on('error', reject);
    sock.once('secureConnect', () => sock.write(bytes));
  });
}

test('20,000 pipelined requests on one connection are all answered, in order', async () => {
  const n = 20000;
  const one = 'GET /devices/x HTTP/1.1\r\nHost: localhost\r\n\r\n';
  const text = await withTimeout(exchange(one.repeat(n - 1) + one.replace('\r\n\r\n', '\r\nConnection: close\r\n\r\n')), 30000, 'answers');
  const statuses = text.match(/HTTP\/1\.1 \d+/g);
  assert.equal(statuses.length, n);
  assert.ok(statuses.every((s) => s === 'HTTP/1.1 401'), 'each is refused for lack of a token');
  // Still serving.
  const r = Registry.fromConnectionString(server.ownerCs());
  await r.create({ deviceId: 'after-flood' });
});

test('malformed requests get a 4xx answer and a closed connection', async () => {
  const cases = [
    ['PUT /devices/x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 400],
    ['PUT /devices/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', 400],
    [`GET /${'a'.repeat(10000)} HTTP/1.1\r\nHost: h\r\n\r\n`, 414],
    [`GET / HTTP/1.1\r\n${Array.from({ length: 100 }, (_, i) => `X-${i}: y`).join('\r\n')}\r\n\r\n`, 431],
    ['PUT /devices/x HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999\r\n\r\n', 413],
    ['\x16\x03garbage\r\n\r\n', 400],
  ];
  for (const [bytes, status] of cases) {
    const text = await withTimeout(exchange(bytes), 5000, `answer to ${bytes.slice(0, 30)}`);
    assert.match(text, new RegExp(`^HTTP/1\\.1 ${status} `), `status for ${JSON.stringify(bytes.slice(0, 40))}`);
  }
});

test('connections beyond max_connections are closed at once; the others keep working', async () => {
  const limited = await new Server({ name: 'maxconn', mqtt: '127.0.0.1:18883', https: '127.0.0.1:18443', serverExtra: ['max_connections = 2'] }).start();
  const open = (port) => new Promise((resolve) => {
    const sock = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca: fs.readFileSync(limited.caPath) });
    sock.once('secureConnect', () => resolve({ sock, ok: true }));
    sock.once('error', () => resolve({ sock, ok: false }));
    sock.once('close', () => resolve({ sock, ok: false }));
  });
  try {
    const a = await open(18443);
    const b = await open(18883);
    assert.ok(a.ok && b.ok, 'two connections are accepted');
    const c = await withTimeout(open(18443), 5000, 'third connection');
    assert.equal(c.ok, false, 'the third is refused');
    a.sock.destroy();
    // The slot frees when the server has seen the close: until then a new
    // connection is refused, then one is accepted.
    const d = await waitFor(async () => {
      const r = await open(18443);
      if (!r.ok) r.sock.destroy();
      return r.ok ? r : null;
    }, 5000, 'a slot to free up');
    assert.ok(d.ok, 'a slot freed up');
    b.sock.destroy();
    d.sock.destroy();
  } finally {
    await limited.stop();
  }
});

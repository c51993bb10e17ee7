// Shared by the hostile-input tests: raw TLS connections that send exact
// bytes and record what comes back, hand-built MQTT packets (including ones
// no library would produce), and the checks that the server is still up
// and serving a well-behaved device after every case.
'use strict';
const fs = require('fs');
const path = require('path');
const tls = require('tls');
const { createRequire } = require('module');

// The npm test clients live in tests/interop/node_modules.
const interop = createRequire(path.join(__dirname, '../interop/package.json'));
const { Server, withTimeout, deviceCs } = require('../interop/lib/server');
const { SharedAccessSignature } = interop('azure-iot-common');

// A raw TLS connection: write(bytes), received (all bytes so far), closed
// (a promise of the close time in ms since the connection was opened).
function rawConnect(server, { host = '127.0.0.1', port = 8883, servername = 'localhost' } = {}) {
  return new Promise((resolve, reject) => {
    const sock = tls.connect({ host, port, servername, ca: fs.readFileSync(server.caPath) });
    const started = Date.now();
    const conn = {
      sock,
      received: Buffer.alloc(0),
      write: (b) => new Promise((res) => (sock.destroyed ? res() : sock.write(b, () => res()))),
      end: () => sock.destroy(),
    };
    conn.closed = new Promise((res) => sock.once('close', () => res(Date.now() - started)));
    sock.on('data', (d) => { conn.received = Buffer.concat([conn.received, d]); });
    sock.on('error', () => {}); // resets are an acceptable way to be closed
    sock.once('secureConnect', () => resolve(conn));
    sock.once('error', reject);
  });
}

// Sends bytes on a new connection and waits for the server to close it.
// Returns { received, ms }; fails when the server keeps it open past limitMs.
async function expectClose(server, bytes, limitMs, what, opts) {
  const c = await rawConnect(server, opts);
  for (const b of [].concat(bytes)) await c.write(b);
  try {
    const ms = await withTimeout(c.closed, limitMs, `the server to close the connection after ${what}`);
    return { received: c.received, ms };
  } finally {
    c.end();
  }
}

// ---- MQTT 3.1.1 packets, encoded here byte by byte ----

function varint(n) {
  const out = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return Buffer.from(out);
}

function str(s) {
  const b = Buffer.isBuffer(s) ? s : Buffer.from(s, 'utf8');
  const len = Buffer.alloc(2);
  len.writeUInt16BE(b.length);
  return Buffer.concat([len, b]);
}

function packet(first, body) {
  return Buffer.concat([Buffer.from([first]), varint(body.length), body]);
}

// CONNECT with user name and password (either may be omitted); flags may
// be forced to test reserved bits.
function connect({ clientId, username, password, keepalive = 60, flags, protocol = 'MQTT', level = 4 }) {
  let f = 0x02; // clean session
  if (username !== undefined) f |= 0x80;
  if (password !== undefined) f |= 0x40;
  if (flags !== undefined) f = flags;
  const head = Buffer.concat([str(protocol), Buffer.from([level, f, keepalive >> 8, keepalive & 0xff])]);
  const parts = [head, str(clientId)];
  if (username !== undefined) parts.push(str(username));
  if (password !== undefined) parts.push(str(password));
  return packet(0x10, Buffer.concat(parts));
}

function publish(topic, payload, { qos = 0, id = 1, flags } = {}) {
  const parts = [str(topic)];
  if (qos > 0) parts.push(Buffer.from([id >> 8, id & 0xff]));
  parts.push(Buffer.from(payload));
  return packet(flags ?? (0x30 | (qos << 1)), Buffer.concat(parts));
}

function subscribe(filters, id = 1) {
  const parts = [Buffer.from([id >> 8, id & 0xff])];
  for (const f of filters) parts.push(str(f), Buffer.from([1]));
  return packet(0x82, Buffer.concat(parts));
}

// A valid CONNECT for deviceId on hub `localhost` with its key.
function deviceConnect(deviceId, key, extra = {}) {
  const password = SharedAccessSignature.create(encodeURIComponent(`localhost/devices/${deviceId}`), null, key,
    Math.floor(Date.now() / 1000) + 3600).toString();
  return connect({ clientId: deviceId, username: `localhost/${deviceId}/?api-version=2021-04-12`, password, ...extra });
}

const CONNACK_OK = [0x20, 0x02, 0x00, 0x00];

// Memory bounds are measured in the normal build only: under AddressSanitizer
// the quarantine of freed blocks and the redzones make RSS say nothing about
// what the server keeps (the sanitizer build checks memory errors instead).
const SANITIZED = !!process.env.FLEETHUB_SANITIZED;

function assertRssBound(grownKiB, limitKiB, what) {
  process.stdout.write(`# ${what}: RSS grew ${grownKiB} KiB (bound ${limitKiB} KiB${SANITIZED ? ', not applied in the sanitizer build' : ''})\n`);
  if (SANITIZED) return;
  if (!(grownKiB < limitKiB)) throw new Error(`${what}: RSS grew by ${grownKiB} KiB (bound ${limitKiB} KiB)`);
}

// The server's resident memory in KiB (Linux).
function rssKiB(server) {
  const status = fs.readFileSync(`/proc/${server.proc.pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)[1]);
}

module.exports = {
  interop, Server, withTimeout, deviceCs, rawConnect, expectClose,
  varint, str, packet, connect, publish, subscribe, deviceConnect, CONNACK_OK, rssKiB, assertRssBound,
};

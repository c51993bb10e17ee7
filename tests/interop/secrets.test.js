// Secrets at rest: everything fleethub creates in its data directory (the
// store with its keys, cli.conf with connection strings, the development CA
// and server keys) is readable by its owner only, also when started with a
// permissive umask.
'use strict';
const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('fs');
const path = require('path');
const { Server } = require('./lib/server');

function walk(dir, out = []) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    out.push(p);
    if (e.isDirectory()) walk(p, out);
  }
  return out;
}

test('the data directory is 0700 and every file in it 0600', async () => {
  const old = process.umask(0o022);
  let server;
  try {
    server = await new Server({ name: 'secrets', devCa: true }).start();
  } finally {
    process.umask(old);
  }
  try {
    // A write so that the store's journal files exist too.
    const r = server.cli(['device', 'create', 'secret-1']);
    assert.equal(r.code, 0, r.stderr);
    const entries = [server.dataDir, ...walk(server.dataDir)];
    const names = entries.map((p) => path.relative(server.dataDir, p) || '.');
    for (const want of ['.', 'cli.conf', 'fleethub.db', 'tls', 'tls/ca.key', 'tls/server.key']) {
      assert.ok(names.includes(want), `${want} exists: ${names}`);
    }
    for (const p of entries) {
      const st = fs.statSync(p);
      const mode = st.mode & 0o777;
      const want = st.isDirectory() ? 0o700 : 0o600;
      assert.equal(mode.toString(8), want.toString(8), `${path.relative(server.dataDir, p) || '.'}`);
    }
  } finally {
    await server.stop();
  }
});

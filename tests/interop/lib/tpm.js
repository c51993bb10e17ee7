// Software TPMs for the TPM tests: swtpm on loopback with a fresh state
// directory, and the tpm2-tools device (tpm-device.sh) that drives one.
'use strict';
const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');

// swtpm serving TPM 2.0 commands on 127.0.0.1:port (its control port is
// port + 1). startup-clear: it sends TPM2_Startup itself (the Node SDK
// never does).
class Swtpm {
  constructor(dir, port) {
    this.dir = dir;
    this.port = port;
    this.state = path.join(dir, `swtpm-${port}`);
    fs.mkdirSync(this.state, { recursive: true });
  }

  async start() {
    this.proc = spawn('swtpm', ['socket', '--tpm2', '--tpmstate', `dir=${this.state}`,
      '--flags', 'not-need-init,startup-clear',
      '--server', `type=tcp,port=${this.port},bindaddr=127.0.0.1`,
      '--ctrl', `type=tcp,port=${this.port + 1},bindaddr=127.0.0.1`], { stdio: 'ignore' });
    for (let i = 0; i < 100; i++) {
      if (await new Promise((resolve) => {
        const s = net.connect(this.port + 1, '127.0.0.1', () => { s.end(); resolve(true); });
        s.on('error', () => resolve(false));
      })) return this;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`swtpm did not listen on ${this.port}`);
  }

  stop() {
    this.proc?.kill('SIGTERM');
  }
}

// The tpm2-tools device against swtpm tpm, working in dir w.
class ToolsDevice {
  constructor(tpm, w) {
    this.w = w;
    fs.mkdirSync(w, { recursive: true });
    this.env = { ...process.env, W: w, TPM2TOOLS_TCTI: `swtpm:host=127.0.0.1,port=${tpm.port}` };
  }

  run(...args) {
    return execFileSync(path.join(__dirname, '..', 'tpm-device.sh'), args,
      { env: this.env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  }

  // { endorsementKey, storageRootKey } as base64 TPM2B_PUBLIC.
  keys() {
    this.run('keys');
    return {
      endorsementKey: fs.readFileSync(path.join(this.w, 'ek.pub')).toString('base64'),
      storageRootKey: fs.readFileSync(path.join(this.w, 'srk.pub')).toString('base64'),
    };
  }

  activate(blobB64) {
    const f = path.join(this.w, `blob-${Date.now()}.bin`);
    fs.writeFileSync(f, Buffer.from(blobB64, 'base64'));
    this.run('activate', f);
  }

  sign(text) {
    return this.run('sign', text).trim();
  }

  // A SAS token for resource, signed by the TPM's current key; keyName
  // appended when given. style: how the official clients encode sr
  // (tpm.md §1.2): 'node' (encodeURIComponent, %2F), 'c' (the C SDK's
  // lowercase %2f), 'aziot' (IoT Edge: the whole audience lowercased).
  sas(resource, keyName, ttl = 3600, style = 'node') {
    const enc = encodeURIComponent(style === 'aziot' ? resource.toLowerCase() : resource);
    const sr = style === 'node' ? enc : enc.replace(/%2F/g, '%2f');
    const se = Math.floor(Date.now() / 1000) + ttl;
    const sig = encodeURIComponent(this.sign(`${sr}\n${se}`));
    return `SharedAccessSignature sr=${sr}&sig=${sig}&se=${se}${keyName ? `&skn=${keyName}` : ''}`;
  }
}

module.exports = { Swtpm, ToolsDevice };

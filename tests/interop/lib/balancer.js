// A TCP balancer for tests with several fleethub nodes: it listens on one
// address (the one a hub's host name resolves to) and passes every new
// connection, bytes unchanged (TLS goes through to the node), to one of the
// nodes: the preferred one, or the next when that one refuses. What an
// operator's HAProxy in TCP mode or DNS round robin does, small enough to
// steer from a test.
'use strict';
const net = require('net');

class Balancer {
  // host: the address to listen on; ports: [8883, 443]; nodes: their addresses.
  constructor(host, ports, nodes) {
    this.host = host;
    this.ports = ports;
    this.nodes = nodes;
    this.preferred = 0;
    this.servers = [];
    this.sockets = new Set();
  }

  // New connections go to nodes[i] first.
  prefer(i) { this.preferred = i; }

  _connect(client, port, tries) {
    const i = (this.preferred + tries) % this.nodes.length;
    const upstream = net.connect({ host: this.nodes[i], port });
    let open = false;
    upstream.once('connect', () => {
      open = true;
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
    });
    upstream.on('error', () => {
      if (!open && tries + 1 < this.nodes.length) this._connect(client, port, tries + 1);
      else client.destroy();
    });
    // A node that refused is not the end: the next one is tried (above).
    upstream.on('close', () => { if (open) client.destroy(); });
    if (tries === 0) {
      client.on('close', () => { for (const s of this.sockets) if (s.client === client) s.destroy(); });
      client.on('error', () => client.destroy());
    }
    upstream.client = client;
    this.sockets.add(upstream);
    upstream.on('close', () => this.sockets.delete(upstream));
  }

  start() {
    return Promise.all(this.ports.map((port) => new Promise((resolve, reject) => {
      const s = net.createServer({ pauseOnConnect: true }, (client) => {
        this.sockets.add(client);
        client.on('close', () => this.sockets.delete(client));
        this._connect(client, port, 0);
      });
      s.once('error', reject);
      s.listen(port, this.host, () => resolve());
      this.servers.push(s);
    })));
  }

  close() {
    for (const s of this.sockets) s.destroy();
    return Promise.all(this.servers.map((s) => new Promise((r) => s.close(() => r()))));
  }
}

module.exports = { Balancer };

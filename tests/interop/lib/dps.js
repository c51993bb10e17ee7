// Helpers for the DPS tests: device registration with the official
// provisioning SDK, derived group keys, and a custom allocation webhook
// server (HTTPS with its own CA) whose answers the tests script.
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const https = require('https');
const path = require('path');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Mqtt, MqttWs } = require('azure-iot-provisioning-device-mqtt');
const { Http } = require('azure-iot-provisioning-device-http');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
const { X509Security } = require('azure-iot-security-x509');
const { withTimeout } = require('./server');

const CERTS = process.env.FLEETHUB_TEST_CERTS;
const DPS = 'dps.fleethub.test';

function deriveKey(groupKey, regId) {
  return crypto.createHmac('sha256', Buffer.from(groupKey, 'base64')).update(regId, 'utf8').digest('base64');
}

const transports = {
  mqtt: () => [`${DPS}:8883`, new Mqtt()],
  ws: () => [DPS, new MqttWs()],
  https: () => [DPS, new Http()],
};

// Registers regId with key over transport ('mqtt' | 'ws' | 'https'); resolves
// the registration result (registrationState), rejects with the SDK error.
async function register(idScope, transport, regId, key, payload) {
  const [host, t] = transports[transport]();
  const client = ProvisioningDeviceClient.create(host, idScope, t, new SymmetricKeySecurityClient(regId, key));
  if (payload !== undefined) client.setProvisioningPayload(payload);
  return withTimeout(client.register(), 30000, `register ${regId} over ${transport}`);
}

// Registers regId with a client certificate ({ cert, key }: PEM texts, the
// cert possibly followed by its chain) over transport, as register does.
async function registerX509(idScope, transport, regId, cert, payload) {
  const [host, t] = transports[transport]();
  const client = ProvisioningDeviceClient.create(host, idScope, t, new X509Security(regId, cert));
  if (payload !== undefined) client.setProvisioningPayload(payload);
  return withTimeout(client.register(), 30000, `register ${regId} over ${transport} with a certificate`);
}

// A webhook: handler(req, body) returns { status, body, delayMs } or null
// (never answer). Every call is recorded in `calls` ({ url, body }).
class Webhook {
  constructor(certName = 'webhook') {
    this.calls = [];
    this.handler = () => ({ status: 500, body: {} });
    this.server = https.createServer({
      key: fs.readFileSync(path.join(CERTS, `${certName}.key`)),
      cert: fs.readFileSync(path.join(CERTS, `${certName}.pem`)),
    }, (req, res) => {
      let text = '';
      // The DPS drops connections it gave up on (deadline): not an error here.
      req.on('error', () => {});
      res.on('error', () => {});
      req.on('data', (d) => { text += d; });
      req.on('end', () => {
        let body = null;
        try { body = JSON.parse(text); } catch (e) { /* recorded as null */ }
        this.calls.push({ url: req.url, headers: req.headers, body });
        const answer = this.handler(req, body);
        if (!answer) return; // hang: the DPS deadline must fire
        const send = () => {
          const data = typeof answer.body === 'string' ? answer.body : JSON.stringify(answer.body ?? {});
          res.writeHead(answer.status, { 'Content-Type': 'application/json' });
          res.end(data);
        };
        if (answer.delayMs) setTimeout(send, answer.delayMs); else send();
      });
    });
  }

  // Connections the DPS gave up on (deadline, untrusted certificate) end
  // with resets: expected here, never a test failure.
  quiet() {
    this.server.on('connection', (sock) => sock.on('error', () => {}));
    this.server.on('secureConnection', (sock) => sock.on('error', () => {}));
    this.server.on('tlsClientError', () => {});
    this.server.on('clientError', (e, sock) => sock.destroy());
  }

  listen() {
    this.quiet();
    return new Promise((resolve) => {
      this.server.listen(0, '127.0.0.1', () => {
        this.port = this.server.address().port;
        resolve(this);
      });
    });
  }

  url(pathAndQuery) {
    return `https://127.0.0.1:${this.port}${pathAndQuery}`;
  }

  close() {
    this.server.closeAllConnections?.();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

module.exports = { DPS, deriveKey, register, registerX509, Webhook, CERTS };

// A tiny custom allocation webhook for fleethub's DPS (Node, no packages).
// It sends toasters to the first linked hub and everything else to the
// last, gives each device an initial twin, and hands the device a payload.
//
//   node allocation-webhook.js            # https://127.0.0.1:7443/allocate
// Environment: WEBHOOK_CERT / WEBHOOK_KEY (PEM, HTTPS) or neither (plain
// http://, which fleethub accepts for loopback addresses only).
'use strict';
const fs = require('fs');
const http = require('http');
const https = require('https');

function allocate(request) {
  const ctx = request.deviceRuntimeContext;
  const model = ctx.payload?.modelId ?? 'unknown';
  const hubs = request.linkedHubs;
  const hub = model === 'toaster' ? hubs[0] : hubs[hubs.length - 1];
  console.log(`${ctx.registrationId} (${model}) -> ${hub}` +
    (ctx.currentIotHubHostName ? ` (was on ${ctx.currentIotHubHostName})` : ''));
  return {
    iotHubHostName: hub,
    initialTwin: {
      tags: { deviceType: model },
      properties: { desired: { state: 'ready', darknessSetting: 'medium' } },
    },
    payload: { welcome: ctx.registrationId, telemetryIntervalSeconds: 10 },
  };
}

function handle(req, res) {
  let body = '';
  req.on('data', (d) => { body += d; });
  req.on('end', () => {
    try {
      const answer = allocate(JSON.parse(body));
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(answer));
    } catch (e) {
      res.writeHead(400, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ message: String(e) }));
    }
  });
}

const port = Number(process.env.PORT || 7443);
const server = process.env.WEBHOOK_CERT
  ? https.createServer({ cert: fs.readFileSync(process.env.WEBHOOK_CERT), key: fs.readFileSync(process.env.WEBHOOK_KEY) }, handle)
  : http.createServer(handle);
server.listen(port, '127.0.0.1', () => console.log(`allocation webhook on port ${port}`));

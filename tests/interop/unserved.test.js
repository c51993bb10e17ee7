// Features fleethub does not serve yet answer at once and say so (issue
// 12): the official service SDK's calls for them get 501 with a message
// naming fleethub and the feature; a WebSocket upgrade gets MQTT or AMQP
// as its subprotocol asks, and anything else a 400 that says what is
// served. (Direct methods, telemetry and cloud-to-device messages are
// served since issue 18: methods.test.js, telemetry.test.js, c2d.test.js;
// AMQP since issue 19: amqp.test.js.)
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('fs');
const tls = require('tls');
const { Registry, JobClient } = require('azure-iothub');
const { Server, withTimeout } = require('./lib/server');

let server;
let registry;

before(async () => {
  server = await new Server({ name: 'unserved' }).start();
  registry = Registry.fromConnectionString(server.ownerCs());
  await registry.create({ deviceId: 'un-1' });
});

after(async () => {
  await server?.stop();
});

// Runs an SDK call that must fail with 501 naming the feature.
async function notServed(what, call, feature) {
  const err = await withTimeout(call().then(() => null, (e) => e), 10000, what);
  assert.ok(err, `${what} succeeded`);
  assert.equal(err.response?.statusCode, 501, `${what}: ${err.message}`);
  assert.match(err.message, new RegExp(`^fleethub does not serve ${feature}.* yet$`), what);
  return err;
}

test('service SDK calls for features not served get 501 naming the feature', async () => {
  const owner = server.ownerCs();
  await notServed('Registry.addDevices', () => registry.addDevices([{ deviceId: 'bulk-1' }, { deviceId: 'bulk-2' }]), 'bulk registry operations');
  await notServed('Registry.removeDevices', () => registry.removeDevices([{ deviceId: 'un-1' }], false), 'bulk registry operations');
  await notServed('Registry.getModulesOnDevice', () => registry.getModulesOnDevice('un-1'), 'module identities');
  await notServed('Registry.addModule', () => registry.addModule({ deviceId: 'un-1', moduleId: 'm1' }), 'module identities');
  await notServed('Registry.getModuleTwin', () => registry.getModuleTwin('un-1', 'm1'), 'module identities');
  await notServed('Registry.getConfigurations', () => registry.getConfigurations(), 'automatic device configurations');
  await notServed('Registry.addConfiguration', () => registry.addConfiguration({ id: 'c1', content: { deviceContent: {} }, targetCondition: '*' }), 'automatic device configurations');
  await notServed('Registry.exportDevicesToBlob', () => registry.exportDevicesToBlob('https://example.invalid/c', false), 'import and export jobs');
  const jobs = JobClient.fromConnectionString(owner);
  await notServed('JobClient.getJob', () => jobs.getJob('job-1'), 'jobs');
  await notServed('JobClient.scheduleTwinUpdate', () => jobs.scheduleTwinUpdate('job-2', "deviceId = 'un-1'", { etag: '*', properties: { desired: { a: 1 } } }, new Date(), 60), 'jobs');
  // Nothing was created or removed on the way.
  assert.equal((await registry.get('un-1')).responseBody.deviceId, 'un-1');
  await assert.rejects(registry.get('bulk-1'), /not found/i);
  // A device named "query" is still a device id on GET.
  await assert.rejects(registry.get('query'), /not found/i);
});

// A raw WebSocket upgrade to path with the given subprotocol list; resolves
// the status line and body.
function upgrade(path, protocols) {
  return new Promise((resolve, reject) => {
    const sock = tls.connect({ host: '127.0.0.1', port: 443, servername: 'localhost', ca: fs.readFileSync(server.caPath) });
    let got = '';
    sock.on('data', (d) => {
      got += d;
      if (/\r\n\r\n/.test(got) && (got.startsWith('HTTP/1.1 101') || /\}$/.test(got))) { sock.destroy(); resolve(got); }
    });
    sock.on('error', reject);
    sock.on('close', () => resolve(got));
    sock.once('secureConnect', () => sock.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n` +
      'Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n' +
      (protocols ? `Sec-WebSocket-Protocol: ${protocols}\r\n` : '') + '\r\n'));
  });
}

test('WebSocket upgrades: MQTT and AMQP are served as their subprotocol asks, anything else gets 400', async () => {
  let r = await upgrade('/$iothub/websocket', 'mqtt');
  assert.match(r, /^HTTP\/1\.1 101 /);
  assert.match(r, /\r\nSec-WebSocket-Protocol: mqtt\r\n/i);
  for (const path of ['/$iothub/websocket', '/$servicebus/websocket']) {
    r = await upgrade(path, 'AMQPWSB10');
    assert.match(r, /^HTTP\/1\.1 101 /, path);
    assert.match(r, /\r\nSec-WebSocket-Protocol: AMQPWSB10\r\n/i, path);
  }
  for (const p of ['chat', null]) {
    r = await upgrade('/$iothub/websocket', p);
    assert.match(r, /^HTTP\/1\.1 400 /, `subprotocol ${p}`);
    assert.match(r, /serves MQTT \(subprotocol mqtt, at \/\$iothub\/websocket\) and AMQP \(subprotocol AMQPWSB10\)/);
  }
});

// Direct methods (issue 18): azure-iothub's Client.invokeDeviceMethod
// against devices using azure-iot-device's onDeviceMethod: payloads of
// several kinds, a status other than 200, a late answer, no answer (504),
// an offline device (404 DeviceNotOnline), a device that connects within
// the connect timeout, a device that disconnects before answering; and the
// CLI. Hostile: an answer for a request the device was never sent.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Client: DeviceClient } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
const { Registry, Client: ServiceClient } = require('azure-iothub');
const { Server, deviceCs, rest, withTimeout, waitFor, mqttDevice, BIN } = require('./lib/server');

let server;
let registry;
let service;

before(async () => {
  server = await new Server({ name: 'methods' }).start();
  registry = Registry.fromConnectionString(server.ownerCs());
  service = ServiceClient.fromConnectionString(server.ownerCs());
});

after(async () => {
  await server?.stop();
});

async function createDevice(deviceId) {
  const created = (await registry.create({ deviceId })).responseBody;
  return created.authentication.symmetricKey.primaryKey;
}

async function openDevice(deviceId, key, transport = Mqtt) {
  const client = DeviceClient.fromConnectionString(deviceCs('localhost', deviceId, key), transport);
  await withTimeout(client.open(), 10000, 'device open');
  return client;
}

// Registers handlers and waits until the SUBSCRIBE has been acknowledged
// (onDeviceMethod subscribes lazily).
async function onMethods(client, handlers) {
  for (const [name, fn] of Object.entries(handlers)) client.onDeviceMethod(name, fn);
  await new Promise((r) => setTimeout(r, 300));
}

// server.cli without blocking this process's event loop.
function cliAsync(args) {
  const { execFile } = require('child_process');
  const base = ['--data-dir', server.dataDir, '--ca', server.caPath];
  return new Promise((resolve) => {
    execFile(BIN, [...base, ...args], { encoding: 'utf8', timeout: 20000 }, (err, stdout, stderr) => {
      resolve({ code: err ? err.code : 0, stdout, stderr });
    });
  });
}

function invoke(deviceId, params) {
  return service.invokeDeviceMethod(deviceId, params);
}

for (const [label, transport] of [['MQTT', Mqtt], ['MQTT over WebSockets', MqttWs]]) {
  test(`payloads of several kinds and statuses over ${label}`, async () => {
    const deviceId = `methods-${label.length}`;
    const key = await createDevice(deviceId);
    const client = await openDevice(deviceId, key, transport);
    try {
      const seen = [];
      await onMethods(client, {
        echo: (req, res) => { seen.push(req.payload); res.send(200, { echo: req.payload }); },
        fail: (req, res) => res.send(501, 'not here'),
        plain: (req, res) => res.send(200),
      });
      for (const payload of [{ delay: 5, nested: { a: [1, 2] } }, 'text', 42, [1, 'two'], null, true]) {
        const { result } = await invoke(deviceId, { methodName: 'echo', payload, responseTimeoutInSeconds: 10 });
        assert.deepEqual(result, { status: 200, payload: { echo: payload } });
      }
      assert.deepEqual(seen, [{ delay: 5, nested: { a: [1, 2] } }, 'text', 42, [1, 'two'], null, true]);
      assert.deepEqual((await invoke(deviceId, { methodName: 'fail', payload: {} })).result, { status: 501, payload: 'not here' });
      assert.deepEqual((await invoke(deviceId, { methodName: 'plain' })).result, { status: 200, payload: null });
    } finally {
      await client.close();
    }
  });
}

test('a late answer within the timeout, and none (504)', async () => {
  const deviceId = 'methods-slow';
  const key = await createDevice(deviceId);
  const client = await openDevice(deviceId, key);
  try {
    await onMethods(client, {
      late: (req, res) => setTimeout(() => res.send(200, { late: true }), 2000),
      never: () => {},
    });
    const t0 = Date.now();
    const { result } = await invoke(deviceId, { methodName: 'late', responseTimeoutInSeconds: 5 });
    assert.deepEqual(result, { status: 200, payload: { late: true } });
    assert.ok(Date.now() - t0 >= 1900);
    const t1 = Date.now();
    const err = await invoke(deviceId, { methodName: 'never', responseTimeoutInSeconds: 5 }).then(() => null, (e) => e);
    assert.ok(err, 'a call nobody answers fails');
    assert.equal(err.response?.statusCode, 504);
    assert.equal(err.constructor.name, 'GatewayTimeoutError');
    const waited = Date.now() - t1;
    assert.ok(waited >= 4900 && waited < 8000, `answered 504 after ${waited} ms`);
  } finally {
    await client.close();
  }
});

test('an offline device: 404 DeviceNotOnline at once', async () => {
  const deviceId = 'methods-offline';
  await createDevice(deviceId);
  const t0 = Date.now();
  const r = await rest(server.ownerCs(), 'POST', `/twins/${deviceId}/methods?api-version=2021-04-12`,
    { methodName: 'reboot', payload: null, responseTimeoutInSeconds: 30, connectTimeoutInSeconds: 0 });
  assert.equal(r.status, 404);
  assert.equal(r.body.errorCode, 404103);
  assert.match(r.body.Message, /^ErrorCode:DeviceNotOnline;/);
  assert.equal(r.headers['iothub-errorcode'], 'DeviceNotOnline');
  assert.ok(Date.now() - t0 < 3000, 'no waiting for a device that is not connected');
  const err = await invoke(deviceId, { methodName: 'reboot' }).then(() => null, (e) => e);
  assert.equal(err?.response?.statusCode, 404);
});

test('a device that connects within the connect timeout still gets the call', async () => {
  const deviceId = 'methods-late-connect';
  const key = await createDevice(deviceId);
  const calling = invoke(deviceId, { methodName: 'hello', payload: { n: 1 }, responseTimeoutInSeconds: 10, connectTimeoutInSeconds: 15 });
  await new Promise((r) => setTimeout(r, 1500));
  const client = await openDevice(deviceId, key);
  try {
    client.onDeviceMethod('hello', (req, res) => res.send(200, { got: req.payload }));
    const { result } = await withTimeout(calling, 15000, 'the call');
    assert.deepEqual(result, { status: 200, payload: { got: { n: 1 } } });
  } finally {
    await client.close();
  }
  // Nobody connects: 404 once the connect timeout ran out.
  const t0 = Date.now();
  const err = await invoke('methods-offline', { methodName: 'x', connectTimeoutInSeconds: 2 }).then(() => null, (e) => e);
  assert.equal(err?.response?.statusCode, 404);
  assert.ok(Date.now() - t0 >= 1900, 'waited for the connect timeout');
});

test('a device that disconnects before it answers: 404 at once, not a hang', async () => {
  const deviceId = 'methods-drop';
  const key = await createDevice(deviceId);
  const client = await openDevice(deviceId, key);
  await onMethods(client, { drop: () => { client.close(); } });
  const t0 = Date.now();
  const err = await invoke(deviceId, { methodName: 'drop', responseTimeoutInSeconds: 30 }).then(() => null, (e) => e);
  assert.equal(err?.response?.statusCode, 404);
  assert.match(err.responseBody, /disconnected before it answered/);
  assert.ok(Date.now() - t0 < 10000);
});

test('bad requests are refused with a reason; the CLI invokes', async () => {
  const deviceId = 'methods-cli';
  const key = await createDevice(deviceId);
  for (const [body, says] of [
    [{ methodName: '', payload: null }, /methodName must be/],
    [{ methodName: 'a b' }, /methodName must be/],
    [{ methodName: 'm', responseTimeoutInSeconds: 4 }, /responseTimeoutInSeconds must be 5..300/],
    [{ methodName: 'm', connectTimeoutInSeconds: 301 }, /connectTimeoutInSeconds must be 0..300/],
    [{ methodName: 'm', payload: 'x'.repeat(130 * 1024) }, /over 128 KB/],
  ]) {
    const r = await rest(server.ownerCs(), 'POST', `/twins/${deviceId}/methods?api-version=2021-04-12`, body);
    assert.equal(r.status, 400, JSON.stringify(body).slice(0, 80));
    assert.match(r.body.message, says);
  }
  const client = await openDevice(deviceId, key);
  try {
    await onMethods(client, { reboot: (req, res) => res.send(200, { rebooting: req.payload.delay }) });
    // Not spawnSync: this process's device client must answer meanwhile.
    const r = await cliAsync(['method', 'invoke', deviceId, 'reboot', '--payload', '{"delay":3}', '--timeout', '10']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { status: 200, payload: { rebooting: 3 } });
  } finally {
    await client.close();
  }
  const off = server.cli(['method', 'invoke', 'methods-offline', 'reboot']);
  assert.equal(off.code, 1);
  assert.match(off.stderr, /DeviceNotOnline|not online/);
});

test('hostile: an answer to a request the device was never sent', async () => {
  const deviceId = 'methods-hostile';
  const key = await createDevice(deviceId);
  const { c } = await mqttDevice(server, deviceId, key);
  c.publish('$iothub/methods/res/200/?$rid=999999', '{"x":1}', { qos: 0 });
  c.publish('$iothub/methods/res/200/?$rid=1', '{"x":1}', { qos: 0 });
  await waitFor(() => /answered method request 999999, which it was not sent/.test(server.log), 5000, 'the log says so');
  // The connection is still served.
  await new Promise((resolve, reject) => c.subscribe('$iothub/methods/POST/#', { qos: 0 }, (e) => (e ? reject(e) : resolve())));
  const got = new Promise((resolve) => c.on('message', (topic, payload) => {
    const m = /^\$iothub\/methods\/POST\/ping\/\?\$rid=(.+)$/.exec(topic);
    if (m) { c.publish(`$iothub/methods/res/200/?$rid=${m[1]}`, payload); resolve(); }
  }));
  const { result } = await invoke(deviceId, { methodName: 'ping', payload: { p: 1 } });
  await got;
  assert.deepEqual(result, { status: 200, payload: { p: 1 } });
  c.end(true);
});

test('a call pending while the server stops is answered 503, not left hanging', async () => {
  const other = await new Server({ name: 'methods-stop', mqtt: '127.0.0.1:8884', https: '127.0.0.1:8443' }).start();
  let stopped = false;
  try {
    const made = await rest(other.ownerCs(), 'PUT', '/devices/sleepy?api-version=2021-04-12', { deviceId: 'sleepy' }, {}, null, 8443);
    assert.equal(made.status, 200, made.text);
    const { c } = await mqttDevice(other, 'sleepy', made.body.authentication.symmetricKey.primaryKey, { port: 8884 });
    await new Promise((r, j) => c.subscribe('$iothub/methods/POST/#', { qos: 0 }, (e) => (e ? j(e) : r())));
    const got = new Promise((r) => c.once('message', r)); // and never answers
    const pending = rest(other.ownerCs(), 'POST', '/twins/sleepy/methods?api-version=2021-04-12',
      { methodName: 'nap', responseTimeoutInSeconds: 300 }, {}, null, 8443);
    await withTimeout(got, 5000, 'the call delivered');
    await other.stop();
    stopped = true;
    const r = await withTimeout(pending, 5000, 'the answer at shutdown');
    assert.equal(r.status, 503);
    assert.match(r.body.message, /stopping/);
    c.end(true);
  } finally {
    if (!stopped) await other.stop();
  }
});

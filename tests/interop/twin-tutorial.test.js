// The Azure IoT Hub tutorial "configure your devices from a back-end
// service", against fleethub, over MQTT and over MQTT on WebSockets: desired
// patches from the back end reach the device in order with growing $version,
// reported patches from the device reach the back end, tags stay invisible
// to the device.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Client } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
const { Registry } = require('azure-iothub');
const { Server, deviceCs, withTimeout, waitFor, report } = require('./lib/server');

let server;
let registry;

before(async () => {
  server = await new Server({ name: 'tutorial' }).start();
  registry = Registry.fromConnectionString(server.ownerCs());
});

after(async () => {
  await server?.stop();
});

for (const [label, transport] of [['MQTT', Mqtt], ['MQTT over WebSockets', MqttWs]]) {
  test(`tutorial flow over ${label}`, async () => {
    const deviceId = `thermostat-${label.length}`;
    const created = (await registry.create({ deviceId })).responseBody;
    const key = created.authentication.symmetricKey.primaryKey;
    assert.ok(key, 'the hub generated a primary key');

    const client = Client.fromConnectionString(deviceCs('localhost', deviceId, key), transport);
    await withTimeout(client.open(), 10000, 'device open');
    try {
      const twin = await withTimeout(client.getTwin(), 10000, 'getTwin');
      const startVersion = twin.properties.desired.$version;
      const deltas = [];
      twin.on('properties.desired', (delta) => {
        if (delta.$version > startVersion) deltas.push(delta);
      });

      // The back end sends several desired patches, and tags the device.
      const patches = [
        { telemetryConfig: { sendFrequency: '5m' } },
        { components: { climate: { minTemperature: 18, maxTemperature: 25 } } },
        { components: { climate: { maxTemperature: 26 } }, fanEnabled: true },
        { components: { lighting: { brightness: 80 } } },
        { components: { lighting: null } },
      ];
      await registry.updateTwin(deviceId, { tags: { location: { building: '43' } } }, '*');
      for (const p of patches) {
        await registry.updateTwin(deviceId, { properties: { desired: p } }, '*');
      }
      await waitFor(() => deltas.length >= patches.length, 10000, 'five desired notifications');
      assert.equal(deltas.length, patches.length);
      for (let i = 0; i < patches.length; i++) {
        const { $version, ...body } = deltas[i];
        assert.deepEqual(body, patches[i], `notification ${i} carries patch ${i}`);
        assert.equal($version, startVersion + 1 + i, 'versions grow by one per patch, in order');
      }

      // The device reports, including a deletion with null.
      await report(twin, { firmware: '1.0.2', climate: { mode: 'heat', ok: true }, tmp: 1 });
      await report(twin, { tmp: null, climate: { ok: null } });

      const back = (await registry.getTwin(deviceId)).responseBody;
      const reported = back.properties.reported;
      assert.equal(reported.firmware, '1.0.2');
      assert.deepEqual(reported.climate, { mode: 'heat' });
      assert.equal(reported.tmp, undefined, 'null deleted the key');
      assert.equal(reported.$version, 3, 'two patches after the initial version 1');
      assert.ok(reported.$metadata.firmware.$lastUpdated, 'reported metadata has $lastUpdated');
      assert.deepEqual(back.tags, { location: { building: '43' } });
      const desired = back.properties.desired;
      assert.deepEqual(desired.components, { climate: { minTemperature: 18, maxTemperature: 26 } });
      assert.equal(desired.$version, startVersion + patches.length);
      assert.equal(desired.$metadata.components.climate.maxTemperature.$lastUpdatedVersion, startVersion + 3);

      // The device's own view: no tags, the merged desired properties.
      const again = await client.getTwin();
      assert.equal(again.tags, undefined);
      assert.equal(JSON.stringify(again.properties).includes('building'), false, 'tags never reach the device');
    } finally {
      await client.close();
    }
  });
}

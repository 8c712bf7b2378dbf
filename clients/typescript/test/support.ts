// What every test needs: the server's URL (scripts/with-test-server.sh sets it) and
// registered users with a logged-in device each.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";

import { courierApi, type CourierApi } from "../src/client.js";
import { DeviceKeys } from "../src/keys.js";

/** The Courier server under test. */
export function serverUrl(): string {
  const url = process.env["COURIER_TEST_SERVER"];
  if (url === undefined || url === "") {
    throw new Error("COURIER_TEST_SERVER is not set: run under scripts/with-test-server.sh");
  }
  return url;
}

/** A username no other test or run has taken. */
export function freshUsername(prefix: string): string {
  return `${prefix}-${randomBytes(6).toString("hex")}`;
}

export interface Device {
  username: string;
  userId: string;
  deviceId: number;
  api: CourierApi;
  keys: DeviceKeys;
}

export const PASSWORD = "correct horse battery staple";

/** Registers a user and logs in its first device (`deviceId: 0`: the server assigns one). */
export async function registerDevice(prefix: string): Promise<Device> {
  const anonymous = courierApi(serverUrl());
  const username = freshUsername(prefix);
  const created = await anonymous.POST("/v1/accounts", {
    body: { username, password: PASSWORD },
  });
  assert.equal(created.response.status, 201, JSON.stringify(created.error));
  assert.ok(created.data);
  assert.equal(created.data.username, username);

  const login = await anonymous.POST("/v1/login", {
    body: { username, password: PASSWORD, deviceId: 0, deviceName: `${prefix}'s laptop` },
  });
  assert.equal(login.response.status, 200, JSON.stringify(login.error));
  assert.ok(login.data);
  assert.equal(login.data.userId, created.data.userId);
  assert.ok(login.data.deviceId > 0, "the server assigns a positive device ID");
  return {
    username,
    userId: login.data.userId,
    deviceId: login.data.deviceId,
    api: courierApi(serverUrl(), login.data.accessToken),
    keys: new DeviceKeys(login.data.userId, login.data.deviceId),
  };
}

/** Publishes the device's identity keys and `count` one-time keys; returns their IDs. */
export async function publishKeys(device: Device, count: number): Promise<string[]> {
  const identity = await device.api.PUT("/v1/keys/identity", {
    body: device.keys.identityKeys(),
  });
  assert.equal(identity.response.status, 201, JSON.stringify(identity.error));

  const keyIds = Array.from({ length: count }, (_, i) => `otk${i}`);
  const upload = await device.api.POST("/v1/keys/one-time", {
    body: { oneTimeKeys: keyIds.map((keyId) => device.keys.oneTimeKey(keyId)) },
  });
  assert.equal(upload.response.status, 200, JSON.stringify(upload.error));
  assert.equal(upload.data?.oneTimeKeyCount, count);
  return keyIds;
}

/** Random bytes standing in for an Olm ciphertext (the server never decrypts). */
export function opaqueCiphertext(): string {
  return randomBytes(48).toString("base64").replace(/=+$/, "");
}

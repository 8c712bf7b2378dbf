// Refusals decoded as the document types them: the error body's `code` (per status, the
// codes the operation documents) and, for codes that carry them, `details` typed by the
// code. A refusal the document does not describe fails compilation or an assertion here.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { test } from "node:test";

import { courierApi } from "../src/client.js";
import type { components } from "../src/generated/openapi.js";
import { opaqueCiphertext, PASSWORD, publishKeys, registerDevice, serverUrl } from "./support.js";

type Schemas = components["schemas"];

test("a send whose envelope set is wrong is refused with device_list_mismatch and typed details", async () => {
  const alice = await registerDevice("alice");
  const bob = await registerDevice("bob");
  await publishKeys(bob, 1);

  // An envelope for a device Bob does not have, none for the one he has.
  const absentDevice = bob.deviceId + 1;
  const refused = await alice.api.POST("/v1/messages", {
    body: {
      protocolVersion: 2,
      clientMessageId: randomUUID(),
      recipientUserId: bob.userId,
      deviceEnvelopes: [
        { userId: bob.userId, deviceId: absentDevice, envelopeType: "preKey", ciphertext: opaqueCiphertext() },
      ],
    },
  });
  assert.equal(refused.response.status, 409);
  assert.equal(refused.data, undefined);
  assert.ok(refused.error);
  const { error } = refused.error;
  if (error.code !== "device_list_mismatch") {
    assert.fail(`expected device_list_mismatch, got ${JSON.stringify(error)}`);
  }
  // The code decides the details' type: no cast, no guess among the other details types.
  const details: Schemas["DeviceListMismatch"] = error.details;
  assert.deepEqual(details, {
    missing: [{ userId: bob.userId, deviceId: bob.deviceId }],
    extra: [{ userId: bob.userId, deviceId: absentDevice }],
    stale: [],
  });

  // Nothing was stored: Bob's inbox is empty.
  const inbox = await bob.api.GET("/v1/inbox", {});
  assert.deepEqual(inbox.data?.items, []);
});

test("a one-time key signed for another device is refused with invalid_signature naming the key", async () => {
  const bob = await registerDevice("bob");
  const identity = await bob.api.PUT("/v1/keys/identity", { body: bob.keys.identityKeys() });
  assert.equal(identity.response.status, 201, JSON.stringify(identity.error));

  // Bob's own signing key, but over a payload naming another device: the signature binds it.
  const refused = await bob.api.POST("/v1/keys/one-time", {
    body: { oneTimeKeys: [bob.keys.oneTimeKey("good"), bob.keys.oneTimeKey("forged", bob.deviceId + 1)] },
  });
  assert.equal(refused.response.status, 400);
  assert.ok(refused.error);
  const { error } = refused.error;
  if (error.code !== "invalid_signature") {
    assert.fail(`expected invalid_signature, got ${JSON.stringify(error)}`);
  }
  const details: Schemas["SignatureDetails"] = error.details;
  assert.deepEqual(details, { field: "oneTimeKeys[1].signature", keyId: "forged" });

  // All or nothing: the good key of the batch was not stored either.
  const count = await bob.api.GET("/v1/keys/count");
  assert.equal(count.data?.oneTimeKeyCount, 0);
});

test("a login past the device limit is refused with device_limit_reached; replaceDeviceId makes room", async () => {
  const carol = await registerDevice("carol");
  const own = await carol.api.GET("/v1/devices");
  assert.ok(own.data);
  const { deviceLimit } = own.data;
  const anonymous = courierApi(serverUrl());
  const login = (deviceName: string, replaceDeviceId?: number) =>
    anonymous.POST("/v1/login", {
      body: {
        username: carol.username,
        password: PASSWORD,
        deviceId: 0,
        deviceName,
        replaceDeviceId: replaceDeviceId ?? null,
      },
    });
  const deviceIds = [carol.deviceId];
  while (deviceIds.length < deviceLimit) {
    const added = await login(`device ${deviceIds.length + 1}`);
    assert.equal(added.response.status, 200, JSON.stringify(added.error));
    assert.ok(added.data);
    deviceIds.push(added.data.deviceId);
  }

  const refused = await login("one too many");
  assert.equal(refused.response.status, 409);
  assert.ok(refused.error);
  const { error } = refused.error;
  if (error.code !== "device_limit_reached") {
    assert.fail(`expected device_limit_reached, got ${JSON.stringify(error)}`);
  }
  const details: Schemas["DeviceLimitDetails"] = error.details;
  assert.equal(details.count, deviceLimit);
  assert.equal(details.limit, deviceLimit);
  assert.deepEqual(
    details.devices.map((device) => device.deviceId),
    deviceIds,
  );
  assert.equal(details.devices[0]?.deviceName, "carol's laptop");

  // The user picks the first device to remove: the login replaces it in one step.
  const replacing = await login("replacement", carol.deviceId);
  assert.equal(replacing.response.status, 200, JSON.stringify(replacing.error));
  assert.ok(replacing.data);
  const after = await courierApi(serverUrl(), replacing.data.accessToken).GET("/v1/devices");
  assert.deepEqual(
    after.data?.devices.map((device) => device.deviceId),
    [...deviceIds.slice(1), replacing.data.deviceId],
  );
});

test("a body of the wrong shape is refused with invalid_request_body (and does not compile)", async () => {
  const alice = await registerDevice("alice");
  const refused = await courierApi(serverUrl()).POST("/v1/login", {
    // @ts-expect-error -- the document names the field `deviceId`: a misspelled field does not compile.
    body: { username: alice.username, password: PASSWORD, deviceID: alice.deviceId },
  });
  assert.equal(refused.response.status, 400);
  assert.equal(refused.error?.error.code, "invalid_request_body");
});

test("an authenticated route without a token is refused with missing_token", async () => {
  const refused = await courierApi(serverUrl()).GET("/v1/inbox", {});
  assert.equal(refused.response.status, 401);
  assert.equal(refused.error?.error.code, "missing_token");
});

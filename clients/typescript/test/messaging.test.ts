// The generated client against a real server: register, log in, publish keys, claim,
// send a V2 message, read it from the recipient's inbox and acknowledge it. Every body
// and answer is typed from docs/openapi.json: a field the document names wrongly (or
// leaves out) fails compilation before this runs.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { test } from "node:test";

import type { components } from "../src/generated/openapi.js";
import { oneTimeKeyPayload, verifySignature } from "../src/keys.js";
import { opaqueCiphertext, publishKeys, registerDevice } from "./support.js";

type StreamItem = components["schemas"]["StreamItem"];

test("a V2 message goes from one user's device to another's inbox and is acknowledged", async () => {
  const alice = await registerDevice("alice");
  const bob = await registerDevice("bob");
  await publishKeys(alice, 1);
  const bobKeyIds = await publishKeys(bob, 2);

  // Alice finds Bob's reachable devices and checks each self-signature herself.
  const directory = await alice.api.GET("/v1/keys/devices/{userId}", {
    params: { path: { userId: bob.userId } },
  });
  assert.equal(directory.response.status, 200, JSON.stringify(directory.error));
  assert.ok(directory.data);
  assert.equal(directory.data.userId, bob.userId);
  assert.deepEqual(
    directory.data.devices.map((device) => device.deviceId),
    [bob.deviceId],
  );
  const bobDevice = directory.data.devices[0];
  assert.ok(bobDevice);
  assert.deepEqual(bobDevice.identityKeys, bob.keys.identityKeys());

  // She claims one of his one-time keys and checks its signature by his Ed25519 key.
  const claim = await alice.api.POST("/v1/keys/claim", {
    body: { devices: [{ userId: bob.userId, deviceId: bob.deviceId }] },
  });
  assert.equal(claim.response.status, 200, JSON.stringify(claim.error));
  assert.ok(claim.data);
  assert.deepEqual(claim.data.unavailable, []);
  const claimed = claim.data.keys[0];
  assert.ok(claimed);
  assert.equal(claim.data.keys.length, 1);
  assert.equal(claimed.userId, bob.userId);
  assert.equal(claimed.deviceId, bob.deviceId);
  assert.equal(claimed.fallback, false);
  assert.ok(bobKeyIds.includes(claimed.keyId), `claimed ${claimed.keyId}`);
  assert.ok(
    verifySignature(
      bobDevice.identityKeys.ed25519,
      oneTimeKeyPayload(bob.userId, bob.deviceId, claimed.keyId, Buffer.from(claimed.key, "base64")),
      claimed.signature,
    ),
    "the claimed key carries Bob's signature over its canonical payload",
  );

  const bobCount = await bob.api.GET("/v1/keys/count");
  assert.equal(bobCount.data?.oneTimeKeyCount, 1, "the claim consumed one of Bob's two keys");

  // One envelope: Bob's only device (Alice has no other device of her own).
  const ciphertext = opaqueCiphertext();
  const clientMessageId = randomUUID();
  const sent = await alice.api.POST("/v1/messages", {
    body: {
      protocolVersion: 2,
      clientMessageId,
      recipientUserId: bob.userId,
      deviceEnvelopes: [
        { userId: bob.userId, deviceId: bob.deviceId, envelopeType: "preKey", ciphertext },
      ],
    },
  });
  assert.equal(sent.response.status, 201, JSON.stringify(sent.error));
  assert.ok(sent.data);
  assert.equal(sent.data.envelopeCount, 1);

  // Bob reads his inbox: the envelope, typed by the stream item's discriminator.
  const inbox = await bob.api.GET("/v1/inbox", { params: { query: { after: 0, limit: 10 } } });
  assert.equal(inbox.response.status, 200, JSON.stringify(inbox.error));
  assert.ok(inbox.data);
  assert.equal(inbox.data.hasMore, false);
  const envelopes = inbox.data.items.filter(
    (item: StreamItem) => item.type === "envelope",
  );
  assert.equal(envelopes.length, 1, JSON.stringify(inbox.data.items));
  const item = envelopes[0];
  assert.ok(item !== undefined && item.type === "envelope");
  assert.equal(item.messageId, sent.data.messageId);
  assert.equal(item.senderUserId, alice.userId);
  assert.equal(item.senderDeviceId, alice.deviceId);
  assert.equal(item.protocolVersion, 2);
  assert.equal(item.envelopeType, "preKey");
  assert.equal(item.ciphertext, ciphertext);
  assert.equal(item.serverTimestamp, sent.data.serverTimestamp);
  assert.equal(inbox.data.nextCursor, item.seq);

  // He acknowledges it: delivered, and gone from his inbox.
  const ack = await bob.api.POST("/v1/inbox/ack", { body: { upTo: inbox.data.nextCursor } });
  assert.equal(ack.response.status, 200, JSON.stringify(ack.error));
  assert.equal(ack.data?.delivered, 1);
  const after = await bob.api.GET("/v1/inbox", { params: { query: { after: 0 } } });
  assert.ok(after.data);
  assert.deepEqual(after.data.items, []);

  // Alice asks for the message's delivery state: Bob's device has it.
  const delivery = await alice.api.GET("/v1/messages/{messageId}/delivery", {
    params: { path: { messageId: sent.data.messageId } },
  });
  assert.equal(delivery.response.status, 200, JSON.stringify(delivery.error));
  assert.ok(delivery.data);
  assert.equal(delivery.data.state, "delivered");
  assert.deepEqual(
    delivery.data.devices.map((device) => [device.userId, device.deviceId, typeof device.deliveredAt === "string"]),
    [[bob.userId, bob.deviceId, true]],
  );
});

// A device's keys and the payloads it signs, built from docs/api.md ("Signed payloads")
// with node:crypto: real Ed25519 signatures the server verifies, real X25519 public keys.
// The generator knows nothing of these bytes; the document only says they are base64.

import {
  createPublicKey,
  generateKeyPairSync,
  sign,
  verify,
  type KeyObject,
} from "node:crypto";

import type { components } from "./generated/openapi.js";

type Schemas = components["schemas"];

const IDENTITY_KEYS_LABEL = "courier:identity-keys:v1\0";
const ONE_TIME_KEY_LABEL = "courier:one-time-key:v1\0";

/** Standard base64 without padding, as the API writes binary values. */
export function base64(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("base64").replace(/=+$/, "");
}

/** The 16 bytes of a UUID in its canonical text form. */
function uuidBytes(id: string): Buffer {
  const hex = id.replace(/-/g, "");
  if (!/^[0-9a-f]{32}$/i.test(hex)) {
    throw new Error(`not a UUID: ${id}`);
  }
  return Buffer.from(hex, "hex");
}

function u32BigEndian(value: number): Buffer {
  const bytes = Buffer.alloc(4);
  bytes.writeUInt32BE(value);
  return bytes;
}

function u16BigEndian(value: number): Buffer {
  const bytes = Buffer.alloc(2);
  bytes.writeUInt16BE(value);
  return bytes;
}

/** The 32 raw bytes of an Ed25519 or X25519 public key. */
function rawPublicKey(key: KeyObject): Buffer {
  const { x } = key.export({ format: "jwk" });
  if (x === undefined) {
    throw new Error("the key has no public point");
  }
  return Buffer.from(x, "base64url");
}

/** Label ‖ user ID (16 bytes) ‖ device ID (u32 big-endian): how every payload starts. */
function devicePrefix(label: string, userId: string, deviceId: number): Buffer {
  return Buffer.concat([Buffer.from(label, "utf8"), uuidBytes(userId), u32BigEndian(deviceId)]);
}

/** The bytes a one-time key's signature covers. */
export function oneTimeKeyPayload(
  userId: string,
  deviceId: number,
  keyId: string,
  key: Uint8Array,
): Buffer {
  const keyIdBytes = Buffer.from(keyId, "utf8");
  return Buffer.concat([
    devicePrefix(ONE_TIME_KEY_LABEL, userId, deviceId),
    u16BigEndian(keyIdBytes.length),
    keyIdBytes,
    key,
  ]);
}

/** Checks an Ed25519 signature by the base64 `signingKey` over `payload`. */
export function verifySignature(signingKey: string, payload: Uint8Array, signature: string): boolean {
  const key = createPublicKey({
    key: { kty: "OKP", crv: "Ed25519", x: Buffer.from(signingKey, "base64").toString("base64url") },
    format: "jwk",
  });
  return verify(null, payload, key, Buffer.from(signature, "base64"));
}

/** One device's identity (Curve25519 + Ed25519) and the one-time keys it made. */
export class DeviceKeys {
  private readonly signingKey = generateKeyPairSync("ed25519");
  private readonly identityKey = generateKeyPairSync("x25519");

  constructor(
    readonly userId: string,
    readonly deviceId: number,
  ) {}

  /** The base64 Ed25519 public key. */
  get ed25519(): string {
    return base64(rawPublicKey(this.signingKey.publicKey));
  }

  /** The identity keys with their self-signature, as `PUT /v1/keys/identity` takes them. */
  identityKeys(): Schemas["IdentityKeys"] {
    const curve25519 = rawPublicKey(this.identityKey.publicKey);
    const ed25519 = rawPublicKey(this.signingKey.publicKey);
    const payload = Buffer.concat([
      devicePrefix(IDENTITY_KEYS_LABEL, this.userId, this.deviceId),
      curve25519,
      ed25519,
    ]);
    return {
      curve25519: base64(curve25519),
      ed25519: base64(ed25519),
      signature: base64(sign(null, payload, this.signingKey.privateKey)),
    };
  }

  /**
   * A fresh one-time key signed by this device, as `POST /v1/keys/one-time` takes it.
   * `signedForDeviceId` other than this device's ID signs a payload naming another device
   * (a key the server must refuse).
   */
  oneTimeKey(keyId: string, signedForDeviceId: number = this.deviceId): Schemas["SignedKey"] {
    const key = rawPublicKey(generateKeyPairSync("x25519").publicKey);
    const payload = oneTimeKeyPayload(this.userId, signedForDeviceId, keyId, key);
    return {
      keyId,
      key: base64(key),
      signature: base64(sign(null, payload, this.signingKey.privateKey)),
    };
  }
}

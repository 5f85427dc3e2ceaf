// Signalling sealed end to end between client and gateway, so nothing in between (a broker, a proxy)
// can read or alter the offer, the answer or the token. HPKE (RFC 9180, @hpke/core) base mode with
// DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM seals the request to the gateway's long-term
// key; the answer is sealed back under a key exported from the same context, exactly as RFC 9458
// (Oblivious HTTP) §4.4 encapsulates responses. See docs/decisions/0008-broker-and-sealed-signalling.md.

import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { Aes128Gcm, CipherSuite, DhkemX25519HkdfSha256, HkdfSha256 } from '@hpke/core';
import { keyFingerprint } from './key-fingerprint.js';

/** RFC 9180 identifiers of the one suite we speak: KEM 0x0020, KDF 0x0001, AEAD 0x0001. */
const kemId = 0x0020;
const kdfId = 0x0001;
const aeadId = 0x0001;
/** Key identifier byte of the header; one key per gateway today, so always 0. */
const keyId = 0;
const encLength = 32;
const nk = 16;
const nn = 12;
const requestLabel = 'pam-tunnel signalling request';
const responseLabel = 'pam-tunnel signalling response';

export const sealedContentType = 'application/pam-sealed';

const suite = new CipherSuite({ kem: new DhkemX25519HkdfSha256(), kdf: new HkdfSha256(), aead: new Aes128Gcm() });
const header = Buffer.from([keyId, kemId >> 8, kemId & 0xff, kdfId >> 8, kdfId & 0xff, aeadId >> 8, aeadId & 0xff]);
// RFC 9458 §4.3: info = label || 0x00 || header, binding the suite choice into the seal.
const requestInfo = Buffer.concat([Buffer.from(requestLabel), Buffer.from([0]), header]);

const bytes = (view: ArrayBuffer | Uint8Array) => Buffer.from(view instanceof Uint8Array ? view : new Uint8Array(view));
const arrayBuffer = (buffer: Buffer): ArrayBuffer =>
  buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength) as ArrayBuffer;

/** `SHA256:` + unpadded base64 of SHA-256 over the raw public key, as `ssh-keygen -l` prints keys. */
export class SealError extends Error {}

/** A gateway's long-term key pair, derived from a 32-byte seed kept in its key file. */
export interface GatewayKeyPair {
  readonly publicKey: Buffer;
  readonly fingerprint: string;
  readonly keyPair: Awaited<ReturnType<typeof suite.kem.deriveKeyPair>>;
}

export async function keyPairFromSeed(seed: Buffer): Promise<GatewayKeyPair> {
  if (seed.length !== 32) throw new SealError(`a gateway key seed is 32 bytes, not ${seed.length}`);
  const keyPair = await suite.kem.deriveKeyPair(arrayBuffer(seed));
  const publicKey = bytes(await suite.kem.serializePublicKey(keyPair.publicKey));
  return { publicKey, fingerprint: keyFingerprint(publicKey), keyPair };
}

export const newKeySeed = (): Buffer => randomBytes(32);

/** Client side: seal `request` to the gateway key; `open` reads the gateway's sealed response. */
export async function sealRequest(
  gatewayPublicKey: Buffer,
  request: Buffer,
): Promise<{ envelope: Buffer; open(response: Buffer): Buffer }> {
  if (gatewayPublicKey.length !== encLength)
    throw new SealError(`a gateway key is ${encLength} bytes of X25519, not ${gatewayPublicKey.length}`);
  const recipientPublicKey = await suite.kem.deserializePublicKey(arrayBuffer(gatewayPublicKey));
  const sender = await suite.createSenderContext({ recipientPublicKey, info: arrayBuffer(requestInfo) });
  const enc = bytes(sender.enc);
  const sealed = bytes(await sender.seal(arrayBuffer(request)));
  const secret = bytes(await sender.export(arrayBuffer(Buffer.from(responseLabel)), Math.max(nk, nn)));
  return {
    envelope: Buffer.concat([header, enc, sealed]),
    open: (response) => openResponse(secret, enc, response),
  };
}

/** Gateway side: open a sealed request; `seal` encapsulates the response under the same context. */
export async function openRequest(key: GatewayKeyPair, envelope: Buffer): Promise<{ request: Buffer; seal(response: Buffer): Buffer }> {
  if (envelope.length < header.length + encLength + 16) throw new SealError('not a sealed request (too short)');
  if (!envelope.subarray(0, header.length).equals(header))
    throw new SealError('not a sealed request for this gateway (unknown key id or suite)');
  const enc = envelope.subarray(header.length, header.length + encLength);
  let request: Buffer;
  let secret: Buffer;
  try {
    const recipient = await suite.createRecipientContext({
      recipientKey: key.keyPair,
      enc: arrayBuffer(enc),
      info: arrayBuffer(requestInfo),
    });
    request = bytes(await recipient.open(arrayBuffer(envelope.subarray(header.length + encLength))));
    secret = bytes(await recipient.export(arrayBuffer(Buffer.from(responseLabel)), Math.max(nk, nn)));
  } catch {
    throw new SealError('the sealed request does not open with this gateway key');
  }
  return { request, seal: (response) => sealResponse(secret, Buffer.from(enc), response) };
}

/** RFC 9458 §4.4: response_nonce, then AES-GCM under keys expanded from the exported secret. */
function responseKeys(secret: Buffer, enc: Buffer, responseNonce: Buffer): { key: Buffer; nonce: Buffer } {
  const salt = Buffer.concat([enc, responseNonce]);
  return {
    key: Buffer.from(hkdfSync('sha256', secret, salt, 'key', nk)),
    nonce: Buffer.from(hkdfSync('sha256', secret, salt, 'nonce', nn)),
  };
}

function sealResponse(secret: Buffer, enc: Buffer, response: Buffer): Buffer {
  const responseNonce = randomBytes(Math.max(nk, nn));
  const { key, nonce } = responseKeys(secret, enc, responseNonce);
  const cipher = createCipheriv('aes-128-gcm', key, nonce);
  const sealed = Buffer.concat([cipher.update(response), cipher.final(), cipher.getAuthTag()]);
  return Buffer.concat([responseNonce, sealed]);
}

function openResponse(secret: Buffer, enc: Buffer, response: Buffer): Buffer {
  const nonceLength = Math.max(nk, nn);
  if (response.length < nonceLength + 16) throw new SealError('the sealed answer is too short');
  const { key, nonce } = responseKeys(secret, enc, response.subarray(0, nonceLength));
  const decipher = createDecipheriv('aes-128-gcm', key, nonce);
  decipher.setAuthTag(response.subarray(response.length - 16));
  try {
    return Buffer.concat([decipher.update(response.subarray(nonceLength, response.length - 16)), decipher.final()]);
  } catch {
    throw new SealError('the sealed answer does not open: it was altered on the way or is not from this gateway');
  }
}

/**
 * Replay refusal on the gateway: a nonce is accepted once, and only with a timestamp within
 * `windowMs` of the gateway's clock. A nonce is remembered for twice the window, after which its
 * timestamp alone refuses it; so memory is bounded by the request rate, and capped outright.
 */
export function createReplayGuard(options: { windowMs?: number; now?: () => number; maxRemembered?: number } = {}) {
  const windowMs = options.windowMs ?? 60_000;
  const now = options.now ?? Date.now;
  const maxRemembered = options.maxRemembered ?? 100_000;
  const seen = new Map<string, number>();
  return {
    windowMs,
    /** undefined when fresh (and now remembered), else why it is refused. */
    check(nonce: string, timestamp: number): string | undefined {
      const at = now();
      for (const [old, expiry] of seen) {
        if (expiry > at) break;
        seen.delete(old);
      }
      if (!Number.isFinite(timestamp) || Math.abs(at - timestamp) > windowMs) {
        return `timestamp outside the ${windowMs / 1000} s window (check the clocks of client and gateway)`;
      }
      if (seen.has(nonce)) return 'nonce already seen: a replayed request';
      if (seen.size >= maxRemembered) return 'too many requests in the replay window';
      seen.set(nonce, at + 2 * windowMs);
      return undefined;
    },
  };
}

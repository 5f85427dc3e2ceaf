// A user's Ed25519 key (`pam keygen`): the private half stays in a 0600 PKCS#8 file on the user's
// machine; the public half is one line `pam-ed25519 <base64 raw 32 bytes> <comment>` for the gateway's
// authorized_keys. The client signs each sealed offer's access statement with it; the gateway verifies.

import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject, sign, verify } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { TunnelError } from '../machines/errors.js';
import { keyFingerprint } from './key-fingerprint.js';

export const publicKeyType = 'pam-ed25519';

/** `$XDG_CONFIG_HOME/pam/id_ed25519` (default `~/.config/pam/id_ed25519`). */
export function defaultUserKeyFile(env: NodeJS.ProcessEnv): string {
  return join(env.XDG_CONFIG_HOME || join(env.HOME || homedir(), '.config'), 'pam', 'id_ed25519');
}

export interface UserKey {
  readonly privateKey: KeyObject;
  /** The raw 32-byte Ed25519 public key. */
  readonly publicKey: Buffer;
  readonly fingerprint: string;
}

const rawPublicKey = (key: KeyObject): Buffer => Buffer.from(String(key.export({ format: 'jwk' }).x), 'base64url');

export const publicKeyLine = (publicKey: Buffer, comment: string): string =>
  `${publicKeyType} ${publicKey.toString('base64')}${comment ? ` ${comment}` : ''}`;

/** A raw 32-byte Ed25519 public key as a KeyObject, or undefined when the bytes are not one. */
export function publicKeyObject(raw: Buffer): KeyObject | undefined {
  if (raw.length !== 32) return undefined;
  try {
    return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: raw.toString('base64url') }, format: 'jwk' });
  } catch {
    return undefined;
  }
}

/**
 * Create a key pair: the private key in `path` (0600, its directory 0700; an existing file is never
 * overwritten) and the public line in `path.pub`. Returns the public line.
 */
export function generateUserKey(path: string, comment: string): { line: string; fingerprint: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const raw = rawPublicKey(publicKey);
  const line = publicKeyLine(raw, comment);
  const pem = String(privateKey.export({ format: 'pem', type: 'pkcs8' }));
  try {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  } catch (error) {
    throw new TunnelError(
      'usage',
      `cannot create the directory of ${path} (${(error as NodeJS.ErrnoException).code}): pass --file elsewhere`,
    );
  }
  for (const [file, text, mode] of [
    [path, pem, 0o600],
    [`${path}.pub`, `${line}\n`, 0o644],
  ] as const) {
    try {
      // 'wx': never overwrite a key (or its .pub) that is already there.
      writeFileSync(file, text, { mode, flag: 'wx' });
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'EEXIST')
        throw new TunnelError(
          'usage',
          `${file} already exists: pam keygen never overwrites a key; pass --file NEW_PATH or remove it first`,
        );
      throw new TunnelError('usage', `cannot write ${file} (${code}): pass --file with a writable path`);
    }
    chmodSync(file, mode);
  }
  return { line, fingerprint: keyFingerprint(raw) };
}

/** Read a private key file written by `pam keygen`; refused when others can read it or it is not Ed25519. */
export function loadUserKey(path: string, source: string): UserKey {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new TunnelError(
      'usage',
      `cannot read the key file ${path} from ${source} (${(error as NodeJS.ErrnoException).code}): create one with \`pam keygen\``,
    );
  }
  const mode = statSync(path).mode & 0o777;
  if ((mode & 0o077) !== 0)
    throw new TunnelError(
      'usage',
      `the key file ${path} is readable or writable by others (mode ${mode.toString(8)}): run chmod 600 ${path}`,
    );
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(text);
  } catch {
    throw new TunnelError('usage', `the key file ${path} is not a private key (make one with \`pam keygen\`)`);
  }
  if (privateKey.asymmetricKeyType !== 'ed25519')
    throw new TunnelError(
      'usage',
      `the key file ${path} holds a ${privateKey.asymmetricKeyType ?? 'unknown'} key, not Ed25519: make one with \`pam keygen\``,
    );
  const publicKey = rawPublicKey(createPublicKey(privateKey));
  return { privateKey, publicKey, fingerprint: keyFingerprint(publicKey) };
}

/** How the client proves who it is: the shared token, a user key (which signs each request), or both. */
export interface Credentials {
  readonly token?: string;
  readonly key?: UserKey;
}

/** What a signature covers: every field the gateway decides on, and the gateway it is meant for. */
export interface AccessStatement {
  /** Fingerprint of the gateway key the request is sealed to: a signature is good for that gateway only. */
  readonly gateway: string;
  readonly target: string;
  /** Every target of a request for several (the first is `target`); signed only then, so one-target bytes are unchanged. */
  readonly targets?: readonly string[];
  readonly nonce: string;
  readonly timestamp: number;
  /** The SDP offer; its SHA-256 is signed. */
  readonly offer: string;
  /** The offers of a tunnel's further parallel connections (decision 0016); their SHA-256s are signed, only when there are some. */
  readonly extraOffers?: readonly string[];
  readonly reason?: string;
  readonly ticket?: string;
}

/** The bytes signed: a fixed label and a JSON array, so no field can be shifted into another. */
export function statementBytes(statement: AccessStatement): Buffer {
  const offerDigest = createHash('sha256').update(statement.offer).digest('hex');
  return Buffer.from(
    `pam-tunnel access v1\n${JSON.stringify([
      statement.gateway,
      statement.target,
      statement.nonce,
      statement.timestamp,
      offerDigest,
      statement.reason ?? '',
      statement.ticket ?? '',
      ...(statement.targets && statement.targets.length > 1 ? [statement.targets] : []),
      // An object, so it can never be read as the targets list.
      ...(statement.extraOffers && statement.extraOffers.length > 0
        ? [{ extraOffers: statement.extraOffers.map((offer) => createHash('sha256').update(offer).digest('hex')) }]
        : []),
    ])}`,
  );
}

export function signStatement(key: UserKey, statement: AccessStatement): Buffer {
  return sign(null, statementBytes(statement), key.privateKey);
}

export function verifyStatement(publicKey: KeyObject, statement: AccessStatement, signature: Buffer): boolean {
  if (signature.length !== 64) return false;
  try {
    return verify(null, statementBytes(statement), publicKey, signature);
  } catch {
    return false;
  }
}

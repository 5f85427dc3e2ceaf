// The access decision on its own: who a signed request speaks for, how token and keys coexist, and
// why a live tunnel may no longer run after the grants change (removed, narrowed, expired, moved).

import { generateKeyPairSync } from 'node:crypto';
import t from 'tap';
import { keyFingerprint } from '../../adapters/key-fingerprint.js';
import { publicKeyLine, signStatement, type AccessStatement, type UserKey } from '../../adapters/user-key.js';
import { AccessDenied, createAccess } from '../../gateway/access.js';
import { parseAuthorizedKeys, type AuthorizedKeys } from '../../gateway/authorized-keys.js';

function userKey(): UserKey {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const raw = Buffer.from(String(publicKey.export({ format: 'jwk' }).x), 'base64url');
  return { privateKey, publicKey: raw, fingerprint: keyFingerprint(raw) };
}

const alice = userKey();
const bob = userKey();
const token = 'access-spec-token-0123456789';
const statement = (fields: Partial<AccessStatement> = {}): AccessStatement => ({
  gateway: 'SHA256:gateway',
  target: 'web',
  nonce: 'n'.repeat(32),
  timestamp: 1_000,
  offer: 'v=0\r\n',
  ...fields,
});
const signed = (key: UserKey, what: AccessStatement) => ({
  key: key.publicKey.toString('base64'),
  signature: signStatement(key, what).toString('base64'),
});
const denied = (fn: () => unknown): string => {
  try {
    fn();
  } catch (error) {
    if (error instanceof AccessDenied) return error.code;
    throw error;
  }
  return 'allowed';
};

t.test('a signed key is judged by its grant alone, even with a valid token beside it; the token opens every target', async (t) => {
  let keys: AuthorizedKeys = parseAuthorizedKeys(`targets=web ${publicKeyLine(alice.publicKey, 'alice')}\n`);
  const access = createAccess({ token, keys: () => keys, now: () => 0 });
  const web = statement();
  t.match(
    access.authorize(signed(alice, web), web, '127.0.0.1', () => 0),
    { kind: 'key', fingerprint: alice.fingerprint, comment: 'alice' },
  );
  const db = statement({ target: 'db' });
  t.equal(
    denied(() => access.authorize({ ...signed(alice, db), token }, db, '127.0.0.1', () => 0)),
    'target-not-granted',
    'a token does not rescue a key',
  );
  t.same(
    access.authorize({ token }, db, '127.0.0.1', () => 0),
    { kind: 'token' },
  );
  t.equal(
    denied(() => access.authorize({ token: 'wrong' }, db, '127.0.0.1', () => 0)),
    'token-refused',
  );
  t.equal(
    denied(() => access.authorize(signed(bob, web), web, '127.0.0.1', () => 0)),
    'unknown-key',
  );
  t.equal(
    denied(() => access.authorize(signed(alice, web), { ...web, nonce: 'm'.repeat(32) }, '127.0.0.1', () => 0)),
    'bad-signature',
  );
  keys = parseAuthorizedKeys(`targets=web,max-tunnels=1 ${publicKeyLine(alice.publicKey, 'alice')}\n`);
  t.equal(
    denied(() => access.authorize(signed(alice, web), web, '127.0.0.1', () => 1)),
    'tunnel-limit',
  );
  t.same(access.granted({ kind: 'token' }, ['web', 'db']), ['web', 'db']);
  t.same(access.granted({ kind: 'key', fingerprint: alice.fingerprint, comment: 'alice' }, ['web', 'db']), ['web']);
});

t.test('a keys-only gateway refuses a request without a key; --require-reason holds for token and key', async (t) => {
  const keys = parseAuthorizedKeys(`targets=web ${publicKeyLine(alice.publicKey, '')}\n`);
  const keysOnly = createAccess({ keys: () => keys });
  t.equal(
    denied(() => keysOnly.authorize({ token }, statement(), '127.0.0.1', () => 0)),
    'no-credentials',
  );
  const strict = createAccess({ token, keys: () => keys, requireReason: true });
  t.equal(
    denied(() => strict.authorize({ token }, statement(), '127.0.0.1', () => 0)),
    'reason-required',
  );
  const why = statement({ reason: 'INC-7 restore', ticket: 'INC-7' });
  t.equal(
    denied(() => strict.authorize(signed(alice, statement()), statement(), '127.0.0.1', () => 0)),
    'reason-required',
  );
  t.match(
    strict.authorize(signed(alice, why), why, '127.0.0.1', () => 0),
    { kind: 'key' },
  );
});

t.test('revoked(): removed, target narrowed, expired, source narrowed; the token is never revoked by grants', async (t) => {
  const line = publicKeyLine(alice.publicKey, 'alice');
  let keys = parseAuthorizedKeys(`targets="web,db",from="127.0.0.0/8" ${line}\n`);
  let now = 0;
  const access = createAccess({ token, keys: () => keys, now: () => now });
  const principal = { kind: 'key', fingerprint: alice.fingerprint, comment: 'alice' } as const;
  t.equal(access.revoked(principal, 'db', '127.0.0.1'), undefined, 'allowed as granted');
  keys = parseAuthorizedKeys(`targets="web",from="127.0.0.0/8" ${line}\n`);
  t.match(access.revoked(principal, 'db', '127.0.0.1'), { code: 'target-revoked', message: /no longer granted target 'db'/ });
  keys = parseAuthorizedKeys(`targets="web",from="198.51.100.0/24" ${line}\n`);
  t.match(access.revoked(principal, 'web', '127.0.0.1'), { code: 'source-revoked' });
  keys = parseAuthorizedKeys(`targets="web",expires="2026-01-01T00:00:00Z" ${line}\n`);
  now = Date.parse('2025-12-31T23:59:59Z');
  t.equal(access.revoked(principal, 'web', '127.0.0.1'), undefined, 'before expiry');
  now = Date.parse('2026-01-01T00:00:00Z');
  t.match(access.revoked(principal, 'web', '127.0.0.1'), { code: 'key-expired', message: /expired at 2026-01-01T00:00:00Z/ });
  keys = parseAuthorizedKeys('');
  t.match(access.revoked(principal, 'web', '127.0.0.1'), { code: 'key-removed', message: /\(alice\) was removed/ });
  t.equal(access.revoked({ kind: 'token' }, 'web', '127.0.0.1'), undefined);
});

// The authorized_keys grammar: what a good line grants, and that every kind of malformed line is
// refused with its line number and a reason (the gateway then refuses to start, or keeps the old grants).

import { generateKeyPairSync } from 'node:crypto';
import t from 'tap';
import { keyFingerprint } from '../../adapters/key-fingerprint.js';
import { addressAllowed, AuthorizedKeysError, parseAuthorizedKeys } from '../../gateway/authorized-keys.js';
import { malformedLines } from '../support/authorized-keys-cases.js';

const rawKey = () => Buffer.from(String(generateKeyPairSync('ed25519').publicKey.export({ format: 'jwk' }).x), 'base64url');
const key = rawKey();
const b64 = key.toString('base64');

t.test('a full line grants its targets, expiry, sources and limit; comments and blank lines are skipped', async (t) => {
  const other = rawKey();
  const text = [
    '# operators',
    '',
    `targets="web,db",expires="2027-01-31T00:00:00Z",from="198.51.100.0/24,2001:db8::/32",max-tunnels=3 pam-ed25519 ${b64} alice laptop`,
    `  targets=web pam-ed25519 ${other.toString('base64')}`,
  ].join('\n');
  const { grants } = parseAuthorizedKeys(text);
  t.equal(grants.size, 2);
  const alice = grants.get(keyFingerprint(key))!;
  t.same(alice.targets, ['web', 'db']);
  t.equal(alice.comment, 'alice laptop');
  t.equal(alice.expires, Date.parse('2027-01-31T00:00:00Z'));
  t.equal(alice.maxTunnels, 3);
  t.equal(alice.line, 3);
  t.ok(addressAllowed(alice, '198.51.100.7'));
  t.ok(addressAllowed(alice, '::ffff:198.51.100.7'), 'a v4-mapped address is its v4 address');
  t.ok(addressAllowed(alice, '2001:db8::1'));
  t.notOk(addressAllowed(alice, '127.0.0.1'));
  t.notOk(addressAllowed(alice, 'unknown'));
  const bob = grants.get(keyFingerprint(other))!;
  t.same(bob.targets, ['web']);
  t.equal(bob.comment, '');
  t.equal(bob.expires, undefined);
  t.ok(addressAllowed(bob, '127.0.0.1'), 'no from= allows any address');
});

t.test(`${malformedLines(b64).length} malformed lines: each refused with its line number and a reason`, async (t) => {
  t.ok(malformedLines(b64).length >= 20);
  for (const [line, reason] of malformedLines(b64)) {
    const text = `# header\ntargets="web" pam-ed25519 ${rawKey().toString('base64')} fine\n${line}\n`;
    let error: unknown;
    try {
      parseAuthorizedKeys(text);
    } catch (thrown) {
      error = thrown;
    }
    t.ok(error instanceof AuthorizedKeysError, `refused: ${line.slice(0, 60)}`);
    t.equal((error as AuthorizedKeysError).line, 3, 'names line 3');
    t.match((error as Error).message, /^line 3: /);
    t.match((error as Error).message, reason, (error as Error).message);
  }
});

t.test('the same key on two lines is refused, naming the first', async (t) => {
  t.throws(() => parseAuthorizedKeys(`targets=web pam-ed25519 ${b64} a\ntargets=db pam-ed25519 ${b64} b\n`), {
    message: /^line 2: key SHA256:\S+ is already on line 1/,
  });
});

t.test('socks="…" grants SOCKS rules, alone or beside targets; a bad rule names the line', async (t) => {
  const grants = parseAuthorizedKeys(`socks="*.db.internal:5432, 192.0.2.0/24:22" pam-ed25519 ${b64} ops\n`);
  const grant = grants.grants.get(keyFingerprint(key))!;
  t.same(grant.targets, [], 'no targets= needed with socks=');
  t.same(
    grant.socks?.map((rule) => rule.text),
    ['*.db.internal:5432', '192.0.2.0/24:22'],
  );
  t.throws(() => parseAuthorizedKeys(`targets=web,socks="db:0" pam-ed25519 ${b64}\n`), {
    message: /^line 1: socks: rule 'db:0': the port must be/,
  });
});

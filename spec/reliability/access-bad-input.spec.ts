// Bad input against user keys: forged, replayed and altered signed offers sent straight to a gateway
// process (each refused with a clear reason), then ≥ 20 malformed authorized_keys versions loaded
// with SIGHUP (each refused naming its line, the old grants kept); the gateway keeps serving a real
// tunnel throughout.

import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { keyFingerprint } from '../../adapters/key-fingerprint.js';
import { loadUserKey, signStatement, type AccessStatement, type UserKey } from '../../adapters/user-key.js';
import { malformedLines } from '../support/authorized-keys-cases.js';
import { echoServer, pam, scratchDir, sha256, startGatewayProc, tunnelEnv, until, type Teardownable } from '../support/processes.js';
import { sealedPost } from '../support/sealed.js';
import { report } from './tally.js';

const token = 'access-bad-input-token-3b9a';
const echoScript = `"${process.execPath}" -e 'const p=require("crypto").createHash("sha256");const b=Buffer.alloc(65536,7);let n=0;const s=require("net").connect(+process.env.PAM_TUNNEL_PORT,"127.0.0.1",()=>s.end(b));s.on("data",d=>{p.update(d);n+=d.length});s.on("end",()=>{process.stdout.write(p.digest("hex"));process.exitCode=n===65536?0:5})'`;
const expected = sha256(Buffer.alloc(65536, 7));

async function keygen(t: Teardownable, dir: string, name: string): Promise<{ file: string; line: string; key: UserKey }> {
  const file = join(dir, 'keys', name);
  const proc = pam(t, ['keygen', '--file', file, '--comment', name], { env: tunnelEnv(dir, token) });
  if ((await proc.exited) !== 0) throw new Error(`keygen failed: ${proc.stderr}`);
  return { file, line: proc.stdout.trim(), key: loadUserKey(file, 'test') };
}

t.test('forged, replayed and altered signed offers are refused with a reason; the gateway keeps serving', async (t) => {
  const dir = scratchDir(t);
  const web = await echoServer(t);
  const db = await echoServer(t);
  const alice = await keygen(t, dir, 'alice');
  const mallory = await keygen(t, dir, 'mallory');
  const grants = join(dir, 'authorized_keys');
  writeFileSync(grants, `targets=web ${alice.line}\n`);
  const auditLog = join(dir, 'audit.jsonl');
  const gateway = await startGatewayProc(t, dir, token, { web: web.port, db: db.port }, [
    '--authorized-keys',
    grants,
    '--audit-log',
    auditLog,
  ]);
  const gatewayKey = Buffer.from(((await (await fetch(`${gateway.url}/v1/key`)).json()) as { key: string }).key, 'base64');
  const fingerprint = keyFingerprint(gatewayKey);
  const offer = 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n';

  /** A request signed by `signer` over `signed`, presenting `presented`'s public key, with `sent` fields on the wire. */
  const request = (options: {
    signer?: UserKey;
    presented?: UserKey;
    signed?: Partial<AccessStatement>;
    sent?: Record<string, unknown>;
  }): Record<string, unknown> => {
    const statement: AccessStatement = {
      gateway: fingerprint,
      target: 'web',
      nonce: randomBytes(16).toString('hex'),
      timestamp: Date.now(),
      offer,
      ...options.signed,
    };
    const signature = signStatement(options.signer ?? alice.key, statement);
    const { gateway: _gateway, ...fields } = statement;
    return {
      ...fields,
      key: (options.presented ?? alice.key).publicKey.toString('base64'),
      signature: signature.toString('base64'),
      ...options.sent,
    };
  };

  const cases: Array<[string, Record<string, unknown>, number, RegExp]> = [
    ['a random signature', request({ sent: { signature: randomBytes(64).toString('base64') } }), 403, /signature does not verify/],
    ['a truncated signature', request({ sent: { signature: randomBytes(10).toString('base64') } }), 403, /signature does not verify/],
    ["alice's key, signed by mallory", request({ signer: mallory.key }), 403, /signature does not verify with key/],
    ['target altered after signing', request({ sent: { target: 'db' } }), 403, /signature does not verify/],
    ['offer altered after signing (digest differs)', request({ sent: { offer: `${offer}a=x\r\n` } }), 403, /signature does not verify/],
    ['reason altered after signing', request({ signed: { reason: 'a' }, sent: { reason: 'b' } }), 403, /signature does not verify/],
    ['ticket added after signing', request({ sent: { ticket: 'CHG-1' } }), 403, /signature does not verify/],
    ['timestamp altered after signing', request({ sent: { timestamp: Date.now() + 1 } }), 403, /signature does not verify/],
    [
      'a parallel connection offer altered after signing',
      request({ signed: { extraOffers: [offer] }, sent: { extraOffers: [`${offer}a=x\r\n`] } }),
      403,
      /signature does not verify/,
    ],
    ['a parallel connection offer added after signing', request({ sent: { extraOffers: [offer] } }), 403, /signature does not verify/],
    [
      'a parallel connection offer dropped after signing',
      request({ signed: { extraOffers: [offer] }, sent: { extraOffers: undefined } }),
      403,
      /signature does not verify/,
    ],
    [
      'eight parallel connection offers, correctly signed (seven at most)',
      request({ signed: { extraOffers: Array.from({ length: 8 }, () => offer) } }),
      400,
      /extraOffers, when given, must be a list of 1 to 7 SDP offers/,
    ],
    ['signed for another gateway', request({ signed: { gateway: `SHA256:${'A'.repeat(43)}` } }), 403, /signature does not verify/],
    ['a key that is not 32 bytes', request({ sent: { key: randomBytes(31).toString('base64') } }), 403, /not 32 bytes of Ed25519/],
    ['a key without a signature', request({ sent: { signature: undefined } }), 403, /key without a signature/],
    [
      'mallory, correctly signed but not authorized',
      request({ signer: mallory.key, presented: mallory.key }),
      403,
      /is not in this gateway's authorized_keys/,
    ],
    [
      'alice, correctly signed, for a target not granted',
      request({ signed: { target: 'db' } }),
      403,
      /not granted target 'db'; it may reach: web$/,
    ],
    ['a stale timestamp, correctly signed', request({ signed: { timestamp: Date.now() - 120_000 } }), 400, /timestamp outside/],
    [
      'a wrong token and no key',
      { target: 'web', offer, token: 'wrong-token-wrong-token', nonce: randomBytes(16).toString('hex'), timestamp: Date.now() },
      401,
      /token refused/,
    ],
  ];
  let clean = 0;
  const refusedLines = () =>
    readFileSync(auditLog, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as { event: string; status?: number; why?: string })
      .filter((line) => line.event === 'access.refused');
  for (const [name, payload, status, reason] of cases) {
    const before = refusedLines().length;
    const result = await sealedPost(gateway.url, gatewayKey, payload);
    const audited = refusedLines().slice(before);
    // The refusal is on disk before the client is answered: exactly one access.refused line, with the same reason.
    const ok =
      result.reply?.status === status &&
      reason.test(result.reply?.error ?? '') &&
      audited.length === 1 &&
      audited[0]?.status === status &&
      audited[0]?.why === result.reply?.error;
    t.ok(ok, `${name} → ${result.reply?.status}: ${result.reply?.error} (audited: ${JSON.stringify(audited)})`);
    if (ok) clean += 1;
  }

  // Replays: the same envelope again, and a fresh seal of a signed request whose nonce was used.
  const signed = request({ signed: { target: 'web' } });
  const first = await sealedPost(gateway.url, gatewayKey, signed);
  t.equal(first.reply?.status, 400, 'the original passes the access check (then fails on its toy offer)');
  t.match(first.reply?.error, /offer/);
  const again = await fetch(`${gateway.url}/v1/tunnels`, { method: 'POST', body: first.envelope });
  const replayed = first.open(Buffer.from(await again.arrayBuffer()));
  const replayOk = replayed?.status === 400 && /nonce already seen/.test(replayed.error ?? '');
  t.ok(replayOk, `the same envelope again → ${replayed?.error}`);
  const resealed = await sealedPost(gateway.url, gatewayKey, signed);
  const resealOk = resealed.reply?.status === 400 && /nonce already seen/.test(resealed.reply.error ?? '');
  t.ok(resealOk, `the signed request sealed anew → ${resealed.reply?.error}`);
  clean += (replayOk ? 1 : 0) + (resealOk ? 1 : 0);
  const lines = refusedLines();
  t.equal(lines.length, cases.length + 3, 'one access.refused line for every refusal, the toy offer and both replays included');
  t.match(
    lines.slice(-2).map((line) => line.why),
    [/nonce already seen/, /nonce already seen/],
    'the replays are audited with their reason',
  );
  const logged = readFileSync(auditLog, 'utf8');
  const signatures = cases.map(([, payload]) => payload.signature).filter((value): value is string => typeof value === 'string');
  t.ok(signatures.length > 10 && signatures.every((signature) => !logged.includes(signature)), 'no signature is logged');
  t.notOk(logged.includes('wrong-token-wrong-token') || logged.includes(token), 'no token is logged');

  t.match(gateway.proc.stderr, /refused an unidentified client from \S+ to 'web': bad-signature/);
  t.match(gateway.proc.stderr, /refused key SHA256:\S+ from \S+ to 'web': unknown-key/, 'the log names the key by fingerprint');
  const env = { ...tunnelEnv(dir, token, gateway.url), PAM_GATEWAY_TOKEN: undefined, PAM_KEY_FILE: alice.file };
  const valid = pam(t, ['tunnel', 'start', 'web', '-R', echoScript], { env });
  t.equal(await valid.exited, 0, valid.stderr);
  t.equal(valid.stdout, expected, 'a valid key still opens its tunnel');
  report(t, { badInputs: { tried: cases.length + 2, rejectedCleanly: clean } });
});

t.test('≥ 20 malformed authorized_keys versions on SIGHUP: each refused by line, the old grants kept', async (t) => {
  const dir = scratchDir(t);
  const web = await echoServer(t);
  const alice = await keygen(t, dir, 'alice');
  const grants = join(dir, 'authorized_keys');
  writeFileSync(grants, `targets=web ${alice.line}\n`);
  const gateway = await startGatewayProc(t, dir, token, { web: web.port }, ['--authorized-keys', grants]);
  const lines = malformedLines(alice.line.split(' ')[1]!);
  let clean = 0;
  for (const [index, [line, reason]] of lines.entries()) {
    // Line 2 is the bad one; a comment makes each version distinct.
    writeFileSync(grants, `targets=web ${alice.line}\n${line}\n# version ${index}\n`);
    const seen = gateway.proc.stderr.length;
    gateway.proc.child.kill('SIGHUP');
    // The answer to this SIGHUP (polling may have seen the change first and said so too).
    const answer = () =>
      gateway.proc.stderr
        .slice(seen)
        .split('\n')
        .find((text) => text.includes('not reloaded (SIGHUP)'));
    await until(() => answer() !== undefined, 20_000, `refusal of version ${index}`);
    const said = answer() ?? '';
    const ok = / line 2: /.test(said) && reason.test(said) && /the previous 1 key\(s\) stay in force/.test(said);
    t.ok(ok, said);
    if (ok) clean += 1;
  }
  const env = { ...tunnelEnv(dir, token, gateway.url), PAM_GATEWAY_TOKEN: undefined, PAM_KEY_FILE: alice.file };
  const valid = pam(t, ['tunnel', 'start', 'web', '-R', echoScript], { env });
  t.equal(await valid.exited, 0, valid.stderr);
  t.equal(valid.stdout, expected, 'the old grants still open the tunnel');
  t.equal(gateway.proc.child.exitCode, null, 'the gateway kept running');
  report(t, { badInputs: { tried: lines.length, rejectedCleanly: clean } });
});

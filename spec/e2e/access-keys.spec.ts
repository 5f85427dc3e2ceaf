// End to end: per-user keys and grants with real processes on 127.0.0.1 — `pam keygen`, a key granted
// `web` opens web and is refused `db` (77, naming only `web`), expiry, from=, --require-reason, the
// token beside keys, and revocation (SIGHUP, expiry) ending that key's live tunnel while another goes on.

import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import {
  echoServer,
  pam,
  randomPayload,
  roundTrip,
  scratchDir,
  sha256,
  startGatewayProc,
  tunnelEnv,
  until,
  type Teardownable,
} from '../support/processes.js';

const token = 'access-keys-token-7d1e';
/** Sends 64 KiB through the tunnel and prints its sha256: proves bytes went through. */
const echoScript = `"${process.execPath}" -e 'const p=require("crypto").createHash("sha256");const b=Buffer.alloc(65536,7);let n=0;const s=require("net").connect(+process.env.PAM_TUNNEL_PORT,"127.0.0.1",()=>s.end(b));s.on("data",d=>{p.update(d);n+=d.length});s.on("end",()=>{process.stdout.write(p.digest("hex"));process.exitCode=n===65536?0:5})'`;
const expected = sha256(Buffer.alloc(65536, 7));

/** `pam keygen --file dir/name`; resolves with the key file and its public line. */
async function keygen(t: Teardownable, dir: string, name: string): Promise<{ file: string; line: string }> {
  const file = join(dir, 'keys', name);
  const proc = pam(t, ['keygen', '--file', file, '--comment', name], { env: tunnelEnv(dir, token) });
  if ((await proc.exited) !== 0) throw new Error(`keygen failed: ${proc.stderr}`);
  return { file, line: proc.stdout.trim() };
}

/** Client environment with no shared token: only the key speaks for it. */
const keyOnly = (env: NodeJS.ProcessEnv, keyFile: string): NodeJS.ProcessEnv => ({
  ...env,
  PAM_GATEWAY_TOKEN: undefined,
  PAM_KEY_FILE: keyFile,
});

t.test('pam keygen writes a 0600 key and its .pub, prints one public line, and never overwrites', async (t) => {
  const dir = scratchDir(t);
  const env = tunnelEnv(dir, token);
  const made = pam(t, ['keygen', '--comment', 'alice laptop'], { env });
  t.equal(await made.exited, 0, made.stderr);
  const file = join(dir, 'config', 'pam', 'id_ed25519');
  t.match(made.stdout, /^pam-ed25519 [A-Za-z0-9+/]{43}= alice laptop\n$/, 'one public line');
  t.equal(statSync(file).mode & 0o777, 0o600, 'private key 0600');
  t.equal(statSync(join(dir, 'config', 'pam')).mode & 0o777, 0o700, 'its directory 0700');
  t.equal(readFileSync(`${file}.pub`, 'utf8'), made.stdout, 'the .pub file holds the same line');
  t.match(readFileSync(file, 'utf8'), /^-----BEGIN PRIVATE KEY-----/);
  t.notMatch(made.stdout, /PRIVATE/, 'the private key is never printed');
  const before = readFileSync(file, 'utf8');
  const again = pam(t, ['keygen'], { env });
  t.equal(await again.exited, 2, 'an existing key is refused');
  t.match(again.stderr, /already exists: pam keygen never overwrites a key/);
  t.equal(readFileSync(file, 'utf8'), before, 'the key is untouched');
});

t.test('grants: web opens, db refused naming only web, expired and from= refused, token beside keys, no credentials', async (t) => {
  const dir = scratchDir(t);
  const [web, db, vault] = [await echoServer(t), await echoServer(t), await echoServer(t)];
  const alice = await keygen(t, dir, 'alice');
  const old = await keygen(t, dir, 'old');
  const remote = await keygen(t, dir, 'remote');
  const stranger = await keygen(t, dir, 'stranger');
  const grants = join(dir, 'authorized_keys');
  writeFileSync(
    grants,
    [
      `targets="web" ${alice.line}`,
      `targets="web,db",expires="2020-01-01T00:00:00Z" ${old.line}`,
      `targets="web",from="198.51.100.0/24" ${remote.line}`,
    ].join('\n'),
  );
  const gateway = await startGatewayProc(t, dir, token, { web: web.port, db: db.port, vault: vault.port }, ['--authorized-keys', grants]);
  t.match(gateway.proc.stderr, /authorized_keys .*: 3 key\(s\)/);
  const env = tunnelEnv(dir, token, gateway.url);

  const opened = pam(t, ['tunnel', 'start', 'web', '-R', echoScript], { env: keyOnly(env, alice.file) });
  t.equal(await opened.exited, 0, opened.stderr);
  t.equal(opened.stdout, expected, 'bytes went through the key-granted tunnel');

  const refused = pam(t, ['tunnel', 'start', 'db', '-R', 'echo ran'], { env: keyOnly(env, alice.file) });
  t.equal(await refused.exited, 77, 'a target not granted → 77');
  t.match(refused.stderr, /is not granted target 'db'; it may reach: web\n/);
  t.notMatch(refused.stderr, /vault/, 'the targets the key may not reach are never named');
  t.notMatch(refused.stdout, /ran/);

  const expired = pam(t, ['tunnel', 'start', 'web', '-R', 'echo ran'], { env: keyOnly(env, old.file) });
  t.equal(await expired.exited, 77);
  t.match(expired.stderr, /expired at 2020-01-01T00:00:00Z/);

  const outside = pam(t, ['tunnel', 'start', 'web', '-R', 'echo ran'], { env: keyOnly(env, remote.file) });
  t.equal(await outside.exited, 77);
  t.match(outside.stderr, /may not connect from 127\.0\.0\.1: that address is outside its from= list/);

  const unknown = pam(t, ['tunnel', 'start', 'web', '-R', 'echo ran'], { env: keyOnly(env, stranger.file) });
  t.equal(await unknown.exited, 77);
  t.match(unknown.stderr, /key SHA256:\S+ is not in this gateway's authorized_keys/);

  // The shared token is the simple mode beside the keys: every target.
  const byToken = pam(t, ['tunnel', 'start', 'vault', '-R', echoScript], { env });
  t.equal(await byToken.exited, 0, byToken.stderr);
  t.equal(byToken.stdout, expected);

  const none = pam(t, ['tunnel', 'start', 'web', '-R', 'echo ran'], { env: { ...env, PAM_GATEWAY_TOKEN: undefined } });
  t.equal(await none.exited, 2);
  t.match(none.stderr, /no credentials: set PAM_GATEWAY_TOKEN or pass --token-file .*pam keygen.*--key-file \/ PAM_KEY_FILE/);
  t.equal(none.stderr.trim().split('\n').length, 1, 'one line');

  t.match(gateway.proc.stderr, /refused key SHA256:\S+ \(alice\) from \S+ to 'db': target-not-granted/);
  t.match(gateway.proc.stderr, /refused key SHA256:\S+ \(old\) from \S+ to 'web': expired-key/);
});

t.test('--require-reason refuses a tunnel without --reason (77, naming the flag); with one it opens and is journalled', async (t) => {
  const dir = scratchDir(t);
  const web = await echoServer(t);
  const alice = await keygen(t, dir, 'alice');
  const grants = join(dir, 'authorized_keys');
  writeFileSync(grants, `targets=web ${alice.line}\n`);
  const gateway = await startGatewayProc(t, dir, token, { web: web.port }, ['--authorized-keys', grants, '--require-reason']);
  const env = keyOnly(tunnelEnv(dir, token, gateway.url), alice.file);

  const without = pam(t, ['tunnel', 'start', 'web', '-R', 'echo ran'], { env });
  t.equal(await without.exited, 77);
  t.match(without.stderr, /requires a reason for every tunnel: pass --reason TEXT/);

  const withReason = pam(t, ['tunnel', 'start', 'web', '--reason', 'restore after INC-7', '--ticket', 'INC-7', '-R', echoScript], { env });
  t.equal(await withReason.exited, 0, withReason.stderr);
  t.equal(withReason.stdout, expected);
  const history = pam(t, ['tunnel', 'history', '--json'], { env });
  t.equal(await history.exited, 0, history.stderr);
  const journal = readFileSync(
    join(dir, 'registry', 'journal', `${(JSON.parse(history.stdout) as Array<{ id: string }>)[0]!.id}.jsonl`),
    'utf8',
  );
  t.match(journal, /"reason":"restore after INC-7","ticket":"INC-7"/, 'reason and ticket are journalled with the flags');
  t.notMatch(journal, /PRIVATE KEY|access-keys-token/, 'no secret in the journal');

  const badTicket = pam(t, ['tunnel', 'start', 'web', '--ticket', 'INC-7', '-R', 'true'], { env });
  t.equal(await badTicket.exited, 2);
  t.match(badTicket.stderr, /--ticket goes with --reason/);
});

t.test(
  'removing a key + SIGHUP ends its live tunnel (77, history says revoked) while another key goes on; expiry ends one too',
  async (t) => {
    const dir = scratchDir(t);
    const web = await echoServer(t);
    const alice = await keygen(t, dir, 'alice');
    const bob = await keygen(t, dir, 'bob');
    const carol = await keygen(t, dir, 'carol');
    const grants = join(dir, 'authorized_keys');
    writeFileSync(grants, [`targets=web ${alice.line}`, `targets=web ${bob.line}`, `targets=web ${carol.line}`].join('\n'));
    const gateway = await startGatewayProc(t, dir, token, { web: web.port }, ['--authorized-keys', grants]);
    const env = tunnelEnv(dir, token, gateway.url);

    const start = async (key: string) => {
      const proc = pam(t, ['tunnel', 'start', 'web', '--json'], { env: keyOnly(env, key) });
      const ready = await proc.event('ready');
      return { proc, id: String(ready.id), port: Number(ready.port) };
    };
    const [a, b, c] = [await start(alice.file), await start(bob.file), await start(carol.file)];
    const payload = randomPayload(256 * 1024);
    for (const tunnel of [a, b, c]) t.equal(sha256(await roundTrip(tunnel.port, payload)), sha256(payload), 'each tunnel carries bytes');

    // alice is removed; carol is given an expiry a moment from now (reached while her tunnel is up).
    const soon = new Date(Date.now() + 2_000).toISOString();
    writeFileSync(grants, [`targets=web ${bob.line}`, `targets=web,expires="${soon}" ${carol.line}`].join('\n'));
    gateway.proc.child.kill('SIGHUP');
    t.equal(await a.proc.exited, 77, "the removed key's tunnel ends with 77");
    t.match(a.proc.stdout, /"kind":"accessRevoked"/);
    t.match(a.proc.stdout, /access revoked: key SHA256:\S+ \(alice\) was removed from the gateway's authorized_keys/);
    t.notMatch(a.proc.stdout + a.proc.stderr, /reconnect/, 'no reconnect was tried');
    t.equal(sha256(await roundTrip(b.port, payload)), sha256(payload), "the other key's tunnel goes on");
    t.equal(b.proc.child.exitCode, null, 'and its process runs');

    const history = pam(t, ['tunnel', 'history', '--json'], { env });
    t.equal(await history.exited, 0, history.stderr);
    const row = (JSON.parse(history.stdout) as Array<{ id: string; exitCode: number; reason: string }>).find((entry) => entry.id === a.id);
    t.equal(row?.exitCode, 77, 'history has the exit code');
    t.match(row?.reason, /^access revoked: key SHA256:\S+ \(alice\) was removed/, 'history says revoked');

    // carol's expires passes while her tunnel is up.
    t.equal(await c.proc.exited, 77, 'the expired key loses its tunnel');
    t.match(c.proc.stdout, /access revoked: key SHA256:\S+ \(carol\) expired at/);
    t.equal(sha256(await roundTrip(b.port, payload)), sha256(payload), 'bob still goes on');
    const refused = pam(t, ['tunnel', 'start', 'web', '-R', 'true'], { env: keyOnly(env, alice.file) });
    t.equal(await refused.exited, 77, 'a new tunnel of the removed key is refused');

    // A bad new version keeps the old grants.
    writeFileSync(grants, 'targets="web pam-ed25519 garbage\n');
    gateway.proc.child.kill('SIGHUP');
    await until(
      () => /authorized_keys not reloaded \(SIGHUP\): .*line 1: .*the previous 2 key\(s\) stay in force/.test(gateway.proc.stderr),
      10_000,
      'the refusal line',
    );
    t.equal(sha256(await roundTrip(b.port, payload)), sha256(payload), 'bob is unaffected by a bad file');
    b.proc.child.kill('SIGTERM');
    t.equal(await b.proc.exited, 0);
    t.equal(gateway.proc.child.exitCode, null, 'the gateway kept running through SIGHUPs');
  },
);

t.test('a malformed authorized_keys refuses the start, naming the line', async (t) => {
  const dir = scratchDir(t);
  const grants = join(dir, 'authorized_keys');
  writeFileSync(grants, '# ok\n\ntargets=web,max-tunnels=0 pam-ed25519 AAAA\n');
  const proc = pam(t, ['gateway', '--listen', '127.0.0.1:0', '--target', 'web=127.0.0.1:9', '--authorized-keys', grants], {
    env: tunnelEnv(dir, token),
  });
  t.equal(await proc.exited, 2);
  t.match(proc.stderr, /--authorized-keys: .*authorized_keys line 3: /);
  t.equal(proc.stderr.trim().split('\n').length, 1);
});

t.test('behind a broker: the key opens its target, from= judges the address the broker saw, revocation ends the tunnel', async (t) => {
  const { startBrokerGateway, startBrokerProc } = await import('../support/broker.js');
  const dir = scratchDir(t);
  const web = await echoServer(t);
  const alice = await keygen(t, dir, 'alice');
  const remote = await keygen(t, dir, 'remote');
  const grants = join(dir, 'authorized_keys');
  writeFileSync(grants, [`targets=web,from="127.0.0.0/8" ${alice.line}`, `targets=web,from="198.51.100.0/24" ${remote.line}`].join('\n'));
  const broker = await startBrokerProc(t, dir);
  const gateway = await startBrokerGateway(t, dir, token, broker.url, 'lab', { web: web.port }, { extra: ['--authorized-keys', grants] });
  const env = tunnelEnv(dir, token, gateway.url);

  const opened = pam(t, ['tunnel', 'start', 'web', '-R', echoScript], { env: keyOnly(env, alice.file) });
  t.equal(await opened.exited, 0, opened.stderr);
  t.equal(opened.stdout, expected, 'bytes through the brokered, key-granted tunnel');
  const outside = pam(t, ['tunnel', 'start', 'web', '-R', 'true'], { env: keyOnly(env, remote.file) });
  t.equal(await outside.exited, 77);
  t.match(outside.stderr, /may not connect from 127\.0\.0\.1/, 'the client address as the broker saw it');

  const live = pam(t, ['tunnel', 'start', 'web', '--json'], { env: keyOnly(env, alice.file) });
  await live.event('ready');
  writeFileSync(grants, `targets=web,from="198.51.100.0/24" ${remote.line}\n`);
  gateway.proc.child.kill('SIGHUP');
  t.equal(await live.exited, 77, 'revoked behind the broker too');
  t.match(live.stdout, /access revoked: key SHA256:\S+ \(alice\) was removed/);
  t.notMatch(broker.proc.stderr, /alice|pam-ed25519/, 'the broker never sees the key or its comment');
});

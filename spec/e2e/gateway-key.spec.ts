// End to end: the gateway's long-term key, sealed signalling and key pinning with real processes on
// 127.0.0.1 — a pinned key connects, a wrong pin or a changed key exits 77 before any tunnel is set up
// and leaves nothing behind, TOFU records the first key, and a replayed sealed offer is refused.

import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { echoServer, freePort, pam, portIsOpen, scratchDir, sha256, startGatewayProc, tunnelEnv } from '../support/processes.js';
import { sealedPost } from '../support/sealed.js';

const token = 'gateway-key-token-51c2';
/** Sends 64 KiB through the tunnel and prints its sha256: proves bytes went through. */
const echoScript = `"${process.execPath}" -e 'const p=require("crypto").createHash("sha256");const b=Buffer.alloc(65536,7);let n=0;const s=require("net").connect(+process.env.PAM_TUNNEL_PORT,"127.0.0.1",()=>s.end(b));s.on("data",d=>{p.update(d);n+=d.length});s.on("end",()=>{process.stdout.write(p.digest("hex"));process.exitCode=n===65536?0:5})'`;
const expected = sha256(Buffer.alloc(65536, 7));

const healthz = async (url: string) => (await (await fetch(`${url}/healthz`)).json()) as { peers: number; signallingRequests: number };
const registryEntries = (dir: string) =>
  existsSync(join(dir, 'registry')) ? readdirSync(join(dir, 'registry')).filter((name) => name.endsWith('.json')) : [];

t.test('the gateway creates its key 0600 on first start, prints its fingerprint, and keeps it across restarts', async (t) => {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const first = await startGatewayProc(t, dir, token, { echo: echo.port });
  const listening = JSON.parse(first.proc.stdout.split('\n').find((line) => line.includes('"listening"'))!) as { key: string };
  t.match(listening.key, /^SHA256:[A-Za-z0-9+/]{43}$/, '--json carries the key fingerprint');
  t.match(
    first.proc.stderr,
    new RegExp(`gateway key ${listening.key.replace(/[+/]/g, '\\$&')} \\(created in .*state/pam/gateway\\.key\\)`),
  );
  const keyFile = join(dir, 'state', 'pam', 'gateway.key');
  t.equal(statSync(keyFile).mode & 0o777, 0o600, 'key file is 0600');
  first.proc.child.kill('SIGTERM');
  await first.proc.exited;
  const second = await startGatewayProc(t, dir, token, { echo: echo.port });
  t.match(second.proc.stdout, listening.key, 'the same key after a restart');
  t.match(second.proc.stderr, /\(from .*gateway\.key\)/);
});

t.test('a pinned key connects; a wrong pin exits 77 naming both fingerprints, before any offer, leaving nothing behind', async (t) => {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const gateway = await startGatewayProc(t, dir, token, { echo: echo.port });
  const fingerprint = /"key":"(SHA256:[^"]+)"/.exec(gateway.proc.stdout)![1]!;
  const env = tunnelEnv(dir, token, gateway.url);

  const pinned = pam(t, ['tunnel', 'start', 'echo', '-R', echoScript], { env: { ...env, PAM_GATEWAY_KEY: fingerprint } });
  t.equal(await pinned.exited, 0, pinned.stderr);
  t.equal(pinned.stdout, expected, 'bytes went through the pinned tunnel');
  t.notOk(existsSync(join(dir, 'config', 'pam', 'known_gateways')), 'a pinned key is not recorded in known_gateways');
  const before = await healthz(gateway.url);

  const wrong = `SHA256:${'A'.repeat(43)}`;
  const port = await freePort();
  const refused = pam(t, ['tunnel', 'start', 'echo', '--port', String(port), '-R', 'echo ran'], {
    env: { ...env, PAM_GATEWAY_KEY: wrong },
  });
  t.equal(await refused.exited, 77, 'wrong pin → 77');
  t.match(
    refused.stderr,
    new RegExp(`presents key ${fingerprint.replace(/[+/]/g, '\\$&')}, but PAM_GATEWAY_KEY pins ${wrong}`),
    'names both fingerprints and the variable',
  );
  t.match(refused.stderr, /no tunnel was set up/);
  t.notMatch(refused.stdout, /echo ran/, 'the command never ran');
  const after = await healthz(gateway.url);
  t.equal(after.signallingRequests, before.signallingRequests, 'no offer reached the gateway');
  t.equal(after.peers, 0, 'no peer on the gateway');
  t.notOk(await portIsOpen(port), 'the local port is released');
  t.same(registryEntries(dir), [], 'no registry entry left');

  const malformed = pam(t, ['tunnel', 'start', 'echo', '-R', 'true'], { env: { ...env, PAM_GATEWAY_KEY: 'not-a-fingerprint' } });
  t.equal(await malformed.exited, 2, 'a malformed pin is a usage error');
  t.match(malformed.stderr, /PAM_GATEWAY_KEY 'not-a-fingerprint' is not a key fingerprint/);
});

t.test('without a pin the first key is recorded (0600); a gateway with another key on that URL is then refused with 77', async (t) => {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const gateway = await startGatewayProc(t, dir, token, { echo: echo.port }, ['--key-file', join(dir, 'first.key')]);
  const fingerprint = /"key":"(SHA256:[^"]+)"/.exec(gateway.proc.stdout)![1]!;
  const env = tunnelEnv(dir, token, gateway.url);
  const known = join(dir, 'config', 'pam', 'known_gateways');

  const first = pam(t, ['tunnel', 'start', 'echo', '-R', echoScript], { env });
  t.equal(await first.exited, 0, first.stderr);
  t.equal(first.stdout, expected);
  t.equal(readFileSync(known, 'utf8'), `${gateway.url} ${fingerprint}\n`, 'the URL and its key are recorded');
  t.equal(statSync(known).mode & 0o777, 0o600, 'known_gateways is 0600');
  const again = pam(t, ['tunnel', 'start', 'echo', '-R', echoScript], { env });
  t.equal(await again.exited, 0, 'the recorded key is accepted');

  gateway.proc.child.kill('SIGTERM');
  await gateway.proc.exited;
  // Same address, a new key: what a gateway taken over (or re-installed) looks like to the client.
  const replacedProc = pam(
    t,
    [
      'gateway',
      '--listen',
      `127.0.0.1:${gateway.port}`,
      '--json',
      '--key-file',
      join(dir, 'second.key'),
      '--target',
      `echo=127.0.0.1:${echo.port}`,
    ],
    { env: tunnelEnv(dir, token) },
  );
  const replaced = { proc: replacedProc, url: String((await replacedProc.event('listening')).url) };
  const other = /"key":"(SHA256:[^"]+)"/.exec(replaced.proc.stdout)![1]!;
  t.not(other, fingerprint);
  const refused = pam(t, ['tunnel', 'start', 'echo', '-R', 'echo ran'], { env });
  t.equal(await refused.exited, 77, 'a changed key → 77');
  t.match(
    refused.stderr,
    new RegExp(
      `presents key ${other.replace(/[+/]/g, '\\$&')}, but ${known.replace(/[/.]/g, '\\$&')} records ${fingerprint.replace(/[+/]/g, '\\$&')}`,
    ),
  );
  t.match(refused.stderr, /remove its line from/);
  t.equal((await healthz(replaced.url)).signallingRequests, 0, 'no offer was sent to the changed gateway');
  t.equal(readFileSync(known, 'utf8'), `${gateway.url} ${fingerprint}\n`, 'the record is not overwritten');
  t.same(registryEntries(dir), [], 'no registry entry left');
});

t.test('the gateway process refuses a replayed sealed offer and a stale one', async (t) => {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const gateway = await startGatewayProc(t, dir, token, { echo: echo.port });
  const key = Buffer.from(((await (await fetch(`${gateway.url}/v1/key`)).json()) as { key: string }).key, 'base64');
  const original = await sealedPost(gateway.url, key, { token, target: 'nosuch', offer: 'v=0\r\n' });
  t.equal(original.reply?.status, 404, 'the original is served (unknown target, after the token was accepted)');
  const replay = await fetch(`${gateway.url}/v1/tunnels`, { method: 'POST', body: original.envelope });
  const refusal = original.open(Buffer.from(await replay.arrayBuffer()));
  t.equal(refusal?.status, 400);
  t.match(refusal?.error, /nonce already seen/, 'the replay is refused as one');
  const stale = await sealedPost(gateway.url, key, { token, target: 'echo', offer: 'v=0\r\n', timestamp: Date.now() - 120_000 });
  t.match(stale.reply, { status: 400, error: /timestamp outside/ });
  t.match(gateway.proc.stderr, /refused a sealed request from .*nonce already seen/);
  t.equal((await healthz(gateway.url)).peers, 0);
});

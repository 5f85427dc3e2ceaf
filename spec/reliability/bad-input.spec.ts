// Bad input from every side, each rejected cleanly: ≥ 30 command lines (usage errors exit 2 with one
// line and no stack), and 10,000 generated malformed signalling requests against a gateway that must
// keep serving valid clients with bounded memory.

import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import t from 'tap';
import { echoServer, pam, scratchDir, startGatewayProc, tunnelEnv } from '../support/processes.js';
import { report } from './tally.js';

const token = 'bad-input-token-0f0f';

t.test('≥ 30 bad command lines: each exits with its documented code, one line, no stack trace', async (t) => {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const gateway = await startGatewayProc(t, dir, token, { echo: echo.port });
  const env = tunnelEnv(dir, token, gateway.url);
  const cases: Array<[string[], number, RegExp]> = [
    [['tunnel', 'start'], 2, /target/i],
    [['tunnel', 'start', 'echo', '-fg', '-bg'], 2, /cannot be combined/],
    [['tunnel', 'start', 'echo', '-fg', '-R', 'x'], 2, /cannot be combined/],
    [['tunnel', 'start', 'echo', '-bg', '-R', 'x'], 2, /cannot be combined/],
    [['tunnel', 'start', 'echo', '-fg', '-bg', '-R', 'x'], 2, /cannot be combined/],
    [['tunnel', 'start', 'echo', '--timeout', '0'], 2, /--timeout/],
    [['tunnel', 'start', 'echo', '--timeout', '-1'], 2, /--timeout/],
    [['tunnel', 'start', 'echo', '--timeout', 'abc'], 2, /--timeout/],
    [['tunnel', 'start', 'echo', '--timeout', '1e3'], 2, /--timeout/],
    [['tunnel', 'start', 'echo', '--timeout', '86401'], 2, /--timeout/],
    [['tunnel', 'start', 'echo', '--timeout'], 2, /--timeout/],
    [['tunnel', 'start', 'echo', '--port', '70000'], 2, /--port/],
    [['tunnel', 'start', 'echo', '--port', '-1'], 2, /--port/],
    [['tunnel', 'start', 'echo', '--port', 'http'], 2, /--port/],
    [['tunnel', 'start', 'echo', '--port', '1.5'], 2, /--port/],
    [['tunnel', 'start', 'echo', '--host', ''], 2, /--host/],
    [['tunnel', 'start', 'echo', '--host', 'not an address'], 2, /--host/],
    [['tunnel', 'start', 'echo', '-R', ''], 2, /--run/],
    [['tunnel', 'start', 'echo', '--pid-file', ''], 2, /--pid-file/],
    [['tunnel', 'start', '../etc/passwd'], 2, /not a valid target name/],
    [['tunnel', 'start', 'a'.repeat(65)], 2, /not a valid target name/],
    [['tunnel', 'start', 'echo;rm -rf /'], 2, /not a valid target name/],
    [['tunnel', 'start', 'echo', '--gateway', 'ftp://127.0.0.1'], 2, /not an http\(s\) URL/],
    [['tunnel', 'start', 'echo', '--gateway', 'not a url'], 2, /not an http\(s\) URL/],
    [['tunnel', 'start', 'echo', '--reconnect-attempts', '1000'], 2, /--reconnect-attempts/],
    [['tunnel', 'start', 'echo', '--ice-server', 'http://x'], 2, /--ice-server/],
    [['tunnel', 'start', 'echo', '--token-file', `${dir}/missing`], 2, /cannot read --token-file/],
    [['tunnel', 'start', 'echo', '--unknown-flag'], 2, /Unsupported option/],
    [['tunnel', 'start', 'echo', '--transport', 'quic'], 2, /--transport 'quic' is not known: use native .* or werift/],
    [['tunnel', 'stop'], 2, /name a tunnel to stop/],
    [['tunnel', 'stop', 'x', '--all'], 2, /not both/],
    [['tunnel', 'stop', '--all', '--wait', 'soon'], 2, /--wait/],
    [['tunnel', 'stop', 'nothing-like-this'], 1, /no running tunnel matches/],
    [['tunnel', 'history', '--limit', '0'], 2, /--limit/],
    [['tunnel', 'machine', '--format', 'svg'], 2, /--format/],
    [['tunnel', 'replay'], 2, /id/i],
    [['gateway', '--listen', 'nowhere'], 2, /--listen/],
    [['gateway', '--target', 'x'], 2, /--target/],
    [['gateway', '--target', 'a=127.0.0.1:1', '--tls-cert', 'c'], 2, /go together/],
    [['gateway', '--target', 'a=127.0.0.1:1', '--transport', 'libwebrtc'], 2, /--transport 'libwebrtc' is not known/],
    [['completion', 'powershell'], 2, /name a shell/],
    [['no-such-command'], 2, /Command not found|not found/i],
  ];
  let clean = 0;
  for (const [args, code, message] of cases) {
    const proc = pam(t, args, { env });
    const exited = await proc.exited;
    // One line naming the fix (clipanion's "did you mean" for an unknown command lists candidates).
    const maxLines = args[0] === 'no-such-command' ? 40 : 3;
    const ok = exited === code && message.test(proc.stderr) && !/\n\s+at /.test(proc.stderr) && proc.stderr.trim().split('\n').length <= maxLines;
    t.ok(ok, `${args.join(' ')} → ${exited} (want ${code}): ${proc.stderr.trim().split('\n')[0]}`);
    if (ok) clean += 1;
  }
  const shellMeta = pam(t, ['tunnel', 'start', 'echo', '-R', `printf '%s|' "$((6*7))" ';' '&&' '$(id)' "'q'" 'a b'`], { env });
  t.equal(await shellMeta.exited, 0);
  const intact = shellMeta.stdout === "42|;|&&|$(id)|'q'|a b|";
  t.ok(intact, `shell metacharacters in --run reach the shell intact: ${shellMeta.stdout}`);
  report(t, { badInputs: { tried: cases.length + 1, rejectedCleanly: clean + (intact ? 1 : 0) } });
});

/** One raw HTTP request; resolves with the status (0 if the connection was cut). */
function raw(port: number, method: string, path: string, headers: Record<string, string>, body: Buffer): Promise<number> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers, timeout: 5_000 }, (response) => {
      response.resume();
      response.on('end', () => resolve(response.statusCode ?? 0));
    });
    req.on('error', () => resolve(0));
    req.on('timeout', () => req.destroy());
    req.end(body);
  });
}

t.test('10,000 malformed signalling requests: all refused, valid clients still served, RSS bounded', async (t) => {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const gateway = await startGatewayProc(t, dir, token, { echo: echo.port });
  const rss = () => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${gateway.proc.pid}/status`, 'utf8'))![1]) / 1024;
  const before = rss();
  const auth = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
  const generators: Array<(i: number) => [string, string, Record<string, string>, Buffer]> = [
    () => ['POST', '/v1/tunnels', auth, Buffer.from('{not json')],
    () => ['POST', '/v1/tunnels', auth, Buffer.from(JSON.stringify({ target: 42, offer: null }))],
    (i) => ['POST', '/v1/tunnels', auth, Buffer.from(JSON.stringify({ target: 'echo', offer: `v=0\r\n${randomBytes(64 + (i % 512)).toString('base64')}` }))],
    () => ['POST', '/v1/tunnels', auth, Buffer.from(JSON.stringify({ target: '127.0.0.1:22', offer: 'v=0\r\n' }))],
    () => ['POST', '/v1/tunnels', { 'content-type': 'application/json' }, Buffer.from('{}')],
    (i) => ['POST', '/v1/tunnels', { authorization: `Bearer ${token.slice(0, i % token.length)}x` }, Buffer.from('{}')],
    () => ['POST', '/v1/tunnels', auth, randomBytes(80 * 1024)],
    () => ['GET', '/v1/tunnels', auth, Buffer.alloc(0)],
    (i) => ['POST', `/${randomBytes(4 + (i % 20)).toString('hex')}`, auth, Buffer.from('{}')],
    () => ['POST', '/v1/tunnels', auth, Buffer.from(JSON.stringify({ target: 'echo', offer: 'hello' }))],
  ];
  const total = 10_000;
  const statuses = new Map<number, number>();
  let refused = 0;
  for (let start = 0; start < total; start += 50) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(50, total - start) }, (_, offset) => {
        const i = start + offset;
        const [method, path, headers, body] = generators[i % generators.length]!(i);
        return raw(gateway.port, method, path, headers, body);
      }),
    );
    for (const status of batch) {
      statuses.set(status, (statuses.get(status) ?? 0) + 1);
      if (status >= 400 && status < 500) refused += 1;
    }
  }
  t.comment(`statuses: ${JSON.stringify(Object.fromEntries(statuses))}`);
  t.equal(refused, total, 'every malformed request got a 4xx answer');
  t.equal(statuses.get(500) ?? 0, 0, 'no internal error');
  const after = rss();
  t.ok(after - before < 64, `gateway RSS ${before.toFixed(0)} → ${after.toFixed(0)} MiB`);
  const valid = pam(t, ['tunnel', 'start', 'echo', '-R', 'exit 0'], { env: tunnelEnv(dir, token, gateway.url) });
  t.equal(await valid.exited, 0, 'a valid client is still served');
  report(t, { badInputs: { tried: total, rejectedCleanly: refused } });
});

// Bad input from every side, each rejected cleanly: ≥ 30 command lines (usage errors exit 2 with one
// line and no stack), and 10,000 generated malformed signalling requests against a gateway that must
// keep serving valid clients with bounded memory.

import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import { echoServer, pam, scratchDir, startGatewayProc, tunnelEnv, type Teardownable } from '../support/processes.js';
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
    const ok =
      exited === code && message.test(proc.stderr) && !/\n\s+at /.test(proc.stderr) && proc.stderr.trim().split('\n').length <= maxLines;
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
    (i) => [
      'POST',
      '/v1/tunnels',
      auth,
      Buffer.from(JSON.stringify({ target: 'echo', offer: `v=0\r\n${randomBytes(64 + (i % 512)).toString('base64')}` })),
    ],
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

/** A line of a Node stack trace (`    at fn (file.js:1:2)` or `    at file.js:1:2`). */
const stackFrame = /^\s+at .+(\(.*:\d+:\d+\)|:\d+:\d+)$/;

/** A "gateway" that answers every signalling request 200 with a JSON answer that is not SDP. */
async function notAGateway(t: Teardownable): Promise<string> {
  const server = createServer((request, response) => {
    request.resume();
    request.on('end', () =>
      response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ answer: 'hello, not SDP' })),
    );
  });
  t.teardown(() => new Promise<void>((resolveClose) => server.close(() => resolveClose())));
  await new Promise<void>((resolveListen) => server.listen(0, '127.0.0.1', resolveListen));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

t.test('bad files, variables, flags and gateways: each its documented code, one line, no stack frame', async (t) => {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const gateway = await startGatewayProc(t, dir, token, { echo: echo.port });
  const env = tunnelEnv(dir, token, gateway.url);
  const file = (name: string, text: string, mode = 0o600) => {
    const path = join(dir, name);
    writeFileSync(path, text, { mode });
    chmodSync(path, mode);
    return path;
  };
  const configHome = (name: string, config: string) => {
    mkdirSync(join(dir, name, 'pam'), { recursive: true });
    file(join(name, 'pam', 'config.json'), config);
    return { XDG_CONFIG_HOME: join(dir, name) };
  };
  const openToken = file('open-token', `${token}\n`, 0o644);
  const gatewayOpenToken = file('gateway-open-token', 'a-long-enough-gateway-token-1234\n', 0o640);
  const notPem = file('not.pem', 'this is not a certificate\n');
  const badPem = file(
    'bad.pem',
    '-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n',
  );
  const fake = await notAGateway(t);
  const gatewayEnv = { ...env, PAM_GATEWAY_TOKEN: 'a-long-enough-gateway-token-1234' };
  const target = ['--target', `echo=127.0.0.1:${echo.port}`];
  const secretUrl = gateway.url.replace('http://', 'http://user:SECRET-in-url@');
  const cases: Array<[string, string[], NodeJS.ProcessEnv, number, RegExp]> = [
    [
      'token file others can read',
      ['tunnel', 'start', 'echo', '-R', 'true', '--token-file', openToken],
      env,
      2,
      /--token-file .* readable .*chmod 600/,
    ],
    [
      'gateway token file others can read',
      ['gateway', '--listen', '127.0.0.1:0', ...target, '--token-file', gatewayOpenToken],
      gatewayEnv,
      2,
      /readable .*chmod 600/,
    ],
    [
      '1-character gateway token',
      ['gateway', '--listen', '127.0.0.1:0', ...target],
      { ...env, PAM_GATEWAY_TOKEN: 'x' },
      2,
      /PAM_GATEWAY_TOKEN is too short .*openssl rand -hex 32/,
    ],
    [
      'short PAM_BROKER_TOKEN at the broker',
      ['broker', '--listen', '127.0.0.1:0'],
      { ...env, PAM_BROKER_TOKEN: 'fifteen-chars15' },
      2,
      /^pam: PAM_BROKER_TOKEN is too short \(15 characters, at least 16\): .*openssl rand -hex 32/,
    ],
    [
      'short PAM_BROKER_TOKEN at a gateway',
      ['gateway', '--broker', 'http://127.0.0.1:9', '--site', 'lab', ...target],
      { ...gatewayEnv, PAM_BROKER_TOKEN: 's3cret' },
      2,
      /^pam: PAM_BROKER_TOKEN is too short \(6 characters, at least 16\): .*the same value/,
    ],
    [
      'TURN only over TCP with --transport native',
      ['tunnel', 'start', 'echo', '-R', 'true', '--transport', 'native', '--ice-server', 'turn:127.0.0.1:9?transport=tcp'],
      { ...env, PAM_ICE_USERNAME: 'u', PAM_ICE_CREDENTIAL: 'c' },
      2,
      /^pam: the native transport .* cannot use TURN over TCP .*: use --transport werift/,
    ],
    [
      'credentials in --gateway',
      ['tunnel', 'start', 'echo', '-R', 'true', '--gateway', secretUrl],
      env,
      2,
      /must not carry credentials.*PAM_GATEWAY_TOKEN/,
    ],
    [
      'credentials in PAM_GATEWAY_URL, -bg',
      ['tunnel', 'start', 'echo', '-bg', '--json'],
      { ...env, PAM_GATEWAY_URL: secretUrl },
      2,
      /PAM_GATEWAY_URL must not carry credentials/,
    ],
    [
      'duplicate --target name',
      ['gateway', '--listen', '127.0.0.1:0', '--target', 'web=127.0.0.1:1', '--target', 'web=127.0.0.1:2'],
      gatewayEnv,
      2,
      /--target web is given twice/,
    ],
    [
      '--target port 0',
      ['gateway', '--listen', '127.0.0.1:0', '--target', 'web=127.0.0.1:0'],
      gatewayEnv,
      2,
      /--target web: port 0 is not a port a target listens on/,
    ],
    [
      'config key __proto__',
      ['tunnel', 'start', 'echo', '-R', 'true'],
      { ...env, ...configHome('c1', '{"__proto__": {"gateway": "http://127.0.0.1:1"}}') },
      2,
      /unknown key '__proto__'/,
    ],
    [
      'config key constructor',
      ['tunnel', 'start', 'echo', '-R', 'true'],
      { ...env, ...configHome('c2', '{"constructor": 1}') },
      2,
      /unknown key 'constructor'/,
    ],
    [
      'config key toString',
      ['tunnel', 'start', 'echo', '-R', 'true'],
      { ...env, ...configHome('c3', '{"toString": "x"}') },
      2,
      /unknown key 'toString'/,
    ],
    [
      'config key hasOwnProperty',
      ['tunnel', 'start', 'echo', '-R', 'true'],
      { ...env, ...configHome('c4', '{"hasOwnProperty": null}') },
      2,
      /unknown key 'hasOwnProperty'/,
    ],
    ['completion constructor', ['completion', 'constructor'], env, 2, /name a shell/],
    [
      'gateway --listen on a busy port',
      ['gateway', '--listen', `127.0.0.1:${gateway.port}`, ...target],
      gatewayEnv,
      75,
      /--listen 127\.0\.0\.1:\d+ is already in use/,
    ],
    [
      '--tls-cert not PEM',
      ['gateway', '--listen', '127.0.0.1:0', ...target, '--tls-cert', notPem, '--tls-key', notPem],
      gatewayEnv,
      2,
      /--tls-cert .* is not a PEM certificate/,
    ],
    [
      '--tls-cert PEM that does not load',
      ['gateway', '--listen', '127.0.0.1:0', ...target, '--tls-cert', badPem, '--tls-key', badPem],
      gatewayEnv,
      2,
      /--tls-cert\/--tls-key cannot be used/,
    ],
    [
      '--inspect=garbage',
      ['tunnel', 'start', 'echo', '-R', 'true', '--inspect=garbage'],
      env,
      2,
      /--inspect 'garbage' is not a ws:\/\/ or wss:\/\/ URL/,
    ],
    [
      'PAM_INSPECT=garbage',
      ['tunnel', 'start', 'echo', '-R', 'true'],
      { ...env, PAM_INSPECT: 'garbage' },
      2,
      /PAM_INSPECT 'garbage' is not a ws:\/\//,
    ],
    [
      'PAM_ICE_HOSTS=garbage',
      ['tunnel', 'start', 'echo', '-R', 'true'],
      { ...env, PAM_ICE_HOSTS: 'garbage' },
      2,
      /PAM_ICE_HOSTS: 'garbage' is not an IP address/,
    ],
    [
      'gateway PAM_ICE_HOSTS=garbage',
      ['gateway', '--listen', '127.0.0.1:0', ...target],
      { ...gatewayEnv, PAM_ICE_HOSTS: 'garbage' },
      2,
      /PAM_ICE_HOSTS/,
    ],
    [
      'a 200 answer that is not SDP',
      ['tunnel', 'start', 'echo', '-R', 'true', '--gateway', fake],
      env,
      69,
      new RegExp(`gateway ${fake} answered 200 (with something that is not an SDP|without a gateway key)`),
    ],
    ['--port -1', ['tunnel', 'start', 'echo', '--port', '-1'], env, 2, /--port '-1' is not a port/],
    ['--timeout -5', ['tunnel', 'start', 'echo', '--timeout', '-5'], env, 2, /--timeout '-5' must be a positive number/],
    ['--timeout 0.0001', ['tunnel', 'start', 'echo', '--timeout', '0.0001'], env, 2, /--timeout '0\.0001' is too short: .* at least 1 s/],
    ['--port twice', ['tunnel', 'start', 'echo', '--port', '1', '--port', '2'], env, 2, /--port was given 2 times/],
    [
      '--listen twice',
      ['gateway', '--listen', '127.0.0.1:0', '--listen', '127.0.0.1:1', ...target],
      gatewayEnv,
      2,
      /--listen was given 2 times/,
    ],
    [
      'PAM_TRANSPORT=quic',
      ['tunnel', 'start', 'echo', '-R', 'true'],
      { ...env, PAM_TRANSPORT: 'quic' },
      2,
      /PAM_TRANSPORT 'quic' is not known/,
    ],
    [
      'PAM_KEEPALIVE_TIMEOUT=soon',
      ['tunnel', 'start', 'echo', '-R', 'true'],
      { ...env, PAM_KEEPALIVE_TIMEOUT: 'soon' },
      2,
      /PAM_KEEPALIVE_TIMEOUT 'soon'/,
    ],
    [
      'PAM_PARALLEL=9',
      ['tunnel', 'start', 'echo', '-R', 'true'],
      { ...env, PAM_PARALLEL: '9' },
      2,
      /PAM_PARALLEL '9' must be a whole number of connections from 1 to 8 \(default 4\)/,
    ],
    [
      'PAM_PARALLEL=two',
      ['tunnel', 'start', 'echo', '-R', 'true'],
      { ...env, PAM_PARALLEL: 'two' },
      2,
      /PAM_PARALLEL 'two' must be a whole number/,
    ],
    [
      'PAM_GATEWAY_URL=ftp://x',
      ['tunnel', 'start', 'echo', '-R', 'true'],
      { ...env, PAM_GATEWAY_URL: 'ftp://127.0.0.1' },
      2,
      /PAM_GATEWAY_URL 'ftp:\/\/127\.0\.0\.1' is not an http\(s\) URL/,
    ],
    [
      'PAM_JOURNAL_KEEP=lots',
      ['tunnel', 'start', 'echo', '-R', 'true'],
      { ...env, PAM_JOURNAL_KEEP: 'lots' },
      2,
      /PAM_JOURNAL_KEEP 'lots'/,
    ],
  ];
  let clean = 0;
  for (const [name, args, caseEnv, code, message] of cases) {
    const proc = pam(t, args, { env: caseEnv });
    // Bounded: input that is wrongly accepted (a gateway that starts) must fail the case, not hang the test.
    const bound = setTimeout(() => proc.child.kill('SIGKILL'), 20_000);
    const exited = await proc.exited;
    clearTimeout(bound);
    const output = `${proc.stdout}${proc.stderr}`;
    const frames = output.split('\n').filter((line) => stackFrame.test(line));
    const lines = proc.stderr.trim().split('\n');
    const ok =
      exited === code && message.test(proc.stderr) && frames.length === 0 && lines.length === 1 && !output.includes('SECRET-in-url');
    t.ok(
      ok,
      `${name} → ${exited} (want ${code}): ${lines[0]}${frames.length ? ` [${frames.length} stack frames]` : ''}${lines.length > 1 ? ` [${lines.length} lines]` : ''}`,
    );
    if (ok) clean += 1;
  }
  const written = (root: string): string[] =>
    readdirSync(root, { withFileTypes: true }).flatMap((entry) =>
      entry.isDirectory() ? written(join(root, entry.name)) : [readFileSync(join(root, entry.name), 'utf8')],
    );
  const leaked = written(join(dir, 'registry')).some((text) => text.includes('SECRET-in-url'));
  t.notOk(leaked, 'URL credentials are in no registry, journal or log file');
  report(t, { badInputs: { tried: cases.length + 1, rejectedCleanly: clean + (leaked ? 0 : 1) } });
});

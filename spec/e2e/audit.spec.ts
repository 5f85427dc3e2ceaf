// End to end: the gateway's audit log with real processes on 127.0.0.1 — a sha256-checked transfer is
// recorded in order with its byte counts each way, refusals are recorded, no secret or payload byte is
// in the file, rotation by the flags, `pam gateway audit` filters, a broker gateway records the client
// address the broker forwards, and a log that cannot be written refuses new tunnels (fail closed) while
// the gateway stays up and heals once the log is repaired.

import { createHash, randomBytes } from 'node:crypto';
import { appendFileSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import type { AuditLine } from '../../gateway/audit.js';
import { startBrokerGateway, startBrokerProc } from '../support/broker.js';
import {
  echoServer,
  freePort,
  halfCloseExchange,
  pam,
  roundTrip,
  scratchDir,
  sha256,
  startGatewayProc,
  tcpServer,
  tunnelEnv,
  until,
} from '../support/processes.js';
import { sealedPost } from '../support/sealed.js';
import type { TapTest } from '../support/tap.js';

const token = 'audit-spec-token-7a41c9';
const marker = 'PAYLOAD-MARKER-b81e0d';

const auditLines = (path: string): AuditLine[] =>
  readFileSync(path, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as AuditLine);
const events = (path: string) => auditLines(path).map((line) => line.event);

/** Reads the whole upload, then answers its sha256 (64 hex bytes) and `extra` bytes, then FIN. */
async function digestServer(t: TapTest, extra: number): Promise<number> {
  const served = await tcpServer(t, (socket) => {
    const hash = createHash('sha256');
    socket.on('data', (chunk: Buffer) => hash.update(chunk));
    socket.on('end', () => socket.end(Buffer.concat([Buffer.from(hash.digest('hex')), Buffer.alloc(extra, 0x72)])));
  });
  return served.port;
}

/** A foreground `pam tunnel start` on a free port; resolves once it listens. */
async function foregroundTunnel(t: TapTest, env: NodeJS.ProcessEnv, target: string) {
  const port = await freePort();
  const proc = pam(t, ['tunnel', 'start', target, '--port', String(port)], { env });
  await proc.line(/listening on/);
  return { proc, port };
}

t.test('a sha256-checked transfer is audited in order with its bytes each way; refusals too; no secret in the file', async (t) => {
  const dir = scratchDir(t);
  const reply = 30_000;
  const web = await digestServer(t, reply);
  const echo = await echoServer(t);
  const gateway = await startGatewayProc(t, dir, token, { web, db: echo.port });
  const log = join(dir, 'state', 'pam', 'audit.jsonl');
  const key = /"key":"(SHA256:[^"]+)"/.exec(gateway.proc.stdout)![1]!;
  t.equal(statSync(log).mode & 0o777, 0o600, 'the default audit log is 0600');
  t.equal(statSync(join(dir, 'state', 'pam')).mode & 0o777, 0o700);
  const env = tunnelEnv(dir, token, gateway.url);

  const tunnel = await foregroundTunnel(t, env, 'web');
  const uploads = [Buffer.concat([Buffer.from(marker), randomBytes(200_000)]), Buffer.concat([Buffer.from(marker), randomBytes(5_000)])];
  for (const upload of uploads) {
    const back = await halfCloseExchange(tunnel.port, upload);
    t.equal(back.subarray(0, 64).toString(), sha256(upload), 'the target received the upload intact (sha256)');
    t.equal(back.length, 64 + reply);
  }
  await until(() => events(log).filter((name) => name === 'connection.closed').length === 2, 10_000, 'both connection.closed');
  tunnel.proc.child.kill('SIGTERM');
  t.equal(await tunnel.proc.exited, 0);
  await until(() => events(log).includes('tunnel.closed'), 10_000, 'tunnel.closed');

  const refusedToken = pam(t, ['tunnel', 'start', 'web', '-R', 'true'], { env: { ...env, PAM_GATEWAY_TOKEN: 'not-the-token-5e3a90' } });
  t.equal(await refusedToken.exited, 77);
  const unknown = pam(t, ['tunnel', 'start', 'nosuch', '-R', 'true'], { env });
  t.equal(await unknown.exited, 68);

  const lines = auditLines(log);
  t.same(
    lines.map((line) => line.event),
    [
      'tunnel.opened',
      'connection.opened',
      'connection.closed',
      'connection.opened',
      'connection.closed',
      'tunnel.closed',
      'access.refused',
      'access.refused',
    ],
    'the lines, in order',
  );
  for (const line of lines) {
    t.equal(line.gateway, key, `${line.event} names the gateway key`);
    t.ok(!Number.isNaN(Date.parse(line.time)), 'with a timestamp');
  }
  const tunnelId = (lines[0] as { tunnel: string }).tunnel;
  t.match(lines[0], { event: 'tunnel.opened', who: { kind: 'token' }, client: '127.0.0.1', target: 'web', path: 'direct' });
  t.match(lines.slice(1, 6), [
    { event: 'connection.opened', tunnel: tunnelId, connection: 1 },
    {
      event: 'connection.closed',
      tunnel: tunnelId,
      connection: 1,
      bytesFromClient: uploads[0]!.length,
      bytesToClient: 64 + reply,
      end: 'fin',
    },
    { event: 'connection.opened', tunnel: tunnelId, connection: 2 },
    {
      event: 'connection.closed',
      tunnel: tunnelId,
      connection: 2,
      bytesFromClient: uploads[1]!.length,
      bytesToClient: 64 + reply,
      end: 'fin',
    },
    {
      event: 'tunnel.closed',
      tunnel: tunnelId,
      connections: 2,
      bytesFromClient: uploads[0]!.length + uploads[1]!.length,
      bytesToClient: 2 * (64 + reply),
    },
  ]);
  t.match(lines[6], { event: 'access.refused', status: 401, code: 'token-refused', why: /token/, client: '127.0.0.1', target: 'web' });
  t.notOk('who' in lines[6]!, 'a refused token proves no identity: no who');
  t.match(lines[7], { event: 'access.refused', status: 404, why: /unknown target 'nosuch'/, target: 'nosuch' });

  const text = readFileSync(log, 'utf8');
  const seed = readFileSync(join(dir, 'state', 'pam', 'gateway.key'), 'utf8')
    .trim()
    .split(' ')[1]!;
  for (const [what, secret] of [
    ['the token', token],
    ['the refused token', 'not-the-token-5e3a90'],
    ['the gateway key seed', seed],
    ['the gateway key seed (hex)', Buffer.from(seed, 'base64').toString('hex')],
    ['payload bytes', marker],
  ] as const) {
    t.notOk(text.includes(secret), `no ${what} in the audit log`);
  }

  // Read back: filters, the table, and a malformed line reported and skipped.
  const read = (args: string[]) => pam(t, ['gateway', 'audit', ...args], { env: tunnelEnv(dir, token) });
  // Independent reads, run at once.
  const onlyDb = read(['--json', '--target', 'nosuch']);
  const recent = read(['--json', '--since', '1h', '--target', 'web']);
  const future = read(['--json', '--since', new Date(Date.now() + 3_600_000).toISOString()]);
  const byToken = read(['--json', '--key', 'token']);
  const badSince = read(['--since', 'last tuesday']);
  t.equal(await onlyDb.exited, 0, onlyDb.stderr);
  t.same(
    onlyDb.stdout
      .trim()
      .split('\n')
      .map((line) => (JSON.parse(line) as AuditLine).event),
    ['access.refused'],
    '--target keeps only that target',
  );
  t.equal(await recent.exited, 0);
  t.equal(recent.stdout.trim().split('\n').length, 7, '--since 1h: every web line');
  t.equal(await future.exited, 0);
  t.equal(future.stdout, '', '--since in the future: nothing');
  t.equal(await byToken.exited, 0);
  t.equal(byToken.stdout.trim().split('\n').length, 7, '--key token: every line of the token holder (the tunnel and the unknown target)');
  t.equal(await badSince.exited, 2);
  t.match(badSince.stderr, /--since 'last tuesday' must be an ISO time/);
  appendFileSync(log, 'garbage that is not json\n');
  const table = read([]);
  t.equal(await table.exited, 0);
  t.match(table.stdout, /^TIME\s+EVENT\s+TUNNEL\s+WHO\s+CLIENT\s+TARGET\s+DETAIL$/m);
  t.match(
    table.stdout,
    new RegExp(`connection\\.closed\\s+${tunnelId}\\s+token\\s+-\\s+web\\s+connection 1: fin, ${uploads[0]!.length} B in`),
  );
  t.match(table.stderr, /audit\.jsonl:9: not JSON, skipped/, 'the malformed line is named by number');
});

t.test('--audit-max-mb and --audit-keep rotate: at most keep older files, every kept line whole and in order', async (t) => {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const log = join(dir, 'audit', 'gateway.jsonl');
  const gateway = await startGatewayProc(t, dir, token, { echo: echo.port }, [
    '--audit-log',
    log,
    '--audit-max-mb',
    '0.002',
    '--audit-keep',
    '2',
  ]);
  const key = Buffer.from(((await (await fetch(`${gateway.url}/v1/key`)).json()) as { key: string }).key, 'base64');
  for (let n = 0; n < 40; n += 1) {
    const refused = await sealedPost(gateway.url, key, { token: `wrong-${n}`, target: `t${n}`, offer: 'v=0\r\n' });
    t.equal(refused.reply?.status, 401);
  }
  const files = readdirSync(join(dir, 'audit')).sort();
  t.same(files, ['gateway.jsonl', 'gateway.jsonl.1', 'gateway.jsonl.2'], 'the live file and two rotated ones');
  for (const file of files) t.ok(statSync(join(dir, 'audit', file)).size <= 0.002 * 1024 * 1024, `${file} within --audit-max-mb`);
  const read = pam(t, ['gateway', 'audit', '--json', '--audit-log', log], { env: tunnelEnv(dir, token) });
  t.equal(await read.exited, 0);
  t.equal(read.stderr, '', 'no malformed line');
  const targets = read.stdout
    .trim()
    .split('\n')
    .map((line) => Number(String((JSON.parse(line) as AuditLine).target).slice(1)));
  const first = targets[0]!;
  t.ok(first > 0, 'the oldest lines were rotated away');
  t.same(
    targets,
    Array.from({ length: 40 - first }, (_, n) => first + n),
    'oldest first, none missing, none twice',
  );
});

t.test(
  'behind a broker: the forwarded client address and the site are recorded; a stopping gateway closes its tunnels on the record',
  async (t) => {
    const dir = scratchDir(t);
    const echo = await echoServer(t);
    const broker = await startBrokerProc(t, dir);
    const gateway = await startBrokerGateway(t, dir, token, broker.url, 'lab', { echo: echo.port });
    const env = tunnelEnv(dir, token, gateway.url);
    const run = pam(t, ['tunnel', 'start', 'echo', '-R', 'true'], { env });
    t.equal(await run.exited, 0, run.stderr);
    const refused = pam(t, ['tunnel', 'start', 'echo', '-R', 'true'], { env: { ...env, PAM_GATEWAY_TOKEN: 'wrong-token-via-broker' } });
    t.equal(await refused.exited, 77);
    const log = join(dir, 'state', 'pam', 'audit.jsonl');
    await until(() => events(log).includes('tunnel.closed'), 10_000, 'tunnel.closed');
    t.match(gateway.proc.stderr, new RegExp(`audit log ${log.replace(/[/.]/g, '\\$&')}`), 'the gateway names its audit log at start');

    // A connection still open when the gateway stops: both are closed on the record before it exits.
    const live = await foregroundTunnel(t, env, 'echo');
    const socket = connect(live.port, '127.0.0.1');
    socket.on('error', () => undefined);
    // All of it back before the stop: a fresh channel sends its first frames small (1 KiB, decision
    // 0017), so the echo may arrive in more than one piece.
    let back = 0;
    const echoed = new Promise<void>((resolve) =>
      socket.on('data', (chunk: Buffer) => {
        back += chunk.length;
        if (back >= 1234) resolve();
      }),
    );
    socket.write(Buffer.alloc(1234, 9));
    await echoed;
    gateway.proc.child.kill('SIGTERM');
    t.equal(await gateway.proc.exited, 0);
    socket.destroy();
    const lines = auditLines(log);
    t.match(lines.slice(-3), [
      { event: 'connection.opened', connection: 1 },
      { event: 'connection.closed', connection: 1, end: 'tunnel-closed', bytesFromClient: 1234, bytesToClient: 1234 },
      { event: 'tunnel.closed', why: 'the gateway stopped', connections: 1 },
    ]);
    t.match(
      lines.find((line) => line.event === 'tunnel.opened'),
      { site: 'lab', gateway: gateway.key, client: '127.0.0.1', target: 'echo' },
    );
    t.match(
      lines.find((line) => line.event === 'access.refused'),
      { site: 'lab', client: '127.0.0.1', status: 401 },
    );
  },
);

t.test('a log that cannot be written refuses new tunnels and connections; the gateway stays up and heals', async (t) => {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const logs = join(dir, 'logs');
  const log = join(logs, 'audit.jsonl');
  const gateway = await startGatewayProc(t, dir, token, { echo: echo.port }, ['--audit-log', log]);
  const env = tunnelEnv(dir, token, gateway.url);
  const live = await foregroundTunnel(t, env, 'echo');
  const payload = randomBytes(10_000);
  t.equal(sha256(await roundTrip(live.port, payload)), sha256(payload), 'a tunnel opened while the log is fine carries bytes');
  await until(() => events(log).includes('connection.closed'), 10_000, 'its connection.closed, before the log breaks');

  // The log's directory replaced by a regular file: nothing can write there, not even root.
  renameSync(logs, join(dir, 'logs.saved'));
  writeFileSync(logs, 'not a directory\n');
  const refused = pam(t, ['tunnel', 'start', 'echo', '-R', 'echo ran'], { env });
  t.equal(await refused.exited, 69);
  t.match(refused.stderr, /answered HTTP 503: the gateway cannot write its audit log \((ENOTDIR|EEXIST)\); it refuses new tunnels/);
  t.notMatch(refused.stdout, /echo ran/);
  await gateway.proc.line(/cannot write the audit log .*logs\/audit\.jsonl .*refusing new tunnels/);
  const before = echo.connections;
  const cut = await roundTrip(live.port, payload).catch(() => Buffer.alloc(0));
  t.equal(cut.length, 0, 'a new connection in a live tunnel is refused too: nothing unrecorded reaches the target');
  t.equal(echo.connections, before, 'the target was not dialled');
  t.equal(((await (await fetch(`${gateway.url}/healthz`)).json()) as { ok: boolean }).ok, true, 'the gateway is still up');

  unlinkSync(logs);
  renameSync(join(dir, 'logs.saved'), logs);
  const healed = pam(t, ['tunnel', 'start', 'echo', '-R', 'true'], { env });
  t.equal(await healed.exited, 0, healed.stderr);
  await gateway.proc.line(/can be written again/);
  live.proc.child.kill('SIGTERM');
  await live.proc.exited;
  await until(() => events(log).filter((name) => name === 'tunnel.closed').length === 2, 10_000, 'both tunnel.closed');
  t.same(
    events(log),
    ['tunnel.opened', 'connection.opened', 'connection.closed', 'tunnel.opened', 'tunnel.closed', 'tunnel.closed'],
    'what happened while the log was writable, and nothing else',
  );
});

t.test(
  'user keys: the key is named (fingerprint, comment) with reason and ticket, refused grants and a revocation are recorded, --key filters',
  async (t) => {
    const dir = scratchDir(t);
    const [web, db] = [await echoServer(t), await echoServer(t)];
    const keygen = async (name: string) => {
      const file = join(dir, 'keys', name);
      const proc = pam(t, ['keygen', '--file', file, '--comment', name], { env: tunnelEnv(dir, token) });
      t.equal(await proc.exited, 0, proc.stderr);
      return { file, line: proc.stdout.trim() };
    };
    const [alice, bob] = [await keygen('alice'), await keygen('bob')];
    const grants = join(dir, 'authorized_keys');
    writeFileSync(grants, [`targets=web ${alice.line}`, `targets=web ${bob.line}`].join('\n'));
    const gateway = await startGatewayProc(t, dir, token, { web: web.port, db: db.port }, ['--authorized-keys', grants]);
    const log = join(dir, 'state', 'pam', 'audit.jsonl');
    const env = tunnelEnv(dir, token, gateway.url);
    const as = (key: string): NodeJS.ProcessEnv => ({ ...env, PAM_GATEWAY_TOKEN: undefined, PAM_KEY_FILE: key });

    const refused = pam(t, ['tunnel', 'start', 'db', '-R', 'true'], { env: as(bob.file) });
    t.equal(await refused.exited, 77);
    const port = await freePort();
    const live = pam(t, ['tunnel', 'start', 'web', '--port', String(port), '--reason', 'fix the login page', '--ticket', 'INC-42'], {
      env: as(alice.file),
    });
    await live.line(/listening on/);
    const payload = randomBytes(20_000);
    t.equal(sha256(await roundTrip(port, payload)), sha256(payload));
    await until(() => events(log).includes('connection.closed'), 10_000, 'connection.closed');
    writeFileSync(grants, `targets=web ${bob.line}\n`);
    gateway.proc.child.kill('SIGHUP');
    t.equal(await live.exited, 77, 'the revoked tunnel ends');
    await until(() => events(log).includes('tunnel.closed'), 10_000, 'tunnel.closed');

    const lines = auditLines(log);
    const denied = lines.find((line) => line.event === 'access.refused');
    t.match(denied, { status: 403, code: 'target-not-granted', target: 'db', client: '127.0.0.1', who: { kind: 'key', comment: 'bob' } });
    const opened = lines.find((line) => line.event === 'tunnel.opened');
    t.match(opened, {
      who: { kind: 'key', fingerprint: /^SHA256:/, comment: 'alice' },
      target: 'web',
      reason: 'fix the login page',
      ticket: 'INC-42',
    });
    t.match(
      lines.find((line) => line.event === 'connection.closed'),
      { bytesFromClient: payload.length, bytesToClient: payload.length, end: 'fin' },
    );
    t.match(
      lines.find((line) => line.event === 'tunnel.closed'),
      { why: /^access revoked: key SHA256:\S+ \(alice\) was removed/, connections: 1 },
    );
    const text = readFileSync(log, 'utf8');
    for (const file of [alice.file, bob.file]) {
      const secret = readFileSync(file, 'utf8')
        .split('\n')
        .filter((row) => !row.startsWith('-----') && row.length > 0)
        .join('');
      t.notOk(text.includes(secret), 'no private key in the audit log');
    }

    const fingerprint = (opened!.who as { fingerprint: string }).fingerprint;
    const read = pam(t, ['gateway', 'audit', '--json', '--key', fingerprint], { env: tunnelEnv(dir, token) });
    t.equal(await read.exited, 0, read.stderr);
    t.same(
      read.stdout
        .trim()
        .split('\n')
        .map((line) => (JSON.parse(line) as AuditLine).event),
      ['tunnel.opened', 'connection.opened', 'connection.closed', 'tunnel.closed'],
      "--key: alice's lines only",
    );
  },
);

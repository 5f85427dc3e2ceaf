// Several targets in one `pam tunnel start`: one owner, one link, one port and one registry record per
// target; each connection reaches its own target; stopping one keeps the others; and one target the
// gateway does not serve leaves nothing behind (no listener, no registry file, no owner).

import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import {
  echoServer,
  freePort,
  isAlive,
  pam,
  portIsOpen,
  randomPayload,
  roundTrip,
  scratchDir,
  sha256,
  startGatewayProc,
  tunnelEnv,
  until,
  type Teardownable,
} from '../support/processes.js';

const token = 'multi-target-token-4c7a';

async function setup(t: Teardownable) {
  const dir = scratchDir(t);
  const db = await echoServer(t);
  const web = await echoServer(t);
  const gateway = await startGatewayProc(t, dir, token, { db: db.port, web: web.port });
  const env = tunnelEnv(dir, token, gateway.url);
  const registry = join(dir, 'registry');
  const files = () => (existsSync(registry) ? readdirSync(registry).filter((name) => /^\d+\.(json|sock)$/.test(name)) : []);
  return { env, db, web, files };
}

interface Row {
  id: string;
  pid: number;
  port: number;
  target: string;
  state: string;
}

async function list(t: Teardownable, env: NodeJS.ProcessEnv): Promise<Row[]> {
  const proc = pam(t, ['tunnel', 'list', '--json'], { env });
  if ((await proc.exited) !== 0) throw new Error(`list failed: ${proc.stderr}`);
  return JSON.parse(proc.stdout) as Row[];
}

t.test('two targets in one -bg start: both carry bytes to their own target, a record each, stop one keeps the other', async (t) => {
  const { env, db, web, files } = await setup(t);
  const dbPort = await freePort();
  const launcher = pam(t, ['tunnel', 'start', 'db', 'web', '-bg', '--json', '--port', `db=${dbPort}`], { env });
  t.equal(await launcher.exited, 0, launcher.stderr);
  const ready = launcher.stdout
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as Row);
  t.teardown(() => {
    if (ready[0] && isAlive(ready[0].pid)) process.kill(ready[0].pid, 'SIGKILL');
  });
  t.match(
    ready,
    [
      { target: 'db', port: dbPort, state: 'ready' },
      { target: 'web', state: 'ready' },
    ],
    '--json: one ready line per target',
  );
  const [dbTunnel, webTunnel] = ready as [Row, Row];
  t.equal(dbTunnel.pid, webTunnel.pid, 'one owner process');
  t.not(dbTunnel.id, webTunnel.id, 'each target has its own id');

  for (const [tunnel, server] of [
    [dbTunnel, db],
    [webTunnel, web],
  ] as const) {
    const before = server.connections;
    const payload = randomPayload(512 * 1024);
    t.equal(sha256(await roundTrip(tunnel.port, payload)), sha256(payload), `${tunnel.target}: bytes round-trip (sha256)`);
    t.equal(server.connections, before + 1, `${tunnel.target}: the connection reached its own target`);
  }
  t.equal(db.connections + web.connections, 2, 'and no other');

  t.same(
    (await list(t, env)).map(({ id, pid, target, port }) => ({ id, pid, target, port })),
    ready.map(({ id, pid, target, port }) => ({ id, pid, target, port })),
    'list shows one record per target',
  );

  const stopWeb = pam(t, ['tunnel', 'stop', 'web'], { env });
  t.equal(await stopWeb.exited, 0, `stop web: ${stopWeb.stderr}`);
  t.notOk(await portIsOpen(webTunnel.port), 'the stopped target no longer listens');
  t.ok(isAlive(dbTunnel.pid), 'the owner lives on for the other target');
  const payload = randomPayload(64 * 1024);
  t.equal(sha256(await roundTrip(dbTunnel.port, payload)), sha256(payload), 'db still carries bytes over the same link');
  t.same(
    (await list(t, env)).map((row) => row.id),
    [dbTunnel.id],
    'only its record is left',
  );

  const stopDb = pam(t, ['tunnel', 'stop', dbTunnel.id], { env });
  t.equal(await stopDb.exited, 0, `stop the last target: ${stopDb.stderr}`);
  await until(() => !isAlive(dbTunnel.pid), 5_000, 'owner exit');
  t.notOk(await portIsOpen(dbTunnel.port), 'its port is closed');
  t.same(files(), [], 'no registry entry or control socket left');
});

t.test('--run with two targets gets PAM_TUNNEL_PORT_<NAME>; --json in the foreground prints a ready line each', async (t) => {
  const { env, files } = await setup(t);
  const [dbPort, webPort] = [await freePort(), await freePort()];
  const run = pam(
    t,
    [
      'tunnel',
      'start',
      'db',
      'web',
      '--port',
      `db=${dbPort}`,
      '--port',
      `web=${webPort}`,
      '--run',
      // Unset single-target variables print as "none".
      'echo "ports $PAM_TUNNEL_HOST $PAM_TUNNEL_PORT_DB $PAM_TUNNEL_PORT_WEB $' + '{PAM_TUNNEL_PORT:-none} $' + '{PAM_TUNNEL_ID:-none}"',
    ],
    { env },
  );
  t.equal(await run.exited, 0, run.stderr);
  t.match(run.stdout, `ports 127.0.0.1 ${dbPort} ${webPort} none none`, 'per-target ports; no single-target variables');

  const fg = pam(t, ['tunnel', 'start', 'web', 'db', '--json'], { env });
  await until(() => fg.stdout.split('\n').filter((line) => line.includes('"event":"ready"')).length === 2, 20_000, 'two ready lines');
  const lines = fg.stdout
    .split('\n')
    .filter((line) => line.includes('"event":"ready"'))
    .map((line) => JSON.parse(line) as Row);
  t.match(lines, [{ target: 'web' }, { target: 'db' }], 'in the order given');
  fg.child.kill('SIGTERM');
  t.equal(await fg.exited, 0);
  t.same(files(), [], 'nothing left in the registry');
});

t.test('one target the gateway does not serve: 68, nothing left (foreground and -bg)', async (t) => {
  const { env, files, db } = await setup(t);
  const dbPort = await freePort();
  const fg = pam(t, ['tunnel', 'start', 'db', 'nosuch', '--port', `db=${dbPort}`], { env });
  t.equal(await fg.exited, 68, fg.stderr);
  t.match(fg.stderr, /target 'nosuch' is not served by the gateway \(it serves: db, web\)/);
  t.notOk(await portIsOpen(dbPort), 'the good target’s port was released');
  t.same(files(), [], 'no registry file');

  const bg = pam(t, ['tunnel', 'start', 'db', 'nosuch', '-bg', '--json', '--port', `db=${dbPort}`], { env });
  t.equal(await bg.exited, 68, bg.stderr);
  t.match(JSON.parse(bg.stdout), { event: 'stopped', exitCode: 68, kind: 'unknownTarget' });
  t.notOk(await portIsOpen(dbPort), 'no listener left by the owner');
  t.same(files(), [], 'no registry file');
  t.equal(db.connections, 0, 'the gateway dialled nothing');

  const busy = pam(t, ['tunnel', 'start', 'db', 'web', '--port', `db=${dbPort}`, '--port', `web=${dbPort}`], { env });
  t.equal(await busy.exited, 2, 'one port for two targets is a usage error');
});

t.test('with a user key: both targets granted → both carry bytes (the list is signed); one not granted → 77, nothing left', async (t) => {
  const dir = scratchDir(t);
  const [db, web] = [await echoServer(t), await echoServer(t)];
  const keys: Record<string, { file: string; line: string }> = {};
  for (const name of ['both', 'dbonly']) {
    const file = join(dir, 'keys', name);
    const made = pam(t, ['keygen', '--file', file, '--comment', name], { env: tunnelEnv(dir, token) });
    t.equal(await made.exited, 0, made.stderr);
    keys[name] = { file, line: made.stdout.trim() };
  }
  const grants = join(dir, 'authorized_keys');
  writeFileSync(grants, `targets="db,web" ${keys.both!.line}\ntargets="db" ${keys.dbonly!.line}\n`);
  const gateway = await startGatewayProc(t, dir, token, { db: db.port, web: web.port }, ['--authorized-keys', grants]);
  const env = (key: string) => ({ ...tunnelEnv(dir, token, gateway.url), PAM_GATEWAY_TOKEN: undefined, PAM_KEY_FILE: keys[key]!.file });
  const registry = join(dir, 'registry');
  const files = () => (existsSync(registry) ? readdirSync(registry).filter((name) => /^\d+\.(json|sock)$/.test(name)) : []);

  const fg = pam(t, ['tunnel', 'start', 'db', 'web', '--json'], { env: env('both') });
  await until(() => fg.stdout.split('\n').filter((line) => line.includes('"event":"ready"')).length === 2, 20_000, 'two ready lines');
  const ports = fg.stdout
    .split('\n')
    .filter((line) => line.includes('"event":"ready"'))
    .map((line) => (JSON.parse(line) as Row).port);
  for (const port of ports) {
    const payload = randomPayload(64 * 1024);
    t.equal(sha256(await roundTrip(port, payload)), sha256(payload), `bytes through ${port}`);
  }
  t.equal(db.connections + web.connections, 2, 'one connection reached each target');
  fg.child.kill('SIGTERM');
  t.equal(await fg.exited, 0);

  const dbPort = await freePort();
  const refused = pam(t, ['tunnel', 'start', 'db', 'web', '--port', `db=${dbPort}`], { env: env('dbonly') });
  t.equal(await refused.exited, 77, refused.stderr);
  t.match(refused.stderr, /is not granted target 'web'; it may reach: db/);
  t.notOk(await portIsOpen(dbPort), 'the granted target’s port was released too');
  t.same(files(), [], 'no registry file');
});

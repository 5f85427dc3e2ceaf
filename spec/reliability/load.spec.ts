// Load: 100 tunnels from one machine at once (in one `pam shell`), every one carrying bytes at the same
// time, all sha256-verified; then all stopped with nothing left. (1,000 connections in one tunnel:
// spec/e2e/data-path.spec.ts.)

import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { echoServer, pam, portIsOpen, roundTrip, scratchDir, sha256, startGatewayProc, tunnelEnv, until } from '../support/processes.js';
import { report } from './tally.js';

const token = 'load-token-64a1-e5f6';
const count = 100;

t.test(`${count} tunnels at once from one machine, all carrying verified bytes`, async (t) => {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const gateway = await startGatewayProc(t, dir, token, { echo: echo.port }, ['--max-tunnels-per-client', String(count + 28)]);
  const env = tunnelEnv(dir, token, gateway.url);
  const shell = pam(t, ['shell'], { env, stdin: 'pipe' });
  shell.child.stdin!.write(Array.from({ length: count }, () => 'tunnel start echo --json --timeout 60\n').join(''));
  await until(
    () => (shell.stdout.match(/"event":"ready"/g) ?? []).length === count || shell.child.exitCode !== null,
    600_000,
    `${count} ready tunnels`,
  );
  const ports = shell.stdout
    .split('\n')
    .filter((line) => line.includes('"event":"ready"'))
    .map((line) => Number((JSON.parse(line) as { port: number }).port));
  t.equal(new Set(ports).size, count, `${count} distinct local ports`);

  const listed = pam(t, ['tunnel', 'list', '--json'], { env });
  await listed.exited;
  t.equal((JSON.parse(listed.stdout) as unknown[]).length, count, 'another process lists them all');

  const payloads = ports.map(() => randomBytes(64 * 1024));
  const echoed = await Promise.all(ports.map((port, index) => roundTrip(port, payloads[index]!)));
  const intact = echoed.filter((bytes, index) => sha256(bytes) === sha256(payloads[index]!)).length;
  t.equal(intact, count, 'every tunnel echoed its 64 KiB intact, all at once');

  shell.child.stdin!.end();
  t.equal(await shell.exited, 0, shell.stderr.split('\n').slice(-5).join('\n'));
  const open = (await Promise.all(ports.map((port) => portIsOpen(port)))).filter(Boolean).length;
  t.equal(open, 0, 'every port released');
  const registry = join(dir, 'registry');
  t.same(existsSync(registry) ? readdirSync(registry).filter((name) => /\.(json|sock)$/.test(name)) : [], [], 'nothing left registered');
  const lost = payloads.reduce((sum, payload, index) => sum + (sha256(echoed[index]!) === sha256(payload) ? 0 : payload.length), 0);
  report(t, { load: { held: intact === count && open === 0, what: `${count} tunnels at once` }, bytes: { sent: count * 64 * 1024, lost } });
});

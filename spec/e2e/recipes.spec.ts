// The README's automation recipes, run exactly as written (taken from README.md), with `pam` on PATH
// and a gateway serving the targets they name.

import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, symlinkSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import {
  echoServer,
  pamBin,
  postgres,
  repoRoot,
  scratchDir,
  spawnProc,
  startGatewayProc,
  tunnelEnv,
  type Teardownable,
} from '../support/processes.js';
import { skipBecause } from '../support/tap.js';

const token = 'recipes-token-93b0';
const has = (command: string) => spawnSync(command, ['--version'], { stdio: 'ignore' }).status === 0;

/** The first ```sh block after `marker` in the README. */
function recipe(marker: string): string {
  const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
  const from = readme.indexOf(marker);
  const block = /```sh\n([\s\S]*?)```/.exec(readme.slice(from));
  if (from < 0 || !block) throw new Error(`README has no sh block after ${marker}`);
  return block[1]!;
}

function shellWithPam(t: Teardownable, dir: string, env: NodeJS.ProcessEnv) {
  const bin = join(dir, 'bin');
  mkdirSync(bin, { recursive: true });
  symlinkSync(pamBin, join(bin, 'pam'));
  // TMPDIR: whatever the recipe makes with mktemp lands in the test's own directory.
  return (script: string) =>
    spawnProc(t, 'bash', ['-euo', 'pipefail', '-c', script], {
      env: { ...env, PATH: `${bin}:${process.env.PATH}`, TMPDIR: dir },
      cwd: dir,
    });
}

t.test('recipe: a script with a background tunnel, list and stop', async (t) => {
  if (!has('jq') || !has('curl')) {
    skipBecause(t, 'jq or curl is not installed: the recipe uses both');
    return;
  }
  const dir = scratchDir(t);
  const web = createServer((request, response) => response.end(request.url === '/health' ? 'healthy\n' : 'other\n'));
  t.teardown(() => web.close());
  await new Promise<void>((resolve) => web.listen(0, '127.0.0.1', resolve));
  const gateway = await startGatewayProc(t, dir, token, { web: (web.address() as AddressInfo).port });
  const run = shellWithPam(t, dir, tunnelEnv(dir, token, gateway.url));
  const script = recipe('**A script with a background tunnel**');
  const shell = run(script);
  t.equal(await shell.exited, 0, shell.stderr);
  t.match(shell.stdout, /^healthy\n/, 'curl got the page through the tunnel');
  t.match(shell.stdout, /stopped tunnel [0-9a-f]{8} \(web, pid \d+\)/, 'and stop reported it');
  const left = spawnSync(process.execPath, [pamBin, 'tunnel', 'list', '--json'], {
    env: { ...process.env, ...tunnelEnv(dir, token) },
    encoding: 'utf8',
  });
  t.same(JSON.parse(left.stdout), [], 'nothing left running');
});

t.test('recipe: a CI step through a tunnel with --run and psql', async (t) => {
  if (!has('psql')) {
    skipBecause(t, 'psql is not installed: the recipe runs psql');
    return;
  }
  const pgPort = await postgres(t);
  const dir = scratchDir(t);
  const gateway = await startGatewayProc(t, dir, token, { db: pgPort });
  const run = shellWithPam(t, dir, { ...tunnelEnv(dir, token, gateway.url), PGCONNECT_TIMEOUT: '10' });
  const shell = run(recipe('**A CI step through a tunnel**'));
  t.equal(await shell.exited, 0, shell.stderr);
  t.match(shell.stdout, /\?column\?\s*\n-+\n\s*1\n\(1 row\)/, "psql's answer came back through the tunnel");
});

t.test('recipes: several targets in one start; waiting for a tunnel and reading its log', async (t) => {
  const dir = scratchDir(t);
  const targets: Record<string, number> = {};
  for (const name of ['db', 'cache', 'web']) targets[name] = (await echoServer(t)).port;
  const gateway = await startGatewayProc(t, dir, token, targets);
  const env = tunnelEnv(dir, token, gateway.url);
  const run = shellWithPam(t, dir, env);

  const several = run(recipe('**Several targets in one start**'));
  t.equal(await several.exited, 0, several.stderr);
  t.match(several.stdout, /^db on 15432, cache on \d+\n/, '--run saw a port variable per target');
  const ready = several.stdout
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as { id: string; target: string });
  t.match(ready, [{ target: 'db' }, { target: 'web' }], 'a ready line per target');
  t.match(
    several.stdout,
    new RegExp(`stopped tunnel ${ready[1]?.id} \\(web[\\s\\S]*stopped tunnel ${ready[0]?.id} \\(db`),
    'web, then db stopped',
  );

  if (!has('jq')) {
    skipBecause(t, 'jq is not installed: the waiting recipe uses it');
    return;
  }
  const waiting = run(recipe('**Waiting for a tunnel another step started'));
  t.equal(await waiting.exited, 0, waiting.stderr);
  t.match(
    waiting.stdout,
    /^\{[\s\S]*"event":"ready"[\s\S]*stopped tunnel [0-9a-f]{8} \(db[\s\S]*no running tunnel matches '[0-9a-f]{8}'\n$/,
    'logs --tail, stop, wait --for gone',
  );
  const followed = readFileSync(join(dir, 'db-tunnel.log'), 'utf8');
  t.match(followed, /"event":"stopped","id":"[0-9a-f]{8}","exitCode":0/, 'logs -f followed the owner to its end');
  const left = spawnSync(process.execPath, [pamBin, 'tunnel', 'list', '--json'], { env: { ...process.env, ...env }, encoding: 'utf8' });
  t.same(JSON.parse(left.stdout), [], 'nothing left running');
});

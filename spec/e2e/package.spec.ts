// The package as a user meets it: `npm pack`, install the tarball into a fresh prefix (no dev
// dependencies, no build step), and use the installed `pam` for real.

import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { echoServer, repoRoot, scratchDir, spawnProc, tunnelEnv } from '../support/processes.js';

const version = (JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string }).version;
const npm = (args: string[], cwd = repoRoot) =>
  spawnSync('npm', args, { cwd, encoding: 'utf8', env: { ...process.env, npm_config_update_notifier: 'false' } });

t.test('the tarball holds only what runs, and installs into a fresh prefix as a working pam', async (t) => {
  const dir = scratchDir(t, 'pam-pack-');
  // --ignore-scripts: pack the build this test run made, without rebuilding under other running specs.
  const packed = npm(['pack', '--ignore-scripts', '--json', '--pack-destination', dir]);
  t.equal(packed.status, 0, packed.stderr);
  const [info] = JSON.parse(packed.stdout) as Array<{ filename: string; files: Array<{ path: string }> }>;
  const files = info!.files.map((file) => file.path);
  const allowed = /^(bin\/pam|dist\/[^/]+\.js(\.map)?|README\.md|LICENSE|CHANGELOG\.md|package\.json|docs\/systemd\/[^/]+\.service)$/;
  t.same(
    files.filter((path) => !allowed.test(path)),
    [],
    'nothing but built JS, bin, docs/systemd and the top-level docs',
  );
  t.ok(files.includes('dist/cli.js') && files.includes('bin/pam'), 'the entry points are in');

  const prefix = join(dir, 'prefix');
  const installed = npm(
    ['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', join(dir, info!.filename)],
    dir,
  );
  t.equal(installed.status, 0, installed.stderr);
  const pamPath = join(prefix, 'bin', 'pam');
  t.ok(existsSync(pamPath), 'pam is on the prefix PATH');
  const modules = readdirSync(join(prefix, 'lib', 'node_modules', 'pam-tunnel', 'node_modules'));
  // (xstate itself may appear: it is a peer dependency of @statelyai/inspect, the lazily loaded inspector client.)
  t.same(
    modules.filter((name) => ['tap', 'typescript', 'esbuild', 'clipanion', 'typanion', 'pg', '@electric-sql'].includes(name)),
    [],
    'no dev dependency installed',
  );

  const run = (args: string[], env: NodeJS.ProcessEnv = {}) =>
    spawnSync(pamPath, args, { encoding: 'utf8', cwd: dir, env: { ...process.env, CI: 'true', ...env } });
  const versionRun = run(['--version']);
  t.equal(versionRun.stdout.trim(), version, 'pam --version prints the package version');
  const env = tunnelEnv(dir, 'pack-token-1f2e3d4c');
  const listed = run(['tunnel', 'list', '--json'], env);
  t.equal(listed.status, 0, listed.stderr);
  t.same(JSON.parse(listed.stdout), []);

  const echo = await echoServer(t);
  const gateway = spawnProc(t, pamPath, ['gateway', '--listen', '127.0.0.1:0', '--json', '--target', `echo=127.0.0.1:${echo.port}`], {
    env,
    cwd: dir,
  });
  const url = String((await gateway.event('listening')).url);
  const script = `"${process.execPath}" -e 'const s=require("net").connect(+process.env.PAM_TUNNEL_PORT,"127.0.0.1",()=>s.write("installed"));s.on("data",d=>{process.stdout.write(d);s.end();process.exitCode=4})'`;
  const tunnel = spawnProc(t, pamPath, ['tunnel', 'start', 'echo', '--gateway', url, '--run', script], { env, cwd: dir });
  t.equal(await tunnel.exited, 4, tunnel.stderr);
  t.equal(tunnel.stdout, 'installed', 'bytes went through a tunnel run by the installed binary');
  gateway.child.kill('SIGTERM');
  await gateway.exited;

  // A platform without a node-datachannel binary (its optional platform package absent): the default
  // falls back to werift and says so; asking for native by name is a usage error naming the fix.
  rmSync(join(prefix, 'lib', 'node_modules', 'pam-tunnel', 'node_modules', '@node-datachannel'), { recursive: true, force: true });
  const defaults = { ...env, PAM_TRANSPORT: undefined }; // the default, whatever this test run was given
  const fallbackGateway = spawnProc(
    t,
    pamPath,
    ['gateway', '--listen', '127.0.0.1:0', '--json', '--target', `echo=127.0.0.1:${echo.port}`],
    { env: defaults, cwd: dir },
  );
  const fallbackUrl = String((await fallbackGateway.event('listening')).url);
  t.match(fallbackGateway.stderr, /warning: the native WebRTC transport \(node-datachannel\) cannot load here .*using werift instead/);
  const fallback = spawnProc(t, pamPath, ['tunnel', 'start', 'echo', '--gateway', fallbackUrl, '--run', script], {
    env: defaults,
    cwd: dir,
  });
  t.equal(await fallback.exited, 4, fallback.stderr);
  t.equal(fallback.stdout, 'installed', 'bytes went through a werift tunnel');
  t.match(fallback.stderr, /^pam: the native WebRTC transport \(node-datachannel\) cannot load here .*using werift instead/m);
  const named = spawnProc(t, pamPath, ['tunnel', 'start', 'echo', '--gateway', fallbackUrl, '--transport', 'native', '--run', 'true'], {
    env: defaults,
    cwd: dir,
  });
  t.equal(await named.exited, 2, named.stderr);
  t.match(named.stderr, /cannot load here .*use --transport werift/);
  t.notMatch(named.stderr, /\n\s+at /, 'no stack trace');
});

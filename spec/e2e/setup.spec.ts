// What a user sets up once: shell completion and the config file (flags > env > file > defaults).

import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { backgroundTunnel, echoServer, pam, pamBin, scratchDir, startGatewayProc, tunnelEnv } from '../support/processes.js';

const token = 'setup-token-7a1f';

t.test('bash completion: commands, subcommands, flags from the definitions, live tunnel ids', async (t) => {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const gateway = await startGatewayProc(t, dir, token, { echo: echo.port });
  const env = tunnelEnv(dir, token, gateway.url);
  const owner = await backgroundTunnel(t, env, 'echo');

  const bin = join(dir, 'bin');
  mkdirSync(bin);
  symlinkSync(pamBin, join(bin, 'pam'));
  const script = join(dir, 'pam.bash');
  const generated = pam(t, ['completion', 'bash'], { env });
  t.equal(await generated.exited, 0);
  writeFileSync(script, generated.stdout);
  const complete = (...words: string[]) => {
    const result = spawnSync(
      'bash',
      [
        '-c',
        `source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _pam_complete; printf '%s\\n' "\${COMPREPLY[@]}"`,
        'bash',
        script,
        ...words,
      ],
      { encoding: 'utf8', env: { ...process.env, ...env, PATH: `${bin}:${process.env.PATH}` } },
    );
    return result.stdout.split('\n').filter(Boolean).sort();
  };
  t.same(complete('pam', ''), ['broker', 'completion', 'gateway', 'keygen', 'shell', 'tunnel']);
  t.same(complete('pam', 'tunnel', 'start', '--key'), ['--key-file']);
  t.same(complete('pam', 'gateway', '--auth'), ['--authorized-keys']);
  t.same(complete('pam', 'tunnel', 'start', '--so'), ['--socks']);
  t.same(complete('pam', 'gateway', '--so'), ['--socks-allow']);
  t.same(complete('pam', 'tunnel', ''), ['diagnose', 'history', 'list', 'machine', 'replay', 'start', 'stop']);
  t.same(complete('pam', 'tunnel', 'diagnose', '--ice'), ['--ice-server']);
  t.same(complete('pam', 'tunnel', 'start', '--back'), ['--background']);
  t.same(complete('pam', 'tunnel', 'stop', '--a'), ['--all']);
  t.same(complete('pam', 'tunnel', 'stop', ''), [owner.id, 'echo'].sort(), 'running tunnel ids and targets');

  for (const shell of ['zsh', 'fish']) {
    const text = pam(t, ['completion', shell], { env });
    t.equal(await text.exited, 0);
    t.match(text.stdout, /tunnel/, `${shell} script mentions the commands`);
  }
  const none = pam(t, ['completion'], { env });
  t.equal(await none.exited, 2);
  t.match(none.stderr, /name a shell/);
  process.kill(owner.pid, 'SIGTERM');
});

t.test('config file: used when flags and env are absent, refused when unsafe or unknown, outranked by env and flags', async (t) => {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const gateway = await startGatewayProc(t, dir, token, { echo: echo.port });
  const home = join(dir, 'config');
  mkdirSync(join(home, 'pam'), { recursive: true });
  const configFile = join(home, 'pam', 'config.json');
  const tokenFile = join(dir, 'token');
  const write = (value: unknown, mode = 0o600) => {
    writeFileSync(configFile, JSON.stringify(value));
    chmodSync(configFile, mode);
  };
  const base = { ...tunnelEnv(dir, token), PAM_GATEWAY_TOKEN: '', XDG_CONFIG_HOME: home };

  write({ gateway: gateway.url, tokenFile, timeout: 20 });
  const fromFile = pam(t, ['tunnel', 'start', 'echo', '-R', 'exit 3'], { env: base });
  t.equal(await fromFile.exited, 3, `gateway and token from the config file: ${fromFile.stderr}`);

  const envWins = pam(t, ['tunnel', 'start', 'echo', '-R', 'exit 3'], { env: { ...base, PAM_GATEWAY_TOKEN: 'env-token-is-wrong' } });
  t.equal(await envWins.exited, 77, 'PAM_GATEWAY_TOKEN outranks the file');
  const flagWins = pam(t, ['tunnel', 'start', 'echo', '--gateway', 'http://127.0.0.1:1', '-R', 'exit 3'], { env: base });
  t.equal(await flagWins.exited, 69, '--gateway outranks the file');

  write({ gateway: gateway.url }, 0o644);
  const open = pam(t, ['tunnel', 'start', 'echo', '-R', 'true'], { env: base });
  t.equal(await open.exited, 2);
  t.match(open.stderr, new RegExp(`config file ${configFile} is readable or writable by others \\(mode 644\\): run chmod 600`));

  write({ gateway: gateway.url, gatway: 'typo' });
  const unknown = pam(t, ['tunnel', 'start', 'echo', '-R', 'true'], { env: base });
  t.equal(await unknown.exited, 2);
  t.match(unknown.stderr, /unknown key 'gatway'/);

  write({ timeout: -1 });
  const bad = pam(t, ['tunnel', 'start', 'echo', '-R', 'true'], { env: base });
  t.equal(await bad.exited, 2);
  t.match(bad.stderr, /'timeout' must be a number of seconds/);
});

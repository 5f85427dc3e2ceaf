// The real shell runner beyond the shared contract: environment, "not found", and no orphans.

import t from 'tap';
import { commandEnvironment, createShellRunner, descendantsOf, execIfSimple } from '../../adapters/shell-runner.js';
import { isAlive, until } from '../support/processes.js';

t.test('the command sees the environment it is given', async (t) => {
  const exit = await createShellRunner({ stdio: 'ignore' }).run('test "$PAM_TUNNEL_PORT" = 15432 && exit 5', { PAM_TUNNEL_PORT: '15432' })
    .exited;
  t.equal(exit.exitCode, 5);
});

t.test('a command that does not exist exits 127, as the shell reports it', async (t) => {
  const exit = await createShellRunner({ stdio: 'ignore' }).run('no-such-command-pam-spec', {}).exited;
  t.equal(exit.exitCode, 127);
});

t.test('a forwarded signal reaches what the shell started: nothing is orphaned', async (t) => {
  const running = createShellRunner({ stdio: 'ignore' }).run('sleep 30; echo never', {});
  let sleeper = 0;
  await until(
    () => {
      sleeper = descendantsOf(running.pid!)[0] ?? 0;
      return sleeper > 0;
    },
    5_000,
    'the shell to start sleep',
  );
  t.teardown(() => {
    if (isAlive(sleeper)) process.kill(sleeper, 'SIGKILL');
  });
  running.kill('SIGTERM');
  const exit = await running.exited;
  t.equal(exit.exitCode, 143);
  await until(() => !isAlive(sleeper), 5_000, 'sleep to exit');
  t.notOk(isAlive(sleeper), 'the grandchild got the signal too');
});

t.test('the command inherits no PAM_* variable except those pam sets for it', async (t) => {
  const env = commandEnvironment(
    { PATH: '/bin', PAM_GATEWAY_TOKEN: 'secret', pam_gateway_url: 'x', PAM_TUNNEL_REGISTRY: '/r' },
    { PAM_TUNNEL_PORT: '1' },
  );
  t.same(env, { PATH: '/bin', PAM_TUNNEL_PORT: '1' });
});

t.test('one simple command runs with exec; anything a shell must interpret runs as given', async (t) => {
  const cases: Array<[string, boolean]> = [
    ['psql -h "$PAM_TUNNEL_HOST" -c "select 1; select 2"', true],
    ["curl -fsS 'http://x/?a=1&b=2' 2>&1", true],
    ['sleep 41 & echo bye', false],
    ['trap "" TERM; sleep 47', false],
    ['a | b', false],
    ['exit 7', false],
    ['FOO=1 env', false],
    ['if true; then :; fi', false],
    ['echo `date`', false],
  ];
  for (const [command, exec] of cases) t.equal(execIfSimple(command), exec ? `exec ${command}` : command, command);
});

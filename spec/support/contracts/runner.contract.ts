// CommandRunner contract: what the tunnel machine relies on from any runner, real or fake.

import type { TapTest } from '../tap.js';
import type { CommandRunner } from '../../../machines/ports.js';

export function runnerContract(t: TapTest, name: string, make: () => CommandRunner): void {
  t.test(`${name}: a command's exit code is reported`, async (t) => {
    const exit = await make().run('exit 7', {}).exited;
    t.equal(exit.exitCode, 7);
    t.equal(exit.signal, undefined);
  });

  t.test(`${name}: a command ended by SIGTERM reports 128+15 and the signal`, async (t) => {
    const running = make().run('sleep 30', {});
    t.ok(running.pid === undefined || running.pid > 0, 'pid is a positive number when known');
    running.kill('SIGTERM');
    const exit = await running.exited;
    t.equal(exit.exitCode, 143);
    t.equal(exit.signal, 'SIGTERM');
  });

  t.test(`${name}: killing a command that already exited is harmless`, async (t) => {
    const running = make().run('exit 0', {});
    const exit = await running.exited;
    running.kill('SIGTERM');
    t.equal(exit.exitCode, 0);
  });
}

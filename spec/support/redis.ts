// A real redis-server for a test: 127.0.0.1 on a free port, nothing persisted (`--save ''
// --appendonly no`), in the test's own directory; stopped (SIGKILL) at teardown, and stoppable and
// restartable on the same port within a test, to show brokers degrade and heal.

import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, portIsOpen, spawnProc, until, type Proc, type Teardownable } from './processes.js';

export const redisServer = '/usr/bin/redis-server';

/** Whether redis-server is installed (`.ci/run` installs it; elsewhere a test skips with one line). */
export function haveRedis(): boolean {
  try {
    execFileSync(redisServer, ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export interface RedisProc {
  readonly port: number;
  readonly url: string;
  proc(): Proc;
  /** SIGKILL: the data is gone with it (nothing is persisted), as after a crash. */
  stop(): Promise<void>;
  /** Start again on the same port, empty. */
  start(): Promise<void>;
}

export async function startRedis(t: Teardownable, dir: string, extra: readonly string[] = []): Promise<RedisProc> {
  const port = await freePort();
  const data = join(dir, 'redis');
  mkdirSync(data, { recursive: true });
  let current: Proc | undefined;
  const start = async () => {
    current = spawnProc(
      t,
      redisServer,
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', data, ...extra],
      { cwd: data },
    );
    await until(() => portIsOpen(port), 10_000, `redis-server on 127.0.0.1:${port}`);
  };
  await start();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    proc: () => current!,
    async stop() {
      current?.child.kill('SIGKILL');
      await current?.exited;
    },
    start,
  };
}

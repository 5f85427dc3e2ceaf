// --pid-file: `PID\n`, written atomically once the tunnel is up and removed on every kind of stop. A pid
// in an existing file counts only if the registry vouches for it (a live pam owner), never bare.

import { readFile, stat, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { TunnelError } from '../machines/errors.js';
import type { PidFiles, Registry } from '../machines/ports.js';
import { writeAtomically } from './atomic-write.js';

export function createPidFiles(options: { registry: Registry }): PidFiles {
  return {
    async check(path) {
      const text = await readFile(path, 'utf8').catch(() => undefined);
      const pid = text !== undefined && /^\d{1,10}\n?$/.test(text) ? Number(text.trim()) : undefined;
      if (pid === undefined || pid === process.pid) return;
      const owners = await options.registry.entries();
      if (owners.some((entry) => entry.pid === pid)) {
        throw new TunnelError(
          'portBusy',
          `pid file ${path} names running tunnel process ${pid}; stop it with \`pam tunnel stop ${pid}\` or choose another --pid-file`,
        );
      }
    },
    async write(path, pid) {
      const dir = dirname(path);
      const dirStats = await stat(dir).catch(() => undefined);
      if (!dirStats?.isDirectory()) throw new TunnelError('usage', `cannot write pid file ${path}: directory ${dir} does not exist`);
      try {
        await writeAtomically(dir, path, `${pid}\n`, 0o644);
      } catch (error) {
        throw new TunnelError(
          'registryWrite',
          `cannot write pid file ${path} (${(error as NodeJS.ErrnoException).code ?? String(error)}): check the directory's permissions and free space`,
        );
      }
    },
    async remove(path, pid) {
      const text = await readFile(path, 'utf8').catch(() => undefined);
      if (text === `${pid}\n`) await unlink(path).catch(() => undefined);
    },
  };
}

// ProcessControl port over process.kill (POSIX signals; TerminateProcess on Windows).

import type { ProcessControl } from '../machines/ports.js';
import { descendantsOf, processGroupOf } from './shell-runner.js';

export function createProcessControl(): ProcessControl {
  const send = (pid: number, signal: 'SIGTERM' | 'SIGKILL') => {
    try {
      process.kill(pid, signal);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
    }
  };
  return {
    signal: send,
    killTree(pid) {
      // Read before anything dies: orphans are re-parented and could no longer be found by their parent.
      const descendants = descendantsOf(pid);
      const groups = descendants.filter((child) => processGroupOf(child) === child);
      send(pid, 'SIGKILL');
      for (const child of descendants) send(child, 'SIGKILL');
      // A --run command leads its own group; members it left behind may have been re-parented already.
      for (const group of groups) send(-group, 'SIGKILL');
    },
  };
}

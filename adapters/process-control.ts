// ProcessControl port over process.kill (POSIX signals; TerminateProcess on Windows).

import type { ProcessControl } from '../machines/ports.js';

export function createProcessControl(): ProcessControl {
  return {
    signal(pid, signal) {
      try {
        process.kill(pid, signal);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
      }
    },
  };
}

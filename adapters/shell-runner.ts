// CommandRunner port over child_process: runs --run commands through the platform shell
// (/bin/sh -c on POSIX, cmd.exe on Windows, as Node's `shell: true`), stdio inherited.
// The command stays in pam's process group, so a terminal's Ctrl+C and TTY reads work as usual; a
// signal pam forwards goes to the command's whole process tree, because `sh -c 'a; b'` does not exec
// and signalling only the shell would orphan whatever it started.

import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { constants } from 'node:os';
import type { CommandExit, CommandRunner, RunningCommand } from '../machines/ports.js';
import { signalExitBase } from '../machines/errors.js';

/** Exit code of a shell that could not find the command (POSIX convention). */
const notFoundExitCode = 127;

export function createShellRunner(options: { stdio?: 'inherit' | 'ignore' } = {}): CommandRunner {
  return {
    run(command, env): RunningCommand {
      const child = spawn(command, {
        shell: true,
        stdio: options.stdio ?? 'inherit',
        env: commandEnvironment(process.env, env),
      });
      const exited = new Promise<CommandExit>((resolve) => {
        child.once('error', () => resolve({ exitCode: notFoundExitCode }));
        child.once('exit', (code, signal) => {
          if (signal) {
            const number = constants.signals[signal] ?? 0;
            resolve({ exitCode: signalExitBase + number, signal });
          } else {
            resolve({ exitCode: code ?? 1 });
          }
        });
      });
      return {
        pid: child.pid,
        exited,
        kill(signal) {
          if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
          // The tree is read before anything dies (orphans are re-parented and would be lost), and the
          // shell is signalled first: were `sleep` killed first, `sh -c 'sleep 30; echo'` could run on
          // and exit 0 before its own signal arrived.
          for (const pid of [child.pid, ...descendantsOf(child.pid)]) {
            try {
              process.kill(pid, signal);
            } catch {
              // gone in the meantime
            }
          }
        },
      };
    },
  };
}

/**
 * What the wrapped command inherits: pam's own environment without any PAM_* variable (the gateway
 * token, TURN credentials and pam's settings are pam's business, not the command's), plus the
 * variables pam sets for it (PAM_TUNNEL_HOST, PAM_TUNNEL_PORT, PAM_TUNNEL_ID).
 */
export function commandEnvironment(inherited: NodeJS.ProcessEnv, set: Readonly<Record<string, string>>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(inherited)) if (!/^PAM_/i.test(name)) env[name] = value;
  return { ...env, ...set };
}

/** Every descendant of `root`, from /proc (Linux); elsewhere none are known and only the shell is signalled. */
export function descendantsOf(root: number): number[] {
  let names: string[];
  try {
    names = readdirSync('/proc');
  } catch {
    return [];
  }
  const children = new Map<number, number[]>();
  for (const name of names) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const siblings = children.get(ppid) ?? [];
      siblings.push(Number(name));
      children.set(ppid, siblings);
    } catch {
      // exited while we looked
    }
  }
  const found: number[] = [];
  const queue = [root];
  while (queue.length > 0) {
    for (const child of children.get(queue.shift()!) ?? []) {
      found.push(child);
      queue.push(child);
    }
  }
  return found;
}

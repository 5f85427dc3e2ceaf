// CommandRunner port over child_process: runs --run commands through the platform shell
// (/bin/sh -c on POSIX, cmd.exe on Windows, as Node's `shell: true`), stdio inherited.
// Without a terminal on stdin the command runs in a process group of its own (a new session), so a
// signal, teardown and `stop --force` reach everything it started, including background jobs the
// shell left behind when it exited (`sleep 41 & echo bye`). With a terminal it stays in pam's
// process group: the terminal's foreground group is the only one that may read it (psql's prompt)
// and that Ctrl+C reaches; then signals go to the command's process tree as found in /proc.
// A single simple command runs with `exec` (no shell left in between), so a shell cannot re-raise a
// SIGINT the command itself handled: `psql` after Ctrl+C and `\q` exits 0, not 130.

import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { constants } from 'node:os';
import type { CommandExit, CommandRunner, RunningCommand } from '../machines/ports.js';
import { signalExitBase } from '../machines/errors.js';

/** Exit code of a shell that could not find the command (POSIX convention). */
const notFoundExitCode = 127;

export function createShellRunner(options: { stdio?: 'inherit' | 'ignore'; ownGroup?: boolean } = {}): CommandRunner {
  const ownGroup = process.platform !== 'win32' && (options.ownGroup ?? !process.stdin.isTTY);
  return {
    run(command, env): RunningCommand {
      const child = spawn(process.platform === 'win32' ? command : execIfSimple(command), {
        shell: true,
        stdio: options.stdio ?? 'inherit',
        env: commandEnvironment(process.env, env),
        detached: ownGroup,
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
      const signalAll = (signal: NodeJS.Signals) => {
        if (child.pid === undefined) return;
        if (ownGroup) {
          try {
            process.kill(-child.pid, signal);
          } catch {
            // the whole group is gone
          }
          return;
        }
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
      };
      return {
        pid: child.pid,
        exited,
        kill(signal) {
          if (child.exitCode !== null || child.signalCode !== null) return;
          signalAll(signal);
        },
        end() {
          // Also after the shell exited: what it left in its group must not outlive the tunnel.
          signalAll('SIGKILL');
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

const reservedWords = new Set([
  '!',
  '{',
  '}',
  'case',
  'do',
  'done',
  'elif',
  'else',
  'esac',
  'fi',
  'for',
  'if',
  'in',
  'then',
  'until',
  'while',
]);
// Builtins that only mean something inside the shell (`exec exit 3` would look for a program `exit`).
const shellOnly = new Set([
  '.',
  ':',
  'alias',
  'break',
  'cd',
  'continue',
  'eval',
  'exec',
  'exit',
  'export',
  'getopts',
  'read',
  'readonly',
  'return',
  'set',
  'shift',
  'source',
  'times',
  'trap',
  'type',
  'ulimit',
  'umask',
  'unalias',
  'unset',
  'wait',
]);

/**
 * `exec cmd` when `command` is one simple command: no unquoted `;`, `&` (other than in `2>&1`), `|`,
 * parentheses, newline or backquote, and its first word is a program (not a keyword, a shell-only
 * builtin or a variable assignment). Anything else runs as given.
 */
export function execIfSimple(command: string): string {
  const trimmed = command.trim();
  const first = /^[^\s]+/.exec(trimmed)?.[0] ?? '';
  if (first === '' || reservedWords.has(first) || shellOnly.has(first) || /^[A-Za-z_][A-Za-z0-9_]*=/.test(first)) return command;
  let quote: "'" | '"' | undefined;
  for (let index = 0; index < trimmed.length; index += 1) {
    const char = trimmed[index]!;
    if (quote) {
      if (char === '\\' && quote === '"') index += 1;
      else if (char === quote) quote = undefined;
      else if (char === '`') return command;
      continue;
    }
    if (char === '\\') index += 1;
    else if (char === "'" || char === '"') quote = char;
    else if (char === '&' && (trimmed[index - 1] === '>' || trimmed[index - 1] === '<')) continue;
    else if (';&|()`\n'.includes(char)) return command;
  }
  return `exec ${trimmed}`;
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

/** The process group of `pid` (field 5 of /proc/<pid>/stat), or undefined where that cannot be read. */
export function processGroupOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
  } catch {
    return undefined;
  }
}

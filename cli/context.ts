// What every pam command gets besides its flags: streams, environment and terminal facts.

import type { BaseContext } from 'clipanion';
import type { Outcome } from '../machines/errors.js';
import type { Registry, Signals } from '../machines/ports.js';

/** What `pam shell` lends the commands it runs: one registry entry and signal policy for all its tunnels. */
export interface ShellSession {
  readonly registry: Registry;
  /** Relayed by the shell: SIGTERM/SIGHUP to every tunnel once, Ctrl+C only to the tunnels of the line running. */
  readonly signals: Signals;
  /** Keep a tunnel that is ready; `stop` asks it to stop, `finished` settles when it has. */
  adopt(tunnel: { id: string; target: string; stop(origin: string): void; finished: Promise<Outcome> }): void;
}

export interface PamContext extends BaseContext {
  readonly env: NodeJS.ProcessEnv;
  /** A person at a terminal: stdin and stdout are TTYs and CI is not set. */
  readonly interactive: boolean;
  /** Inside `pam shell`: -fg/-bg are skipped because tunnels persist for the session. */
  readonly inShell?: boolean;
  readonly session?: ShellSession;
}

export function isInteractive(env: NodeJS.ProcessEnv, stdin: { isTTY?: boolean }, stdout: { isTTY?: boolean }): boolean {
  return Boolean(stdin.isTTY && stdout.isTTY) && !env.CI;
}

/** Colour only for a person, and never when NO_COLOR is set (https://no-color.org). */
export function useColour(context: PamContext): boolean {
  return context.interactive && !context.env.NO_COLOR;
}

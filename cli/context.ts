// What every pam command gets besides its flags: streams, environment and terminal facts.

import type { BaseContext } from 'clipanion';

export interface PamContext extends BaseContext {
  readonly env: NodeJS.ProcessEnv;
  /** A person at a terminal: stdin and stdout are TTYs and CI is not set. */
  readonly interactive: boolean;
  /** Inside `pam shell`: -fg/-bg are skipped because tunnels persist for the session. */
  readonly inShell?: boolean;
}

export function isInteractive(env: NodeJS.ProcessEnv, stdin: { isTTY?: boolean }, stdout: { isTTY?: boolean }): boolean {
  return Boolean(stdin.isTTY && stdout.isTTY) && !env.CI;
}

/** Colour only for a person, and never when NO_COLOR is set (https://no-color.org). */
export function useColour(context: PamContext): boolean {
  return context.interactive && !context.env.NO_COLOR;
}

// What every machine shares: the default of a side effect that must be provided, and the rule that
// the first decisive outcome is the one a machine ends with.

import type { Outcome } from './errors.js';

/** The default implementation of an actor or action: throws until the CLI (or a test) provides the real one. */
export function notProvided<TArgs extends unknown[] = []>(name: string): (...args: TArgs) => never {
  return () => {
    throw new Error(`${name} not provided`);
  };
}

/** Keep the first decisive outcome: later events (a second signal, teardown noise) don't rewrite why it ended. */
export function firstOutcome(context: { readonly exit?: Outcome }, outcome: Outcome): { exit?: Outcome } {
  return context.exit ? {} : { exit: outcome };
}

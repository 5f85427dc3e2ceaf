// The type of a tap test object (the root `t` or a subtest), for helpers and contract suites.

import type { Test } from 'tap';
import type { BuiltPlugins } from '@tapjs/test';

export type TapTest = Test<BuiltPlugins> & BuiltPlugins;

/** Record a skipped check with the reason printed (a missing tool on this machine), not a silent pass. */
export function skipBecause(t: TapTest, reason: string): void {
  t.pass(reason, { skip: reason });
}

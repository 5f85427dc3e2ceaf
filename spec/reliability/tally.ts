// Reliability specs report what they tried as TAP comments (`# reliability {...}`); the test runner
// adds them up into the suite's closing summary (faults survived, bad inputs, bytes lost).

import type { TapTest } from '../support/tap.js';

export interface Tally {
  faults?: { tried: number; survived: number };
  badInputs?: { tried: number; rejectedCleanly: number };
  load?: { held: boolean; what: string };
  bytes?: { sent: number; lost: number };
}

export function report(t: TapTest, tally: Tally): void {
  t.comment(`reliability ${JSON.stringify(tally)}`);
}

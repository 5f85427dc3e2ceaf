// Signals contract: a watcher receives stop signals until it unsubscribes, and only then. Driven through
// a harness, because real signals must hit a process of their own (tap ends its run on SIGTERM).

import type { TapTest } from '../tap.js';
import type { StopSignal } from '../../../machines/errors.js';

export interface SignalsHarness {
  /** Subscribe a new watcher; resolves with its index. */
  watch(): Promise<number>;
  unwatch(index: number): Promise<void>;
  /** Deliver a signal; resolves once the watchers have been called. */
  raise(signal: StopSignal): Promise<void>;
  seen(index: number): Promise<StopSignal[]>;
  close(): Promise<void>;
}

export function signalsContract(t: TapTest, name: string, make: () => Promise<SignalsHarness>): void {
  t.test(`${name}: SIGTERM and SIGHUP reach the watcher, none after unsubscribing`, async (t) => {
    const harness = await make();
    t.teardown(() => harness.close());
    const first = await harness.watch();
    await harness.raise('SIGTERM');
    await harness.raise('SIGHUP');
    await harness.unwatch(first);
    const second = await harness.watch();
    await harness.raise('SIGINT');
    t.same(await harness.seen(first), ['SIGTERM', 'SIGHUP']);
    t.same(await harness.seen(second), ['SIGINT'], 'a second watcher sees only what came after it subscribed');
  });
}

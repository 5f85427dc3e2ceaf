// Signals port over process signals: SIGINT, SIGTERM and SIGHUP end a tunnel in an orderly way.

import type { StopSignal } from '../machines/errors.js';
import type { Signals } from '../machines/ports.js';

const stopSignals: readonly StopSignal[] = process.platform === 'win32' ? ['SIGINT', 'SIGTERM'] : ['SIGINT', 'SIGTERM', 'SIGHUP'];

export function createProcessSignals(target: NodeJS.Process = process): Signals {
  return {
    watch(onSignal) {
      // Installing a listener replaces Node's default "exit now" for these signals: from here on the
      // tunnel machine decides (first signal → orderly stop, second while stopping → forced exit).
      const handlers = stopSignals.map((signal) => {
        const handler = () => onSignal(signal);
        target.on(signal, handler);
        return [signal, handler] as const;
      });
      return () => {
        for (const [signal, handler] of handlers) target.off(signal, handler);
      };
    },
  };
}

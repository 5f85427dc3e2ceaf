// Turns registry, process and control-channel ports into the stop machine's named actors.

import { fromPromise } from 'xstate';
import type { ControlClient, PidFiles, ProcessControl, Registry } from './ports.js';
import { requestWaitMs, stopMachine, type StopInput } from './stop.machine.js';

export interface StopPorts {
  readonly registry: Registry;
  readonly processes: ProcessControl;
  readonly control: ControlClient;
  readonly pidFiles: PidFiles;
  /** Pause between registry polls. */
  readonly sleep: (ms: number) => Promise<void>;
}

type Target = Pick<StopInput, 'entry' | 'tunnel' | 'onlyThisTunnel' | 'waitMs'>;

export function provideStop(ports: StopPorts) {
  const stillThere = async ({ entry, tunnel, onlyThisTunnel }: Target): Promise<boolean> => {
    if (!(await ports.registry.isLive(entry))) return false;
    if (!onlyThisTunnel) return true;
    const current = (await ports.registry.entries()).find((candidate) => candidate.pid === entry.pid);
    return current?.tunnels.some((candidate) => candidate.id === tunnel.id) ?? false;
  };

  return stopMachine.provide({
    actors: {
      verifyOwner: fromPromise<boolean, Target>(({ input }) => ports.registry.isLive(input.entry)),
      requestStop: fromPromise<void, Target>(async ({ input, signal }) => {
        // An owner with a control channel (pam shell) holds other tunnels and a person's session:
        // it is asked, never signalled to stop (only --force signals it, after --wait).
        if (input.entry.control) {
          await ports.control.stopTunnel(input.entry.control, input.tunnel.id, { validForMs: requestWaitMs(input.waitMs), signal });
          return;
        }
        // Identity was verified a moment ago; check once more, as close to the signal as we can.
        if (await ports.registry.isLive(input.entry)) ports.processes.signal(input.entry.pid, 'SIGTERM');
      }),
      awaitGone: fromPromise<void, Target>(async ({ input, signal }) => {
        while (!signal.aborted && (await stillThere(input))) await ports.sleep(50);
      }),
      forceStop: fromPromise<void, Target>(async ({ input }) => {
        if (await ports.registry.isLive(input.entry)) ports.processes.killTree(input.entry.pid);
        for (let tries = 0; tries < 100 && (await ports.registry.isLive(input.entry)); tries += 1) await ports.sleep(20);
        // The owner cannot clean up after SIGKILL: its pid file and registry entry are ours to remove.
        if (input.tunnel.pidFile) await ports.pidFiles.remove(input.tunnel.pidFile, input.entry.pid);
        await ports.registry.entries(); // drops the now-stale entry file
      }),
    },
  });
}

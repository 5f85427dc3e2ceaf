// Turns the background-owner and signal ports into the launcher machine's named actors.

import { fromCallback, fromPromise } from 'xstate';
import { launcherMachine, type LauncherEvent, type LauncherInput } from './launcher.machine.js';
import type { BackgroundOwners, Owner, Signals } from './ports.js';

export function provideLauncher(ports: { owners: BackgroundOwners; signals: Signals }) {
  return launcherMachine.provide({
    actors: {
      spawnOwner: fromPromise<Owner, LauncherInput>(({ input }) => ports.owners.spawn(input.id)),
      watchOwner: fromCallback<LauncherEvent, { id: string; owner: Owner }>(({ input, sendBack }) =>
        ports.owners.watch(input.id, input.owner, {
          ready: (record) => sendBack({ type: 'owner.ready', record }),
          exited: (outcome) => sendBack({ type: 'owner.exited', outcome }),
        }),
      ),
      abandonOwner: fromPromise<void, { id: string; owner: Owner }>(({ input }) => ports.owners.abandon(input.owner)),
      watchSignals: fromCallback<LauncherEvent>(({ sendBack }) =>
        ports.signals.watch((signal) => sendBack({ type: 'tunnel.stop', signal })),
      ),
    },
  });
}

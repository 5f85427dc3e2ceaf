// Turns the registry port into the wait machine's named actor.

import { fromPromise } from 'xstate';
import type { Registry, RegistryEntry } from './ports.js';
import { waitMachine } from './wait.machine.js';

export function provideWait(ports: { readonly registry: Pick<Registry, 'entries'> }) {
  return waitMachine.provide({
    actors: { readRegistry: fromPromise<RegistryEntry[]>(() => ports.registry.entries()) },
  });
}

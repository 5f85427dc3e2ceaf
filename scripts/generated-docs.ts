// The docs generated from code, path → content. Shared by `npm run docs` and the staleness test.

import type { AnyStateMachine } from 'xstate';
import { machinePage } from '../machines/diagram.js';
import { tunnelMachine } from '../machines/tunnel.machine.js';
import { commandsPage } from '../cli/commands-doc.js';

export function generatedDocs(): Record<string, string> {
  return {
    'docs/machines/tunnel.md': machinePage(tunnelMachine as unknown as AnyStateMachine, 'The tunnel machine'),
    'docs/commands.md': commandsPage(),
  };
}

// Events a tunnel actor receives, with typed payloads. Events are dotted and lowercase.

import type { StopSignal } from './errors.js';
import type { CommandExit } from './ports.js';

export type TunnelEvent =
  /** Begin: validate flags, then connect. */
  | { type: 'tunnel.start' }
  /** A stop request: a process signal, or `pam tunnel stop` through the control channel. */
  | { type: 'tunnel.stop'; signal: StopSignal; origin?: string }
  /** The link to the gateway died for good (peer gone, keepalive expired). */
  | { type: 'link.lost'; reason: string }
  /** The wrapped --run command ended. */
  | { type: 'command.exited'; exit: CommandExit };

/** Sent by the machine to the running command actor. */
export type CommandControlEvent = { type: 'command.signal'; signal: StopSignal };

// Events a tunnel actor receives, with typed payloads. Events are dotted and lowercase.

import type { StopSignal } from './errors.js';
import type { CommandExit } from './ports.js';

export type TunnelEvent =
  /** Begin: validate flags, then connect. */
  | { type: 'tunnel.start' }
  /** A stop request: a process signal, or `pam tunnel stop` through the control channel. */
  | { type: 'tunnel.stop'; signal: StopSignal; origin?: string }
  /** The link to the gateway died (peer gone, keepalive expired); the machine may reconnect. */
  | { type: 'link.lost'; reason: string }
  /** The gateway ended the tunnel because its access was revoked or expired: never reconnected. */
  | { type: 'link.revoked'; reason: string }
  /** Raised by the machine itself once the link is lost for good (reconnects exhausted or disabled). */
  | { type: 'link.gone' }
  /** The wrapped --run command ended. */
  | { type: 'command.exited'; exit: CommandExit };

/** Sent by the machine to the running command actor. */
export type CommandControlEvent = { type: 'command.signal'; signal: StopSignal };

// Options and flag values shared by several commands: declared once, so `tunnel start` and `gateway`
// cannot drift apart, and numeric flags go through the one grammar of machines/start-flags.ts.

import { Option } from 'clipanion';
import { TunnelError } from '../machines/errors.js';
import { parseNumberFlag } from '../machines/start-flags.js';
import { SingleString } from './single-option.js';

export const transportOption = () =>
  SingleString('--transport', {
    description: 'WebRTC implementation: native (default, node-datachannel) or werift (pure TypeScript); or $PAM_TRANSPORT',
  });

export const iceServerOption = () =>
  Option.Array('--ice-server', [], {
    description: 'stun:/turn: URL for ICE (repeatable; TURN credentials from PAM_ICE_USERNAME/PAM_ICE_CREDENTIAL)',
  });

/** A numeric flag's value, or a usage error that says what the value must be. */
export function numberFlag(flag: string, text: string, range: { min: number; max: number; whole: boolean; unit?: string }): number {
  const value = parseNumberFlag(text, range);
  if (value !== undefined) return value;
  const what = range.whole ? 'a whole number' : 'a number';
  throw new TunnelError(
    'usage',
    `${flag} '${text}' must be ${what}${range.unit ? ` of ${range.unit}` : ''} from ${range.min} to ${range.max}`,
  );
}

export const auditLogOption = () =>
  SingleString('--audit-log', { description: "the gateway's audit log, JSON lines (default $XDG_STATE_HOME/pam/audit.jsonl)" });

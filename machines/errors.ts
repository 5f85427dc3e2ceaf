// The one table of failure kinds: what each means for an operator and which exit code it ends with.
// Adapters throw TunnelError(kind, ...); the machine turns any error into a Failure with failureOf().

export const failureKinds = {
  generic: { exitCode: 1, brief: 'not done', summary: 'the operation did not succeed (nothing matched, or still running after --wait)' },
  usage: { exitCode: 2, brief: 'usage', summary: 'usage error: a missing, malformed or conflicting flag' },
  unknownTarget: { exitCode: 68, brief: 'unknown target', summary: 'the gateway has no target of that name' },
  gatewayUnreachable: {
    exitCode: 69,
    brief: 'gateway unreachable or tunnel lost',
    summary: 'the gateway could not be reached, or the tunnel was lost',
  },
  internal: { exitCode: 70, brief: 'internal', summary: 'internal error (a bug: please report it with the output of --debug)' },
  portBusy: {
    exitCode: 75,
    brief: 'local port busy',
    summary: "the local port or pid file is already held (checked before connecting), or the gateway's --listen address",
  },
  registryWrite: {
    exitCode: 73,
    brief: 'registry or pid file not writable',
    summary: 'a registry entry or pid file could not be written (permissions, disk full): nothing half-written is left',
  },
  authRefused: { exitCode: 77, brief: 'token refused', summary: 'the gateway refused the token (or the broker refused PAM_BROKER_TOKEN)' },
  accessRefused: {
    exitCode: 77,
    brief: 'access refused',
    summary:
      'the gateway refused this key or request (unknown or expired key, target not granted, source address, tunnel limit, missing --reason)',
  },
  accessRevoked: {
    exitCode: 77,
    brief: 'access revoked',
    summary: "the gateway ended a live tunnel because the key's access was revoked or expired; it is not reconnected",
  },
  gatewayKeyMismatch: {
    exitCode: 77,
    brief: 'gateway key mismatch',
    summary:
      "the gateway's key is not the pinned (PAM_GATEWAY_KEY, gatewayKey) or recorded (known_gateways) one: checked before any tunnel is set up",
  },
  unsafeRegistry: {
    exitCode: 78,
    brief: 'unsafe registry directory',
    summary: 'the registry directory is unsafe to use (a symlink in its path, a relative path, foreign owner or writable by others)',
  },
  connectTimeout: { exitCode: 124, brief: 'connect timeout', summary: 'the connection was not ready within --timeout' },
} as const;

export type FailureKind = keyof typeof failureKinds;

/** `0 ok, 2 usage, 68 unknown target, …` for help texts, in code order, from the table above. */
export function exitCodeSummary(kinds: readonly FailureKind[]): string {
  const listed = [...kinds].sort((a, b) => failureKinds[a].exitCode - failureKinds[b].exitCode);
  return ['0 ok', ...listed.map((kind) => `${failureKinds[kind].exitCode} ${failureKinds[kind].brief}`)].join(', ');
}

/** Exit code for a process ended by signal N, as shells report it. */
export const signalExitBase = 128;

export interface Failure {
  readonly kind: FailureKind;
  readonly exitCode: number;
  readonly reason: string;
}

/** An error whose kind an operator can act on: printed as one line, never with a stack. */
export class TunnelError extends Error {
  readonly kind: FailureKind;

  constructor(kind: FailureKind, message: string) {
    super(message);
    this.name = 'TunnelError';
    this.kind = kind;
  }
}

/** How a tunnel or command ended: a failure kind, or one of the non-failure endings. */
export type OutcomeKind = FailureKind | 'ok' | 'signal' | 'command';

export interface Outcome {
  readonly kind: OutcomeKind;
  readonly exitCode: number;
  readonly reason: string;
}

export function failure(kind: FailureKind, reason: string): Failure {
  return { kind, exitCode: failureKinds[kind].exitCode, reason };
}

/** Any thrown value → a Failure. Unknown errors are internal: they are bugs, not user errors. */
export function failureOf(error: unknown): Failure {
  if (error instanceof TunnelError) return failure(error.kind, error.message);
  if (isTunnelErrorLike(error)) return failure(error.kind, error.message);
  const message = error instanceof Error ? error.message : String(error);
  return failure('internal', message);
}

// Errors can cross module copies (bundled chunk vs. tsc build), so match on shape too.
function isTunnelErrorLike(error: unknown): error is { kind: FailureKind; message: string } {
  return (
    typeof error === 'object' &&
    error !== null &&
    (error as { name?: unknown }).name === 'TunnelError' &&
    typeof (error as { kind?: unknown }).kind === 'string' &&
    Object.hasOwn(failureKinds, (error as { kind: string }).kind)
  );
}

const signalNumbers = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15, SIGKILL: 9 } as const;
export type StopSignal = 'SIGHUP' | 'SIGINT' | 'SIGTERM';

export function signalExitCode(signal: keyof typeof signalNumbers): number {
  return signalExitBase + signalNumbers[signal];
}

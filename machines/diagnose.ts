// `pam tunnel diagnose`: the checks, in order, as injected ports (DiagnosePorts), and the one rule of
// the run: each step is ok, failed or skipped with the fix; the first blocking failure ends the run
// with its kind's exit code. STUN, NAT and TURN failures do not block (a tunnel may still find a
// path); the test tunnel decides.

import { failureKinds, type FailureKind } from './errors.js';

export type DiagnoseStepName = 'gateway' | 'site' | 'stun' | 'nat' | 'turn' | 'tunnel';

export interface DiagnoseStep {
  readonly step: DiagnoseStepName;
  readonly status: 'ok' | 'failed' | 'skipped';
  /** One line: what was seen. */
  readonly detail: string;
  /** For a failure or a skip: what to change. */
  readonly fix?: string;
  /** The failure kind of a blocking failure (its exit code ends the run). */
  readonly kind?: FailureKind;
  /** Machine-readable facts (public address, nat type, relayed address, path …) for --json. */
  readonly facts?: Readonly<Record<string, string | number | boolean>>;
}

export interface StunServerRef {
  readonly host: string;
  readonly port: number;
  readonly transport: 'udp' | 'tcp';
}

export interface TurnServerRef extends StunServerRef {
  readonly username: string;
  readonly credential: string;
}

/** What step 1 and 2 learn about the URL. */
export interface SignallingProbe {
  /** Broker site (…/sites/NAME) or a gateway itself. */
  readonly broker: boolean;
  readonly fingerprint: string;
  /** ICE servers from the flags/env plus what the broker handed out, taken apart. */
  readonly stun: readonly StunServerRef[];
  readonly turn: readonly TurnServerRef[];
}

/** A port's verdict that names the fix (adapters throw it as a TunnelError; a fake returns it). */
export interface CheckFailure {
  readonly kind: FailureKind;
  readonly message: string;
}

export interface DiagnosePorts {
  /** Step 1: is the broker or gateway URL reachable, TLS accepted? Resolves with a line of what answered. */
  reach(url: string): Promise<string>;
  /** Step 2: the site's presence (or the gateway's key) and its key checked against the pin; the ICE servers to try. */
  site(url: string): Promise<SignallingProbe>;
  /** One Binding request from `socket` (the same local port for every call with the same socket id). */
  stunBinding(server: StunServerRef, socket: number): Promise<{ address: string; port: number }>;
  turnAllocate(server: TurnServerRef): Promise<{ address: string; port: number }>;
  /** A real tunnel to `target`: connect, move a few bytes, tear down. */
  testTunnel(url: string, target: string): Promise<{ path: string; pair: string; bytes: number }>;
}

export interface DiagnoseInput {
  readonly url: string;
  readonly target?: string;
}

export interface DiagnoseResult {
  readonly steps: readonly DiagnoseStep[];
  readonly exitCode: number;
}

const describe = (server: StunServerRef) => `${server.host}:${server.port}${server.transport === 'tcp' ? '/tcp' : ''}`;

function failureOfCheck(error: unknown): CheckFailure {
  const candidate = error as { kind?: unknown; message?: unknown };
  const kind = typeof candidate?.kind === 'string' && candidate.kind in failureKinds ? (candidate.kind as FailureKind) : undefined;
  const message = typeof candidate?.message === 'string' ? candidate.message : String(error);
  return { kind: kind ?? 'gatewayUnreachable', message };
}

/** Run the steps in order, reporting each as it ends; stop at the first blocking failure. */
export async function runDiagnosis(
  input: DiagnoseInput,
  ports: DiagnosePorts,
  report: (step: DiagnoseStep) => void,
): Promise<DiagnoseResult> {
  const steps: DiagnoseStep[] = [];
  const done = (step: DiagnoseStep) => {
    steps.push(step);
    report(step);
    return step;
  };
  const blocked = (step: DiagnoseStep): DiagnoseResult => {
    done(step);
    return { steps, exitCode: failureKinds[step.kind ?? 'gatewayUnreachable'].exitCode };
  };

  try {
    done({ step: 'gateway', status: 'ok', detail: await ports.reach(input.url) });
  } catch (error) {
    const failure = failureOfCheck(error);
    return blocked({
      step: 'gateway',
      status: 'failed',
      detail: failure.message,
      fix: `check --gateway / PAM_GATEWAY_URL (${input.url}), that it runs and that this host may reach it`,
      kind: failure.kind,
    });
  }

  let probe: SignallingProbe;
  try {
    probe = await ports.site(input.url);
    done({
      step: 'site',
      status: 'ok',
      detail: `${probe.broker ? 'the site is registered at the broker' : 'the gateway answers'}, gateway key ${probe.fingerprint}`,
      facts: { broker: probe.broker, key: probe.fingerprint },
    });
  } catch (error) {
    const failure = failureOfCheck(error);
    return blocked({
      step: 'site',
      status: 'failed',
      detail: failure.message,
      fix:
        failure.kind === 'gatewayKeyMismatch'
          ? 'confirm the new key with the gateway operator, then change PAM_GATEWAY_KEY or the line in known_gateways'
          : 'start the gateway with --broker URL --site NAME (see its log), or fix the site name in the URL',
      kind: failure.kind,
    });
  }

  const stun = probe.stun.filter((server) => server.transport === 'udp');
  const first = stun[0];
  let mapped: { address: string; port: number } | undefined;
  if (!first) {
    done({
      step: 'stun',
      status: 'skipped',
      detail: 'no STUN server configured',
      fix: 'give --ice-server stun:HOST:3478 here or to the broker, so ICE can find the public address',
    });
  } else {
    try {
      mapped = await ports.stunBinding(first, 0);
      done({
        step: 'stun',
        status: 'ok',
        detail: `public address ${mapped.address}:${mapped.port} (seen by ${describe(first)})`,
        facts: { address: mapped.address, port: mapped.port, server: describe(first) },
      });
    } catch (error) {
      done({
        step: 'stun',
        status: 'failed',
        detail: `no Binding answer from ${describe(first)}: ${failureOfCheck(error).message}`,
        fix: 'UDP to the STUN server is blocked or it does not run: allow outbound UDP, or rely on TURN over TCP (--transport werift)',
      });
    }
  }

  const second = stun[1];
  if (!mapped || !second) {
    done({
      step: 'nat',
      status: 'skipped',
      detail: mapped ? 'one STUN server: the NAT type needs two' : 'no public address to compare',
      fix: 'configure two STUN servers (two --ice-server stun:… at different addresses) to tell cone from symmetric',
    });
  } else {
    try {
      const again = await ports.stunBinding(second, 0);
      const cone = again.address === mapped.address && again.port === mapped.port;
      done({
        step: 'nat',
        status: 'ok',
        detail: cone
          ? `cone: the same public port ${mapped.port} towards ${describe(first)} and ${describe(second)} (direct paths can work)`
          : `symmetric: ${mapped.address}:${mapped.port} towards ${describe(first)} but ${again.address}:${again.port} towards ${describe(second)} (expect the TURN relay unless the other side is cone)`,
        facts: { nat: cone ? 'cone' : 'symmetric', first: `${mapped.address}:${mapped.port}`, second: `${again.address}:${again.port}` },
      });
    } catch (error) {
      done({
        step: 'nat',
        status: 'failed',
        detail: `no Binding answer from ${describe(second)}: ${failureOfCheck(error).message}`,
        fix: 'check the second STUN server',
      });
    }
  }

  const turn = probe.turn[0];
  if (!turn) {
    done({
      step: 'turn',
      status: 'skipped',
      detail: 'no TURN server configured',
      fix: 'behind a symmetric NAT or blocked UDP only a TURN relay works: give the broker --ice-server turn:HOST:3478 and --turn-secret-file',
    });
  } else {
    try {
      const relayed = await ports.turnAllocate(turn);
      done({
        step: 'turn',
        status: 'ok',
        detail: `allocated relay ${relayed.address}:${relayed.port} at ${describe(turn)} (401, then success; released)`,
        facts: { relayed: `${relayed.address}:${relayed.port}`, server: describe(turn) },
      });
    } catch (error) {
      done({
        step: 'turn',
        status: 'failed',
        detail: `no allocation at ${describe(turn)}: ${failureOfCheck(error).message}`,
        fix: "check that coturn runs and shares the broker's --turn-secret-file (or PAM_ICE_USERNAME/PAM_ICE_CREDENTIAL), and that this host reaches it",
      });
    }
  }

  if (input.target === undefined) {
    done({
      step: 'tunnel',
      status: 'skipped',
      detail: 'no TARGET given',
      fix: 'pass a target name to try a real tunnel: pam tunnel diagnose TARGET',
    });
    return { steps, exitCode: 0 };
  }
  try {
    const tunnel = await ports.testTunnel(input.url, input.target);
    done({
      step: 'tunnel',
      status: 'ok',
      detail: `a tunnel to ${input.target} came up (path ${tunnel.path}: ${tunnel.pair}) and carried ${tunnel.bytes} bytes`,
      facts: { path: tunnel.path, pair: tunnel.pair, bytes: tunnel.bytes },
    });
  } catch (error) {
    const failure = failureOfCheck(error);
    return blocked({
      step: 'tunnel',
      status: 'failed',
      detail: failure.message,
      fix:
        failure.kind === 'authRefused'
          ? 'set the gateway token the gateway expects (PAM_GATEWAY_TOKEN or --token-file)'
          : failure.kind === 'unknownTarget'
            ? 'use a target the gateway serves (named in the message)'
            : 'see the steps above: no STUN/TURN path, or the target is down at the gateway',
      kind: failure.kind,
    });
  }
  return { steps, exitCode: 0 };
}

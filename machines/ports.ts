// The ports of a tunnel: every side effect the tunnel machine needs, as small interfaces.
// Adapters in adapters/ implement them; the machine only holds the handles they return.

import type { Outcome, StopSignal } from './errors.js';

export type TunnelMode = 'foreground' | 'background' | 'run' | 'shell';

/** What the registry shows of a tunnel's lifecycle. */
export type RegistryState = 'connecting' | 'ready' | 'reconnecting' | 'stopping';

/** A listening local TCP socket. Connections are opaque to the machine: adapters hand them to a Link. */
export interface LocalListener<Connection = unknown> {
  readonly host: string;
  readonly port: number;
  /**
   * Start handing accepted connections to `onConnection`. Before the first call, and after
   * `accept(undefined)` (the link is being re-established), connections wait in a bounded queue;
   * beyond it they are refused.
   */
  accept(onConnection: ((connection: Connection) => void) | undefined): void;
  close(): Promise<void>;
}

export interface ListenerFactory<Connection = unknown> {
  /** Bind host:port (port 0 → a free port). Throws TunnelError('portBusy') when it is taken. */
  bind(host: string, port: number): Promise<LocalListener<Connection>>;
}

/** Signalling done: an offer/answer exchanged with the gateway, ICE not necessarily connected yet. */
export interface Negotiation {
  close(): Promise<void>;
}

/** Which way ICE connected: `direct` (host or server-reflexive candidates) or `relay` (TURN), and the pair. */
export interface LinkPath {
  readonly kind: 'direct' | 'relay';
  /** The selected candidate pair, e.g. `srflx 203.0.113.2:40000/udp → host 198.51.100.2:5000/udp`. */
  readonly pair: string;
}

export type LinkEnding = 'lost' | 'revoked';

/** An open tunnel to the gateway's target: carries local connections until closed or lost. */
export interface Link<Connection = unknown> {
  /** The selected ICE path, when the WebRTC library tells (node-datachannel does). */
  path?(): LinkPath | undefined;
  /** Take ownership of a local connection and carry its bytes to the target and back. */
  carry(connection: Connection): void;
  /**
   * Called once if the link dies without close(): `lost` (peer gone, keepalive expired) may be
   * reconnected; `revoked` (the gateway withdrew this tunnel's access) must not be.
   */
  onLost(handler: (reason: string, ending: LinkEnding) => void): void;
  close(): Promise<void>;
}

export interface NegotiateRequest {
  readonly gateway: string;
  readonly target: string;
  /** --reason and --ticket: sealed to the gateway with the offer (and signed, with a user key). */
  readonly reason?: string;
  readonly ticket?: string;
  readonly signal: AbortSignal;
}

/** Client side of the WebRTC transport. Credentials live in the adapter, never in machine context. */
export interface Transport<Connection = unknown> {
  /** Signalling: offer → gateway → answer. Throws TunnelError gatewayUnreachable / authRefused / unknownTarget. */
  negotiate(request: NegotiateRequest): Promise<Negotiation>;
  /** ICE + DTLS + data channel open. */
  establish(negotiation: Negotiation, signal: AbortSignal): Promise<Link<Connection>>;
}

export interface TunnelRecord {
  readonly id: string;
  readonly target: string;
  readonly gateway: string;
  readonly host: string;
  readonly port: number;
  readonly mode: TunnelMode;
  readonly state: RegistryState;
  readonly reconnects: number;
  /** The ICE path of the current link, when known: `direct` or `relay`. */
  readonly path?: LinkPath['kind'];
  /** ISO-8601 */
  readonly startedAt: string;
  readonly pidFile?: string;
  readonly logFile?: string;
}

/** One owning process's registry file (`<pid>.json`). */
export interface RegistryEntry {
  readonly schema: 1;
  readonly pid: number;
  /** Opaque identity of the process incarnation (Linux: /proc/<pid>/stat field 22). */
  readonly startTime: string;
  readonly hostname: string;
  /** Path of the owner's control socket, if it offers per-tunnel stop. */
  readonly control?: string;
  readonly tunnels: readonly TunnelRecord[];
}

/** Cross-process registry of live tunnels. Each process writes only its own entry. */
export interface Registry {
  /** Directory the registry lives in (log files and pid-less state go next to entries). */
  readonly location: string;
  /** Create or replace this process's record of a tunnel. */
  put(record: TunnelRecord): Promise<void>;
  /** Drop a tunnel from this process's entry (the entry file goes when it holds none). */
  remove(id: string): Promise<void>;
  /** Live entries of every process of this user. Stale and forged ones are skipped (and removed when ours). */
  entries(): Promise<RegistryEntry[]>;
  /** Re-check, right now, that the entry's owner is still the process that wrote it. */
  isLive(entry: RegistryEntry): Promise<boolean>;
}

export interface PidFiles {
  /** Refuse (TunnelError portBusy) when the file names a live pam tunnel; a stale one is replaced later. */
  check(path: string): Promise<void>;
  /** Atomically write `PID\n`. */
  write(path: string, pid: number): Promise<void>;
  /** Remove if it still names `pid`. */
  remove(path: string, pid: number): Promise<void>;
}

/** Process signals that end a tunnel. */
export interface Signals {
  /** Call `onSignal` for each SIGINT/SIGTERM/SIGHUP until the returned function is called. */
  watch(onSignal: (signal: StopSignal) => void): () => void;
}

export interface CommandExit {
  /** The exit code as a shell reports it: the code, 128+N when killed by signal N, 127 when not found. */
  readonly exitCode: number;
  readonly signal?: string;
}

export interface RunningCommand {
  readonly pid: number | undefined;
  readonly exited: Promise<CommandExit>;
  /** Forward a stop signal to the command (its process group, or its process tree). */
  kill(signal: StopSignal): void;
  /** The tunnel stops waiting for it: SIGKILL whatever is left of the command, even after it exited. */
  end(): void;
}

export interface CommandRunner {
  /** Run `command` through the platform shell with stdio inherited and `env` added. */
  run(command: string, env: Readonly<Record<string, string>>): RunningCommand;
}

/** The detached owner process of a --background tunnel. */
export interface Owner {
  readonly pid: number;
  readonly logFile: string;
}

export interface BackgroundOwners {
  /** Start the owner (new session, stdio to a log file) and resolve once it runs. */
  spawn(id: string): Promise<Owner>;
  /** Calls back once: ready with the registry record, or exited with the owner's own outcome. */
  watch(id: string, owner: Owner, events: { ready(record: TunnelRecord): void; exited(outcome: Outcome): void }): () => void;
  /** Make sure the owner is gone: SIGTERM, then SIGKILL. */
  abandon(owner: Owner): Promise<void>;
}

/** Signals to other processes, by pid (identity is re-checked by the caller first). */
export interface ProcessControl {
  /** Send a signal; a process that is already gone is not an error. */
  signal(pid: number, signal: 'SIGTERM' | 'SIGKILL'): void;
  /** SIGKILL `pid`, every process it started, and the process groups those lead (a --run command's). */
  killTree(pid: number): void;
}

/** Client of an owner's control channel (a 0600 unix socket named in its registry entry). */
export interface ControlClient {
  /**
   * Ask the owner to stop one of its tunnels. The request is valid for `validForMs` (an owner that
   * reads it later refuses it); with `signal`, aborting is the caller's way to give up waiting.
   */
  stopTunnel(socketPath: string, id: string, options?: { readonly validForMs?: number; readonly signal?: AbortSignal }): Promise<void>;
}

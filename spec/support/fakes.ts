// Fake port adapters for unit tests of the machine. Each behaves like its real adapter (the contract
// suites in spec/support/contracts run them side by side); gates let a test decide when an operation
// completes, so a model-based test can step the machine one event at a time.

import { signalExitBase, TunnelError, type StopSignal } from '../../machines/errors.js';
import type {
  CommandExit,
  CommandRunner,
  Link,
  LinkEnding,
  ListenerFactory,
  LocalListener,
  Negotiation,
  PidFiles,
  Registry,
  RunningCommand,
  Signals,
  Transport,
} from '../../machines/ports.js';

/** Named hold points: an operation waits at `wait(name)` until the test opens or fails it. */
export class Gates {
  private readonly pending = new Map<string, { resolve: () => void; reject: (error: unknown) => void }>();
  private readonly waiting = new Map<string, Promise<void>>();

  constructor(private readonly held: ReadonlySet<string>) {}

  wait(name: string): Promise<void> {
    if (!this.held.has(name)) return Promise.resolve();
    const promise = new Promise<void>((resolve, reject) => this.pending.set(name, { resolve, reject }));
    this.waiting.set(name, promise);
    return promise;
  }

  isWaiting(name: string): boolean {
    return this.pending.has(name);
  }

  open(name: string): void {
    this.take(name).resolve();
  }

  fail(name: string, error: unknown): void {
    this.take(name).reject(error);
  }

  private take(name: string) {
    const gate = this.pending.get(name);
    if (!gate) throw new Error(`nothing waits at gate '${name}'`);
    this.pending.delete(name);
    return gate;
  }
}

const noGates = new Gates(new Set());
const signalNumbers: Record<StopSignal, number> = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 };

export interface FakeConnection {
  readonly label: string;
  destroyed: boolean;
  destroy(): void;
}

export class FakeListener implements LocalListener<FakeConnection> {
  closed = false;
  private handler: ((connection: FakeConnection) => void) | undefined;
  private readonly queued: FakeConnection[] = [];

  constructor(
    readonly host: string,
    readonly port: number,
    private readonly release: () => void,
  ) {}

  accept(onConnection: ((connection: FakeConnection) => void) | undefined): void {
    this.handler = onConnection;
    if (onConnection) for (const connection of this.queued.splice(0)) onConnection(connection);
  }

  /** A client connects to the local port. */
  connect(label: string): FakeConnection {
    const connection: FakeConnection = { label, destroyed: false, destroy: () => void (connection.destroyed = true) };
    if (this.closed) connection.destroy();
    else if (this.handler) this.handler(connection);
    else this.queued.push(connection);
    return connection;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.release();
    for (const connection of this.queued.splice(0)) connection.destroy();
  }
}

export function createFakeListeners(
  gates: Gates = noGates,
): ListenerFactory<FakeConnection> & { readonly bound: Map<string, FakeListener> } {
  const bound = new Map<string, FakeListener>();
  let nextPort = 40000;
  return {
    bound,
    async bind(host, port) {
      await gates.wait('claim');
      const actualPort = port === 0 ? nextPort++ : port;
      const key = `${host}:${actualPort}`;
      if (bound.has(key)) throw new TunnelError('portBusy', `local port ${key} is already in use`);
      const listener = new FakeListener(host, actualPort, () => bound.delete(key));
      bound.set(key, listener);
      return listener;
    },
  };
}

export class FakeLink implements Link<FakeConnection> {
  readonly carried: FakeConnection[] = [];
  closed = false;
  private lostHandlers: Array<(reason: string, ending: LinkEnding) => void> = [];
  private lost = false;

  carry(connection: FakeConnection): void {
    if (this.closed || this.lost) connection.destroy();
    else this.carried.push(connection);
  }

  onLost(handler: (reason: string, ending: LinkEnding) => void): void {
    this.lostHandlers.push(handler);
  }

  /** The peer goes away (`revoked`: the gateway ended the tunnel's access). */
  lose(reason: string, ending: LinkEnding = 'lost'): void {
    if (this.lost || this.closed) return;
    this.lost = true;
    for (const connection of this.carried) connection.destroy();
    for (const handler of this.lostHandlers) handler(reason, ending);
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const connection of this.carried) connection.destroy();
  }
}

export function createFakeTransport(
  options: { gates?: Gates; targets?: readonly string[]; token?: string; acceptedToken?: string } = {},
): Transport<FakeConnection> & { readonly links: FakeLink[]; negotiations: number } {
  const gates = options.gates ?? noGates;
  const links: FakeLink[] = [];
  const transport = {
    links,
    negotiations: 0,
    async negotiate(request: { target: string; signal: AbortSignal }): Promise<Negotiation> {
      transport.negotiations += 1;
      await gates.wait('negotiate');
      if (request.signal.aborted) throw new TunnelError('connectTimeout', 'aborted');
      if (options.acceptedToken !== undefined && options.token !== options.acceptedToken) {
        throw new TunnelError('authRefused', 'the gateway refused the token');
      }
      if (options.targets && !options.targets.includes(request.target)) {
        throw new TunnelError('unknownTarget', `the gateway has no target '${request.target}'`);
      }
      return { close: async () => undefined };
    },
    async establish(_negotiation: Negotiation, signal: AbortSignal): Promise<Link<FakeConnection>> {
      await gates.wait('establish');
      if (signal.aborted) throw new TunnelError('connectTimeout', 'aborted');
      const link = new FakeLink();
      links.push(link);
      return link;
    },
  };
  return transport;
}

export class FakeSignals implements Signals {
  private readonly handlers = new Set<(signal: StopSignal) => void>();

  watch(onSignal: (signal: StopSignal) => void): () => void {
    this.handlers.add(onSignal);
    return () => this.handlers.delete(onSignal);
  }

  get watching(): number {
    return this.handlers.size;
  }

  emit(signal: StopSignal): void {
    for (const handler of [...this.handlers]) handler(signal);
  }
}

export class FakeCommand implements RunningCommand {
  readonly pid = 4242;
  readonly signals: StopSignal[] = [];
  ended = false;
  readonly exited: Promise<CommandExit>;
  private resolveExit!: (exit: CommandExit) => void;
  private done = false;

  constructor(
    readonly command: string,
    readonly env: Readonly<Record<string, string>>,
    private readonly trapsSignals: boolean,
  ) {
    this.exited = new Promise((resolve) => (this.resolveExit = resolve));
  }

  /** The command ends by itself. */
  exit(exitCode: number): void {
    this.finish({ exitCode });
  }

  kill(signal: StopSignal): void {
    this.signals.push(signal);
    // Like a real process without a trap: the signal ends it with 128+N.
    if (!this.trapsSignals) this.finish({ exitCode: signalExitBase + signalNumbers[signal], signal });
  }

  /** The tunnel let go of the command: a real runner SIGKILLs what is left of it. */
  end(): void {
    this.ended = true;
    this.finish({ exitCode: signalExitBase + 9, signal: 'SIGKILL' });
  }

  private finish(exit: CommandExit): void {
    if (this.done) return;
    this.done = true;
    this.resolveExit(exit);
  }
}

/** Runs scripted commands: `exit N` exits with N at once; anything else waits for exit() or a signal. */
export function createFakeRunner(options: { trapsSignals?: boolean } = {}): CommandRunner & { readonly commands: FakeCommand[] } {
  const commands: FakeCommand[] = [];
  return {
    commands,
    run(command, env) {
      const running = new FakeCommand(command, env, options.trapsSignals ?? false);
      commands.push(running);
      const scripted = /^exit (\d+)$/.exec(command.trim());
      if (scripted) running.exit(Number(scripted[1]));
      return running;
    },
  };
}

/** Pid files in memory; `live` says which pids count as live pam tunnel owners. */
export function createMemoryPidFiles(live: (pid: number) => boolean = () => false): PidFiles & { readonly files: Map<string, string> } {
  const files = new Map<string, string>();
  return {
    files,
    async check(path) {
      const pid = Number.parseInt(files.get(path) ?? '', 10);
      if (Number.isInteger(pid) && live(pid)) {
        throw new TunnelError('portBusy', `pid file ${path} names live tunnel process ${pid}`);
      }
    },
    async write(path, pid) {
      files.set(path, `${pid}\n`);
    },
    async remove(path, pid) {
      if (files.get(path) === `${pid}\n`) files.delete(path);
    },
  };
}

/** Hold a registry's ready write at gate 'publish' and its removal at gate 'teardown'. */
export function gateRegistry(registry: Registry, gates: Gates): Registry {
  return {
    location: registry.location,
    entries: () => registry.entries(),
    isLive: (entry) => registry.isLive(entry),
    async put(record) {
      if (record.state === 'ready') await gates.wait('publish');
      return registry.put(record);
    },
    async remove(id) {
      await gates.wait('teardown');
      return registry.remove(id);
    },
  };
}

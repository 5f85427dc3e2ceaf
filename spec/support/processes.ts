// Helpers for end-to-end tests: run the built CLI as a user would, wait for its lines, and make sure
// every process and server a test starts is gone when the test ends, pass or fail.

import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, Socket, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isProcessAlive } from '../../adapters/process-identity.js';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const pamBin = join(repoRoot, 'bin', 'pam');

export interface Teardownable {
  teardown(fn: () => unknown): void;
}

export interface Proc {
  readonly child: ChildProcess;
  readonly pid: number;
  stdout: string;
  stderr: string;
  /** Resolves with the exit code (128+N when killed by signal N). */
  readonly exited: Promise<number>;
  /** Wait for a stdout/stderr line matching `pattern` (bounded by `ms`). */
  line(pattern: RegExp, ms?: number): Promise<string>;
  /** Wait for the first JSON line with `event` (stdout, or stderr where --run mode prints). */
  event(name: string, ms?: number): Promise<Record<string, unknown>>;
}

const signalNumbers: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 };

export function spawnProc(
  t: Teardownable,
  command: string,
  args: readonly string[],
  options: { env?: NodeJS.ProcessEnv; cwd?: string; stdin?: 'pipe' | 'ignore' } = {},
): Proc {
  const child = spawn(command, args, {
    cwd: options.cwd ?? repoRoot,
    env: { ...process.env, CI: 'true', ...options.env },
    stdio: [options.stdin ?? 'ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => killHard(child));
  const proc: Proc = {
    child,
    pid: child.pid!,
    stdout: '',
    stderr: '',
    exited: new Promise((resolveExit) => {
      child.once('exit', (code, signal) => resolveExit(code ?? 128 + (signalNumbers[signal ?? ''] ?? 0)));
    }),
    line: (pattern, ms = 20_000) => waitFor(() => matchLine(proc.stdout + proc.stderr, pattern), ms, `a line matching ${pattern}`, proc),
    event: (name, ms = 20_000) =>
      waitFor(
        () => {
          for (const text of `${proc.stdout}\n${proc.stderr}`.split('\n')) {
            if (!text.startsWith('{')) continue;
            try {
              const value = JSON.parse(text) as Record<string, unknown>;
              if (value.event === name) return value;
            } catch {
              // an incomplete line: wait for more
            }
          }
          return undefined;
        },
        ms,
        `JSON event '${name}'`,
        proc,
      ),
  };
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (proc.stdout += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (proc.stderr += chunk));
  return proc;
}

/** Run the built `pam` CLI. */
export function pam(t: Teardownable, args: readonly string[], options: { env?: NodeJS.ProcessEnv; stdin?: 'pipe' | 'ignore' } = {}): Proc {
  return spawnProc(t, process.execPath, [pamBin, ...args], options);
}

function matchLine(text: string, pattern: RegExp): string | undefined {
  return text.split('\n').find((line) => pattern.test(line));
}

async function waitFor<T>(probe: () => T | undefined, ms: number, what: string, proc?: Proc): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    const output = proc ? `\nstdout: ${proc.stdout}\nstderr: ${proc.stderr}` : '';
    if (proc && (proc.child.exitCode !== null || proc.child.signalCode !== null)) {
      // Output may still be in the pipe: one last look before giving up.
      await sleep(50);
      const late = probe();
      if (late !== undefined) return late;
      throw new Error(`process exited (${proc.child.exitCode ?? proc.child.signalCode}) before ${what}${output}`);
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}${output}`);
    await sleep(25);
  }
}

export async function until(probe: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(25);
  }
}

export const sleep = (ms: number) => new Promise((resolveSleep) => setTimeout(resolveSleep, ms));

function killHard(child: ChildProcess): Promise<void> | void {
  if (child.exitCode !== null || child.signalCode !== null) return;
  return new Promise((resolveKill) => {
    child.once('exit', () => resolveKill());
    child.kill('SIGKILL');
  });
}

/** Is `pid` alive (the same check pam itself uses)? */
export const isAlive = isProcessAlive;

/** A private directory for one test (registry, pid files, tokens), removed at teardown. */
export function scratchDir(t: Teardownable, prefix = 'pam-spec-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * A TCP server on 127.0.0.1 (half-open allowed) handing each socket to `onSocket`, closed with every
 * socket at teardown; `connections()` counts the sockets accepted so far.
 */
export async function tcpServer(
  t: Teardownable,
  onSocket: (socket: Socket) => void,
): Promise<{ port: number; server: Server; connections: () => number }> {
  const sockets = new Set<Socket>();
  let connections = 0;
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    connections += 1;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    onSocket(socket);
  });
  t.teardown(
    () =>
      new Promise<void>((resolveClose) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolveClose());
      }),
  );
  await new Promise<void>((resolveListen) => server.listen(0, '127.0.0.1', resolveListen));
  return { port: (server.address() as AddressInfo).port, server, connections: () => connections };
}

/** An echo server on 127.0.0.1; `connections` counts the sockets accepted so far. */
export async function echoServer(t: Teardownable): Promise<{ port: number; server: Server; readonly connections: number }> {
  const served = await tcpServer(t, (socket) => socket.pipe(socket));
  return {
    port: served.port,
    server: served.server,
    get connections() {
      return served.connections();
    },
  };
}

/** A port that was free a moment ago (bound then released). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolveListen) => server.listen(0, '127.0.0.1', resolveListen));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolveClose) => server.close(() => resolveClose()));
  return port;
}

export async function portIsOpen(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolveProbe) => {
    const socket = new Socket();
    socket.once('connect', () => {
      socket.destroy();
      resolveProbe(true);
    });
    socket.once('error', () => resolveProbe(false));
    socket.connect(port, host);
  });
}

export const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');

/** Send `payload` through host:port, read everything back (echo), and return what came back. */
export async function roundTrip(port: number, payload: Buffer, host = '127.0.0.1'): Promise<Buffer> {
  return new Promise((resolveTrip, reject) => {
    const socket = new Socket();
    const chunks: Buffer[] = [];
    let received = 0;
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      received += chunk.length;
      if (received >= payload.length) socket.end();
    });
    socket.once('error', reject);
    socket.once('close', () => resolveTrip(Buffer.concat(chunks)));
    socket.connect(port, host, () => socket.write(payload));
  });
}

export function randomPayload(bytes: number): Buffer {
  return randomBytes(bytes);
}

/** Environment for a gateway/tunnel pair in a private registry. */
export function tunnelEnv(dir: string, token: string, gatewayUrl?: string): NodeJS.ProcessEnv {
  const tokenFile = join(dir, 'token');
  writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
  return {
    PAM_TUNNEL_REGISTRY: join(dir, 'registry'),
    PAM_GATEWAY_TOKEN: token,
    // The gateway's key and the client's known_gateways live in the test's own directory.
    XDG_STATE_HOME: join(dir, 'state'),
    XDG_CONFIG_HOME: join(dir, 'config'),
    // ICE host candidates on loopback only: tests never talk to any other address.
    PAM_ICE_HOSTS: '127.0.0.1',
    ...(gatewayUrl ? { PAM_GATEWAY_URL: gatewayUrl } : {}),
  };
}

/** Start `pam gateway` on a free port with the given targets; resolves with its URL once listening. */
export async function startGatewayProc(
  t: Teardownable,
  dir: string,
  token: string,
  targets: Record<string, number>,
  extra: readonly string[] = [],
): Promise<{ proc: Proc; url: string; port: number }> {
  const args = [
    'gateway',
    '--listen',
    '127.0.0.1:0',
    '--json',
    ...extra,
    ...Object.entries(targets).flatMap(([name, port]) => ['--target', `${name}=127.0.0.1:${port}`]),
  ];
  const proc = pam(t, args, { env: tunnelEnv(dir, token) });
  const listening = await proc.event('listening');
  return { proc, url: String(listening.url), port: Number(listening.port) };
}

/** A signalling endpoint that accepts connections and never answers; resolves with its URL. */
export async function silentGateway(t: Teardownable): Promise<{ url: string; connections: () => number }> {
  const held = new Set<Socket>();
  const server = createServer((socket) => {
    held.add(socket);
    socket.on('error', () => undefined);
  });
  t.teardown(
    () =>
      new Promise<void>((resolveClose) => {
        for (const socket of held) socket.destroy();
        server.close(() => resolveClose());
      }),
  );
  await new Promise<void>((resolveListen) => server.listen(0, '127.0.0.1', resolveListen));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, connections: () => held.size };
}

/** A real Postgres (PGlite) on 127.0.0.1, stopped at teardown; resolves with its port. */
export async function postgres(t: Teardownable): Promise<number> {
  const { PGlite } = await import('@electric-sql/pglite');
  const { PGLiteSocketServer } = await import('@electric-sql/pglite-socket');
  const db = await PGlite.create();
  const server = new PGLiteSocketServer({ db, port: 0, host: '127.0.0.1' });
  await server.start();
  t.teardown(async () => {
    await server.stop();
    await db.close();
  });
  return Number(/:(\d+)$/.exec(server.getServerConn())![1]);
}

/** `pam tunnel start <target> -bg --json`; resolves with the launcher's line; the owner is killed at teardown. */
export async function backgroundTunnel(
  t: Teardownable,
  env: NodeJS.ProcessEnv,
  target: string,
  extra: readonly string[] = [],
): Promise<{ id: string; pid: number; port: number; logFile: string }> {
  const launcher = pam(t, ['tunnel', 'start', target, '-bg', '--json', ...extra], { env });
  const code = await launcher.exited;
  if (code !== 0) throw new Error(`-bg exited ${code}: ${launcher.stderr}`);
  const ready = JSON.parse(launcher.stdout) as { id: string; pid: number; port: number; logFile: string };
  t.teardown(() => {
    if (isAlive(ready.pid)) process.kill(ready.pid, 'SIGKILL');
  });
  return ready;
}

/** Send `upload`, then FIN; read until the other side's FIN; resolves with what came back. */
export function halfCloseExchange(port: number, upload: Buffer, host = '127.0.0.1'): Promise<Buffer> {
  return new Promise((resolveExchange, reject) => {
    const socket = new Socket({ allowHalfOpen: true });
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.once('error', reject);
    socket.once('end', () => {
      socket.end();
      resolveExchange(Buffer.concat(chunks));
    });
    socket.connect(port, host, () => socket.end(upload));
  });
}

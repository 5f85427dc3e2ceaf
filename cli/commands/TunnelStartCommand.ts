// `pam tunnel start`: parse flags and hand them to the runtime (cli/tunnel-runtime.ts), which runs the
// tunnel actor (or, with -bg, the launcher) and returns its output's exit code.

import { resolve as resolvePath } from 'node:path';
import { Writable } from 'node:stream';
import { Command, Option } from 'clipanion';
import { exitCodeSummary, failureKinds, failureOf, type FailureKind, signalExitBase, TunnelError } from '../../machines/errors.js';
import { gatewayUrlProblem } from '../../machines/start-flags.js';
import { SingleString } from '../single-option.js';
import { gatewaySource, iceHosts, keepalive } from '../config.js';
import { inspectUrl } from '../inspector.js';
import { ownerIdVariable } from '../../adapters/background-owner.js';
import type { StartFlags } from '../../machines/start-flags.js';
import { gatewayUrl, readConfigFile } from '../config.js';
import { defaultInspectUrl } from '../inspector.js';
import { iceServerOption, transportOption } from '../options.js';
import { PamCommand } from '../pam-command.js';
import { launchInBackground, runTunnel, takeOwnerId } from '../tunnel-runtime.js';

/** Every failure kind but `generic` can end `tunnel start`. */
const startExitCodes = exitCodeSummary((Object.keys(failureKinds) as FailureKind[]).filter((kind) => kind !== 'generic'));

export class TunnelStartCommand extends PamCommand {
  static override paths = [['tunnel', 'start']];

  static override usage = Command.Usage({
    category: 'Tunnels',
    description: 'open a tunnel from a local port to a gateway target',
    details: `
      Binds a local TCP port (127.0.0.1, a free port unless --port is given) and carries every
      connection to it over WebRTC to the gateway, which connects to the named target.

      With --socks instead of a target, the port is a SOCKS5 proxy (RFC 1928: CONNECT, no
      authentication): each connection names its destination (IPv4, IPv6 or a host name, resolved by
      the gateway), and the gateway allows it only if one of its --socks-allow rules does. A refused
      destination gets its SOCKS reply code (2 not allowed, 4 host unreachable, 5 connection refused);
      a gateway without --socks-allow refuses the tunnel (68). With --run the command also gets
      ALL_PROXY=socks5h://HOST:PORT.

      Modes (choose one): \`--foreground\` (the default) keeps the tunnel in this process until
      SIGINT/SIGTERM/SIGHUP; \`--background\` detaches a child process that owns the tunnel and
      returns only once the port is usable (printing id, pid and port); \`--run\` brings the tunnel up, runs the command through the shell with
      PAM_TUNNEL_HOST/PAM_TUNNEL_PORT/PAM_TUNNEL_ID set (and no other PAM_* variable: the token never
      reaches it), tears down and exits with its code.

      The gateway comes from --gateway, PAM_GATEWAY_URL or the config file (a path is kept, for a
      gateway behind a path-prefix proxy; credentials in the URL are refused); the token from
      --token-file, PAM_GATEWAY_TOKEN or the config file's tokenFile (never from the command line).
      Config file: $XDG_CONFIG_HOME/pam/config.json (mode 0600), keys gateway, tokenFile, timeout, gatewayKey.
      Instead of (or with) the token, a user key from \`pam keygen\` (--key-file, PAM_KEY_FILE, or
      $XDG_CONFIG_HOME/pam/id_ed25519 when it exists) signs the request, for gateways with
      --authorized-keys; --reason and --ticket travel sealed (and signed) and are journalled. A refused
      key or grant exits 77 with the gateway's reason; so does a tunnel whose access the gateway
      revokes (it is not reconnected). See docs/access.md.

      Signalling is sealed to the gateway's key (HPKE). PAM_GATEWAY_KEY=SHA256:… (or gatewayKey) pins
      it; otherwise the first key a gateway URL shows is recorded in $XDG_CONFIG_HOME/pam/known_gateways
      and a different one later is refused (77) before any tunnel is set up. A gateway behind a broker
      is reached with --gateway http(s)://BROKER/sites/NAME; several URLs of one site, comma-separated
      (the site through several brokers), are tried in order: the next when one does not answer
      (refused, timed out, or a 502/503/504 from a broker), never after a refusal (4xx). The key is
      checked against every URL of the list and recorded for all of them: it is the site's. Exit codes: ${startExitCodes},
      ${signalExitBase}+N killed by signal N; with --run, the command's code.
    `,
    examples: [
      ['Keep a tunnel to `db` on port 15432 until Ctrl+C', '$0 tunnel start db --port 15432'],
      [
        'Run one command through a tunnel and exit with its code',
        '$0 tunnel start db --run \'psql -h "$PAM_TUNNEL_HOST" -p "$PAM_TUNNEL_PORT" -c "select 1"\'',
      ],
      ['A SOCKS5 proxy through the gateway for one curl', "$0 tunnel start --socks --run 'curl -fsS http://db-admin.internal:8080/health'"],
      ['Machine-readable ready line for a supervisor', '$0 tunnel start web --foreground --json --pid-file /run/pam-web.pid'],
      ['Watch the tunnel live in the Stately inspector (see docs/inspect.md)', '$0 tunnel start web --inspect=ws://127.0.0.1:8080'],
    ],
  });

  target = Option.String({ name: 'target', required: false });
  socks = Option.Boolean('--socks', false, {
    description: 'serve SOCKS5 on the local port instead of one target; the gateway decides each destination',
  });
  port = SingleString('--port', { description: 'local port to listen on (0 or omitted: any free port)' });
  host = SingleString('--host', { description: 'local address to bind (default 127.0.0.1)' });
  gateway = SingleString('--gateway', { description: 'gateway URL, or several of one site comma-separated (default: $PAM_GATEWAY_URL)' });
  tokenFile = SingleString('--token-file', { description: 'file holding the gateway token (default: $PAM_GATEWAY_TOKEN)' });
  keyFile = SingleString('--key-file', {
    description:
      'your private key from `pam keygen`, signs the request (default: $PAM_KEY_FILE, or $XDG_CONFIG_HOME/pam/id_ed25519 if it exists)',
  });
  reason = SingleString('--reason', {
    description: 'why you open this tunnel: sealed to the gateway (which may require it) and journalled',
  });
  ticket = SingleString('--ticket', { description: 'change or incident ticket id, with --reason (e.g. CHG-1234)' });
  foreground = Option.Boolean('-fg,--foreground', { description: 'keep the tunnel in this process until a signal (default)' });
  background = Option.Boolean('-bg,--background', {
    description: 'detach: a child process owns the tunnel; return once the port is usable',
  });
  run = SingleString('-R,--run', { description: 'run this shell command through the tunnel, then tear down and exit with its code' });
  timeout = SingleString('--timeout', { description: 'seconds to wait for the connection (default 30)' });
  transport = transportOption();
  iceServers = iceServerOption();
  reconnectAttempts = SingleString('--reconnect-attempts', {
    description: 'times to re-establish a lost link, with backoff 1 s, 2 s, 4 s … 30 s (default 5; 0: end with 69 at once)',
  });
  pidFile = SingleString('--pid-file', { description: 'write the owning process id here once connected; removed on stop' });
  json = Option.Boolean('--json', false, { description: 'print JSON lines instead of prose' });
  inspect = Option.String('--inspect', {
    tolerateBoolean: true,
    description: `stream the live tunnel actor to a Stately inspector: --inspect or --inspect=ws://… (default ${defaultInspectUrl}; or $PAM_INSPECT)`,
  });

  async execute(): Promise<number> {
    if (this.context.env[ownerIdVariable] === undefined) return this.start();
    // A background owner's stdout and stderr are its log: JSON lines only, errors included, so the
    // launcher (and a person with jq) can read why it stopped.
    const log = this.context.stdout;
    // A full disk makes writes to the log fail: the owner must still exit with its own code (73), not
    // crash on an unhandled stream error (exit 1) that tells the launcher nothing.
    log.on('error', () => undefined);
    this.context = { ...this.context, stderr: jsonLines(log) };
    try {
      return await this.start();
    } catch (error) {
      const failed = failureOf(error);
      const usage = error instanceof Error && error.name === 'UsageError';
      const outcome = usage ? { kind: 'usage', exitCode: failureKinds.usage.exitCode, reason: error.message } : failed;
      log.write(`${JSON.stringify({ event: 'stopped', exitCode: outcome.exitCode, kind: outcome.kind, reason: outcome.reason })}\n`);
      return outcome.exitCode;
    }
  }

  private async start(): Promise<number> {
    const file = readConfigFile(this.context.env);
    const gateway = gatewayUrl(this.gateway, this.context.env, file);
    const source = gatewaySource(this.gateway, this.context.env, file);
    // Credentials in the URL are refused before anything records the flags (journal, registry, launcher).
    const credentials =
      gateway !== undefined && /(^|,)[^/,]*\/\/[^/,]*@/.test(gateway.trim()) ? gatewayUrlProblem(gateway.trim(), source) : undefined;
    if (credentials) throw new TunnelError('usage', credentials);
    // Settings from the environment are checked before anything starts, naming the variable.
    iceHosts(this.context.env);
    keepalive(this.context.env);
    inspectUrl(this.inspect, this.context.env); // a bad --inspect/PAM_INSPECT is refused before anything starts
    const flags: StartFlags = {
      target: this.target ?? '',
      ...(this.socks ? { socks: true } : {}),
      ...defined({
        gateway,
        gatewaySource: source,
        host: this.host,
        port: this.port,
        foreground: this.foreground,
        background: this.background,
        run: this.run,
        timeout: this.timeout ?? (file.timeout !== undefined ? String(file.timeout) : undefined),
        reconnectAttempts: this.reconnectAttempts,
        // Relative to where the user ran pam, recorded absolute (the registry and `stop` run elsewhere).
        pidFile: this.pidFile === undefined || this.pidFile.trim() === '' ? this.pidFile : resolvePath(this.pidFile),
        inShell: this.context.inShell,
        reason: this.reason,
        ticket: this.ticket,
      }),
    };
    const ownerId = takeOwnerId(this.context.env);
    if (this.background && !this.context.inShell && ownerId === undefined)
      return launchInBackground(this.context, { flags, json: this.json });
    return runTunnel(this.context, {
      flags,
      ...(ownerId !== undefined ? { ownerId } : {}),
      json: this.json,
      tokenFile: this.tokenFile,
      keyFile: this.keyFile,
      file,
      iceServers: this.iceServers,
      transport: this.transport,
      inspect: this.inspect,
    });
  }
}

/** Drop undefined values, so optional fields stay absent (exactOptionalPropertyTypes-friendly). */
function defined<T extends Record<string, unknown>>(values: T): { [K in keyof T]?: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(values).filter(([, value]) => value !== undefined)) as {
    [K in keyof T]?: Exclude<T[K], undefined>;
  };
}

/** Each line written becomes `{"event":"log","message":…}` on `target` (JSON lines pass through). */
function jsonLines(target: NodeJS.WritableStream): Writable {
  return new Writable({
    write(chunk: Buffer | string, _encoding, done) {
      for (const line of String(chunk)
        .split('\n')
        .filter((text) => text.trim() !== '')) {
        target.write(line.startsWith('{') ? `${line}\n` : `${JSON.stringify({ event: 'log', message: line.replace(/^pam: /, '') })}\n`);
      }
      done();
    },
  });
}

// `pam gateway`: the peer pam-tunnel ships, so every tunnel is real end to end.

import { Command, Option } from 'clipanion';
import { TunnelError, type StopSignal } from '../../machines/errors.js';
import { createProcessSignals } from '../../adapters/posix-signals.js';
import { PamCommand } from '../pam-command.js';
import { SingleString } from '../single-option.js';
import { iceHosts, iceServers, keepalive, importNative, nativeIceHostsWarning, readToken, transportChoice } from '../config.js';
import { iceServerOption, numberFlag, transportOption } from '../options.js';
import { isTargetName, targetNameRule } from '../../machines/start-flags.js';
import { readFileSync } from 'node:fs';

export class GatewayCommand extends PamCommand {
  static override paths = [['gateway']];

  static override usage = Command.Usage({
    category: 'Gateway',
    description: 'run a gateway: answer tunnels and connect them to allowlisted targets',
    details: `
      Serves authenticated WebRTC signalling over HTTP and connects each tunnel connection to the
      named target. Only targets given with --target can be reached. The token comes from
      PAM_GATEWAY_TOKEN or --token-file, never from the command line; without one the gateway
      refuses to start; a token shorter than 16 characters, or a token file others can read, is
      refused (make one with \`openssl rand -hex 32\`). Each --target name once. Stops on SIGINT/SIGTERM.
      Exit codes: 0 stopped by a signal, 2 usage (bad flag, token, PEM file or PAM_* variable),
      75 the --listen address is already in use.
    `,
    examples: [
      ['Serve a web and a database target on loopback', 'PAM_GATEWAY_TOKEN=$(openssl rand -hex 32) $0 gateway --listen 127.0.0.1:8765 --target web=127.0.0.1:8080 --target db=127.0.0.1:5432'],
      ['Any free port, announced as a JSON line', '$0 gateway --listen 127.0.0.1:0 --token-file ~/.config/pam/token --target web=127.0.0.1:8080 --json'],
    ],
  });

  listen = SingleString('--listen', '127.0.0.1:8765', { description: 'address:port for signalling (default 127.0.0.1:8765)' });
  targets = Option.Array('--target', [], { description: 'name=host:port of an allowlisted target (repeatable)' });
  tokenFile = SingleString('--token-file', { description: 'file holding the token clients must present (default: $PAM_GATEWAY_TOKEN)' });
  json = Option.Boolean('--json', false, { description: 'print JSON lines instead of prose' });
  tlsCert = SingleString('--tls-cert', { description: 'PEM certificate: serve signalling over HTTPS (with --tls-key)' });
  tlsKey = SingleString('--tls-key', { description: 'PEM private key for --tls-cert' });
  transport = transportOption();
  iceServers = iceServerOption();
  maxPeersPerClient = SingleString('--max-tunnels-per-client', '64', { description: 'tunnels one client address may hold at once (default 64)' });

  async execute(): Promise<number> {
    const listen = parseHostPort(this.listen, '--listen', '127.0.0.1:8765 (port 0 picks a free one)');
    const targets = parseTargets(this.targets);
    if (Object.keys(targets).length === 0) throw new TunnelError('usage', 'no targets: add at least one --target name=host:port');
    const maxPeersPerClient = numberFlag('--max-tunnels-per-client', this.maxPeersPerClient, { min: 1, max: 10_000, whole: true });
    const token = readToken(this.tokenFile, this.context.env, 'gateway');

    if ((this.tlsCert === undefined) !== (this.tlsKey === undefined)) throw new TunnelError('usage', '--tls-cert and --tls-key go together: pass both, or neither');
    const tls = this.tlsCert !== undefined ? { cert: readPem(this.tlsCert, '--tls-cert', 'CERTIFICATE'), key: readPem(this.tlsKey!, '--tls-key', 'PRIVATE KEY') } : undefined;
    const transport = transportChoice(this.transport, this.context.env);
    const ice = { hosts: iceHosts(this.context.env), servers: iceServers(this.iceServers, this.context.env) };
    const log = (line: string) => this.context.stderr.write(`pam gateway: ${line}\n`);
    const native = await importNative(transport, () => import('../../gateway/native-answerer.js'), (line) => log(`warning: ${line}`));
    const answerer = native?.nativeAnswerer(ice);
    const hostsWarning = native ? nativeIceHostsWarning(ice.hosts) : undefined;
    if (hostsWarning) log(`warning: ${hostsWarning}`);
    const { startGateway, listenWarning } = await import('../../gateway/server.js');
    const warning = listenWarning(listen.host, tls !== undefined);
    if (warning) log(`warning: ${warning}`);
    const gateway = await startGateway({
      host: listen.host,
      port: listen.port,
      token,
      targets,
      log,
      ice,
      ...(answerer ? { answerer } : {}),
      mux: keepalive(this.context.env),
      maxPeersPerClient,
      ...(tls ? { tls } : {}),
    });
    const names = Object.keys(targets);
    this.context.stdout.write(
      this.json
        ? `${JSON.stringify({ event: 'listening', url: gateway.url, port: gateway.port, targets: names })}\n`
        : `pam gateway: listening on ${gateway.url} (targets: ${names.join(', ')})\n`,
    );

    // The process's one signal policy: the first stop signal closes in order; once unwatched, a
    // second one ends the process at once (Node's default).
    const signal = await new Promise<StopSignal>((resolve) => {
      const unwatch = createProcessSignals().watch((name) => {
        unwatch();
        resolve(name);
      });
    });
    log(`${signal}: closing`);
    await gateway.close();
    return 0;
  }
}

function parseHostPort(text: string, flag: string, example: string): { host: string; port: number } {
  const match = /^\[?([^\]]*?)\]?:(\d{1,5})$/.exec(text.trim());
  const port = match ? Number(match[2]) : NaN;
  if (!match?.[1] || port > 65535) throw new TunnelError('usage', `${flag} '${text}' must be host:port, e.g. ${example}`);
  return { host: match[1], port };
}

/** `--target name=host:port`, each name once; a target's port is where it listens, so never 0. */
function parseTargets(texts: readonly string[]): Record<string, { host: string; port: number }> {
  const targets: Record<string, { host: string; port: number }> = Object.create(null);
  for (const text of texts) {
    const eq = text.indexOf('=');
    const name = text.slice(0, eq);
    if (eq <= 0 || !isTargetName(name)) {
      throw new TunnelError('usage', `--target '${text}' must be name=host:port, e.g. db=127.0.0.1:5432 (a name: ${targetNameRule})`);
    }
    if (Object.hasOwn(targets, name)) throw new TunnelError('usage', `--target ${name} is given twice: each target name once (${name}=…)`);
    const destination = parseHostPort(text.slice(eq + 1), `--target ${name}`, `${name}=127.0.0.1:5432`);
    if (destination.port === 0) throw new TunnelError('usage', `--target ${name}: port 0 is not a port a target listens on; give the target's real port`);
    targets[name] = destination;
  }
  return targets;
}

function readPem(path: string, flag: string, kind: 'CERTIFICATE' | 'PRIVATE KEY'): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new TunnelError('usage', `cannot read ${flag} ${path} (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
  }
  // `PRIVATE KEY` also matches `RSA PRIVATE KEY` / `EC PRIVATE KEY`.
  if (!new RegExp(`-----BEGIN [A-Z ]*${kind}-----`).test(text)) {
    throw new TunnelError('usage', `${flag} ${path} is not a PEM ${kind === 'CERTIFICATE' ? 'certificate' : 'private key'} (no -----BEGIN ${kind}----- line)`);
  }
  return text;
}

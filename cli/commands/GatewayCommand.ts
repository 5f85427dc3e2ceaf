// `pam gateway`: the peer pam-tunnel ships, so every tunnel is real end to end.

import { Command, Option } from 'clipanion';
import { TunnelError, type StopSignal } from '../../machines/errors.js';
import { createProcessSignals } from '../../adapters/posix-signals.js';
import { PamCommand } from '../pam-command.js';
import { SingleString } from '../single-option.js';
import {
  iceHosts,
  iceServers,
  keepalive,
  importNative,
  makeToken,
  minBrokerTokenLength,
  nativeIceHostsWarning,
  readToken,
  transportChoice,
} from '../config.js';
import { iceServerOption, numberFlag, transportOption } from '../options.js';
import { isTargetName, targetNameRule } from '../../machines/start-flags.js';
import { readFileSync } from 'node:fs';
import { siteNamePattern } from '../../broker/protocol.js';

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

      With --socks-allow HOST:PORTS (repeatable) the gateway also serves SOCKS tunnels
      (\`pam tunnel start --socks\`): each CONNECT names a destination, which must match a rule.
      HOST is a name (\`db.internal\`), a wildcard below a domain (\`*.db.internal\`), \`*\`, an IPv4
      address or network (\`192.0.2.0/24\`) or a bracketed IPv6 one (\`[2001:db8::/32]\`); PORTS is N,
      N-M or \`*\`. The gateway resolves names itself and checks every address they resolve to; loopback,
      link-local (169.254.0.0/16, fe80::/10, the cloud metadata address), unspecified, multicast and
      the gateway's own addresses pass only a rule naming them by IP (\`127.0.0.1:5432\`), never a name
      or wildcard rule. Refusals are logged and reach the client as SOCKS reply codes (2 not allowed,
      4 host unreachable, 5 connection refused). Without --socks-allow, SOCKS tunnels are refused.
      Exit codes: 0 stopped by a signal, 2 usage (bad flag, token, PEM file or PAM_* variable),
      75 the --listen address is already in use, 77 the broker refused PAM_BROKER_TOKEN, 69 the broker
      refused the --site (its gateways have another key).

      Signalling is sealed to the gateway's long-term key (HPKE, RFC 9180), created on first start
      in --key-file (default $XDG_STATE_HOME/pam/gateway.key, mode 0600). Its fingerprint is printed
      at start (\`gateway key SHA256:…\`, \`key\` in --json): give it to clients as PAM_GATEWAY_KEY.

      With --broker URL --site NAME instead of --listen, the gateway opens no listening socket: it
      dials the broker over a WebSocket (authenticated by PAM_BROKER_TOKEN, the broker's value, at
      least 16 characters), registers the site,
      answers the sealed offers the broker relays, and re-registers with backoff when the broker goes
      away; tunnels already up keep running meanwhile. Clients then use
      --gateway http(s)://BROKER/sites/NAME. --broker may list several brokers, comma-separated: the
      gateway registers with one at a time and moves to the next when it does not answer or goes
      away. Several gateways may serve one site if they share its key (the same --key-file): new
      tunnels go to the one with the fewest; a gateway with another key is refused (exit 69).

      --authorized-keys FILE admits user keys (\`pam keygen\`), one a line:
      \`targets="web,db"[,expires="ISO-8601"][,from="CIDR,…"][,max-tunnels=N] pam-ed25519 KEY [comment]\`.
      Each request is signed by its key; a key reaches only its targets. A malformed file refuses the
      start naming the line; the file is re-read on SIGHUP (which then no longer stops the gateway)
      and when it changes, a bad version keeps the old grants. A removed key, a narrowed grant or a
      passed expiry ends that key's live tunnels within a second. With keys the token is optional;
      given, it still opens every target. --require-reason refuses tunnels without --reason. See
      docs/access.md.
    `,
    examples: [
      [
        'Serve a web and a database target on loopback',
        'PAM_GATEWAY_TOKEN=$(openssl rand -hex 32) $0 gateway --listen 127.0.0.1:8765 --target web=127.0.0.1:8080 --target db=127.0.0.1:5432',
      ],
      [
        'Any free port, announced as a JSON line',
        '$0 gateway --listen 127.0.0.1:0 --token-file ~/.config/pam/token --target web=127.0.0.1:8080 --json',
      ],
      [
        'Serve SOCKS tunnels to the database hosts and one subnet',
        "$0 gateway --listen 127.0.0.1:8765 --socks-allow '*.db.internal:5432' --socks-allow '192.0.2.0/24:22'",
      ],
      [
        'No inbound port: register site "lab" with a broker (PAM_BROKER_TOKEN set)',
        '$0 gateway --broker https://broker.example:8443 --site lab --target db=10.0.0.5:5432',
      ],
      [
        'A second gateway for site "lab", with the same key, failing over between two brokers',
        '$0 gateway --broker https://b1.example:8443,https://b2.example:8443 --site lab --key-file /etc/pam/lab.key --target db=10.0.0.5:5432',
      ],
    ],
  });

  listen = SingleString('--listen', { description: 'address:port for signalling (default 127.0.0.1:8765; not with --broker)' });
  broker = SingleString('--broker', {
    description:
      'http(s) URL of a `pam broker` to register with instead of listening (with --site); several, comma-separated, for failover',
  });
  site = SingleString('--site', { description: 'site name to register at --broker; clients use BROKER/sites/NAME' });
  targets = Option.Array('--target', [], { description: 'name=host:port of an allowlisted target (repeatable)' });
  socksAllow = Option.Array('--socks-allow', [], {
    description: "HOST:PORTS a SOCKS tunnel may reach, e.g. '*.db.internal:5432', '192.0.2.0/24:22' (repeatable)",
  });
  tokenFile = SingleString('--token-file', { description: 'file holding the token clients must present (default: $PAM_GATEWAY_TOKEN)' });
  json = Option.Boolean('--json', false, { description: 'print JSON lines instead of prose' });
  tlsCert = SingleString('--tls-cert', { description: 'PEM certificate: serve signalling over HTTPS (with --tls-key)' });
  tlsKey = SingleString('--tls-key', { description: 'PEM private key for --tls-cert' });
  transport = transportOption();
  iceServers = iceServerOption();
  keyFile = SingleString('--key-file', {
    description: "the gateway's long-term key (created 0600 on first start; default $XDG_STATE_HOME/pam/gateway.key)",
  });
  maxPeersPerClient = SingleString('--max-tunnels-per-client', '64', {
    description: 'tunnels one client address may hold at once (default 64)',
  });
  authorizedKeys = SingleString('--authorized-keys', {
    description: 'user keys and their grants, one a line: targets="a,b" [expires=, from=, max-tunnels=] pam-ed25519 KEY [comment]',
  });
  requireReason = Option.Boolean('--require-reason', false, { description: 'refuse a tunnel opened without --reason' });

  async execute(): Promise<number> {
    if (this.broker !== undefined && this.listen !== undefined)
      throw new TunnelError('usage', '--broker and --listen exclude each other: a gateway behind a broker opens no listening socket');
    if ((this.broker === undefined) !== (this.site === undefined))
      throw new TunnelError('usage', '--broker and --site go together: pass both, or neither');
    if (this.site !== undefined && !siteNamePattern.test(this.site))
      throw new TunnelError('usage', `--site '${this.site}' must be letters, digits, '.', '_' or '-' (at most 64)`);
    if (this.broker !== undefined && this.tlsCert !== undefined)
      throw new TunnelError('usage', '--tls-cert is for --listen; a broker gateway serves nothing (give the broker its certificate)');
    const listen = parseHostPort(this.listen ?? '127.0.0.1:8765', '--listen', '127.0.0.1:8765 (port 0 picks a free one)');
    const brokerToken = this.broker !== undefined ? readBrokerToken(this.context.env) : undefined;
    const targets = parseTargets(this.targets);
    const socks = this.socksAllow.length > 0 ? await socksPolicy(this.socksAllow) : undefined;
    if (Object.keys(targets).length === 0 && !socks)
      throw new TunnelError('usage', 'no targets: add at least one --target name=host:port (or --socks-allow HOST:PORTS)');
    const maxPeersPerClient = numberFlag('--max-tunnels-per-client', this.maxPeersPerClient, { min: 1, max: 10_000, whole: true });
    // With user keys the shared token is optional: set, it still opens every target (docs/access.md).
    const tokenGiven = this.tokenFile !== undefined || Boolean(this.context.env.PAM_GATEWAY_TOKEN?.trim());
    const token = this.authorizedKeys === undefined || tokenGiven ? readToken(this.tokenFile, this.context.env, 'gateway') : undefined;

    const tls = readTls(this.tlsCert, this.tlsKey);
    const transport = transportChoice(this.transport, this.context.env);
    const ice = { hosts: iceHosts(this.context.env), servers: iceServers(this.iceServers, this.context.env) };
    const log = (line: string) => this.context.stderr.write(`pam gateway: ${line}\n`);
    const native = await importNative(
      transport,
      () => import('../../gateway/native-answerer.js'),
      (line) => log(`warning: ${line}`),
    );
    const answerer = native?.nativeAnswerer(ice);
    const hostsWarning = native ? nativeIceHostsWarning(ice.hosts) : undefined;
    if (hostsWarning) log(`warning: ${hostsWarning}`);
    const { defaultKeyFile, loadOrCreateGatewayKey } = await import('../../adapters/gateway-key-file.js');
    const keyPath = this.keyFile ?? defaultKeyFile(this.context.env);
    const key = await loadOrCreateGatewayKey(keyPath);
    // Printed once the gateway is up, so a refused start stays one line.
    const announceKey = () =>
      log(
        `gateway key ${key.fingerprint} (${key.created ? 'created in' : 'from'} ${keyPath}); clients may pin it with PAM_GATEWAY_KEY=${key.fingerprint}`,
      );
    const names = Object.keys(targets);
    // The grants: read now (a malformed file refuses the start), again on SIGHUP and when the file changes.
    let recheck: () => void = () => undefined;
    const keys = this.authorizedKeys !== undefined ? await openGrants(this.authorizedKeys, names, log, () => recheck()) : undefined;
    const options = {
      ...(token !== undefined ? { token } : {}),
      ...(keys ? { authorizedKeys: keys.current } : {}),
      ...(this.requireReason ? { requireReason: true } : {}),
      key,
      targets,
      ...(socks ? { socks } : {}),
      log,
      ice,
      ...(answerer ? { answerer } : {}),
      mux: keepalive(this.context.env),
      maxPeersPerClient,
    };
    const print = (event: Record<string, unknown>, prose: string) =>
      this.context.stdout.write(this.json ? `${JSON.stringify(event)}\n` : `pam gateway: ${prose}\n`);
    if (this.broker !== undefined && this.site !== undefined && brokerToken !== undefined) {
      const brokers = brokerList(this.broker);
      const site = this.site;
      const [{ createSignalling }, { connectBroker }] = await Promise.all([
        import('../../gateway/signalling.js'),
        import('../../gateway/broker-link.js'),
      ]);
      const signalling = createSignalling(options);
      recheck = () => signalling.recheckAccess();
      announceKey();
      const link = connectBroker({
        brokers,
        site,
        token: brokerToken,
        key,
        targets: names,
        signalling,
        log,
        onRegistered: (before, broker) =>
          print(
            {
              event: before === 0 ? 'registered' : 'reregistered',
              broker,
              site,
              url: `${broker.replace(/\/+$/, '')}/sites/${site}`,
              targets: names,
              key: key.fingerprint,
            },
            `${before === 0 ? 'registered' : 'registered again:'} site ${site} at ${broker} (clients: --gateway ${broker.replace(/\/+$/, '')}/sites/${site}; targets: ${names.join(', ')}; gateway key ${key.fingerprint})`,
          ),
      });
      const ended = await Promise.race([stopSignal(keys !== undefined), link.failed]).catch((error: unknown) => error);
      keys?.close();
      link.close();
      signalling.closeAll();
      if (typeof ended !== 'string') throw ended;
      log(`${ended}: closing`);
      return 0;
    }
    const { startGateway, listenWarning } = await import('../../gateway/server.js');
    const warning = listenWarning(listen.host, tls !== undefined);
    if (warning) log(`warning: ${warning}`);
    const gateway = await startGateway({ host: listen.host, port: listen.port, ...options, ...(tls ? { tls } : {}) });
    recheck = () => gateway.recheckAccess();
    announceKey();
    const socksRules = socks ? socks.rules.map((rule) => rule.text) : [];
    print(
      { event: 'listening', url: gateway.url, port: gateway.port, targets: names, socksAllow: socksRules, key: key.fingerprint },
      `listening on ${gateway.url} (targets: ${names.join(', ') || 'none'}${socks ? `; SOCKS to ${socksRules.join(', ')}` : ''}; gateway key ${key.fingerprint})`,
    );

    const signal = await stopSignal(keys !== undefined);
    log(`${signal}: closing`);
    keys?.close();
    await gateway.close();
    return 0;
  }
}

/**
 * The process's one signal policy: the first stop signal closes in order; once unwatched, a second
 * one ends the process at once (Node's default). With `hangupReloads`, SIGHUP is not a stop signal
 * (it re-reads --authorized-keys instead).
 */
export function stopSignal(hangupReloads = false): Promise<StopSignal> {
  return new Promise<StopSignal>((resolve) => {
    const signals = hangupReloads ? createProcessSignals(process, ['SIGINT', 'SIGTERM']) : createProcessSignals();
    const unwatch = signals.watch((name) => {
      unwatch();
      resolve(name);
    });
  });
}

/** `--broker URL[,URL…]`: brokers tried in order (several for failover), each an http(s) URL. */
export function brokerList(text: string): string[] {
  const brokers = text
    .split(',')
    .map((part) => part.trim().replace(/\/+$/, ''))
    .filter(Boolean);
  if (brokers.length === 0) throw new TunnelError('usage', '--broker needs an http(s):// URL (several, comma-separated, for failover)');
  for (const broker of brokers) {
    let url: URL | undefined;
    try {
      url = new URL(broker);
    } catch {
      url = undefined;
    }
    if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.username !== '' || url.password !== '')
      throw new TunnelError('usage', `--broker '${broker.replace(/\/\/[^/@]*@/, '//…@')}' must be an http(s):// URL without credentials`);
  }
  return brokers;
}

/** --authorized-keys: loaded now, re-read on SIGHUP (until the process ends) and when the file changes. */
async function openGrants(path: string, served: readonly string[], log: (line: string) => void, onReload: () => void) {
  const { openAuthorizedKeys } = await import('../../gateway/authorized-keys-file.js');
  const file = openAuthorizedKeys(path, { log, onReload });
  const warnUnserved = () => {
    const unserved = new Set(
      [...file.current().grants.values()].flatMap((grant) => grant.targets.filter((name) => !served.includes(name))),
    );
    if (unserved.size > 0) log(`warning: authorized_keys grants targets this gateway does not serve: ${[...unserved].join(', ')}`);
  };
  warnUnserved();
  const unwatch = createProcessSignals(process, ['SIGHUP']).watch(() => {
    if (file.reload('SIGHUP')) warnUnserved();
    else log('SIGHUP: authorized_keys unchanged');
    // Expiry and removals are checked again either way.
    onReload();
  });
  return {
    current: file.current,
    close() {
      unwatch();
      file.close();
    },
  };
}

/** PAM_BROKER_TOKEN, shared by the broker and its gateways; never a flag (argv is visible in `ps`). */
export function readBrokerToken(env: NodeJS.ProcessEnv): string {
  const token = env.PAM_BROKER_TOKEN?.trim();
  if (!token) throw new TunnelError('usage', 'no broker token: set PAM_BROKER_TOKEN (the same value on the broker and its gateways)');
  if (token.length < minBrokerTokenLength) {
    throw new TunnelError(
      'usage',
      `PAM_BROKER_TOKEN is too short (${token.length} characters, at least ${minBrokerTokenLength}): ${makeToken}, and give the broker and its gateways the same value`,
    );
  }
  return token;
}

export function parseHostPort(text: string, flag: string, example: string): { host: string; port: number } {
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
    if (destination.port === 0)
      throw new TunnelError('usage', `--target ${name}: port 0 is not a port a target listens on; give the target's real port`);
    targets[name] = destination;
  }
  return targets;
}

/** `--socks-allow` rules (a bad one is a usage error naming it) and the policy over the system resolver. */
async function socksPolicy(texts: readonly string[]) {
  const [{ createSocksPolicy, parseSocksRules, SocksRuleError }, { lookup }, { networkInterfaces }] = await Promise.all([
    import('../../gateway/socks-policy.js'),
    import('node:dns/promises'),
    import('node:os'),
  ]);
  let rules: ReturnType<typeof parseSocksRules>;
  try {
    rules = parseSocksRules(texts);
  } catch (error) {
    if (error instanceof SocksRuleError) throw new TunnelError('usage', error.message);
    throw error;
  }
  return createSocksPolicy({
    rules,
    resolve: async (name) =>
      (await lookup(name, { all: true, verbatim: true })).map(({ address, family }) => ({ address, family: family === 6 ? 6 : 4 })),
    ownAddresses: () => Object.values(networkInterfaces()).flatMap((addresses) => (addresses ?? []).map((entry) => entry.address)),
  });
}

/** --tls-cert and --tls-key, which go together: both read and checked as PEM, or neither given. */
export function readTls(certFile: string | undefined, keyFile: string | undefined): { cert: string; key: string } | undefined {
  if ((certFile === undefined) !== (keyFile === undefined))
    throw new TunnelError('usage', '--tls-cert and --tls-key go together: pass both, or neither');
  if (certFile === undefined || keyFile === undefined) return undefined;
  return { cert: readPem(certFile, '--tls-cert', 'CERTIFICATE'), key: readPem(keyFile, '--tls-key', 'PRIVATE KEY') };
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
    throw new TunnelError(
      'usage',
      `${flag} ${path} is not a PEM ${kind === 'CERTIFICATE' ? 'certificate' : 'private key'} (no -----BEGIN ${kind}----- line)`,
    );
  }
  return text;
}

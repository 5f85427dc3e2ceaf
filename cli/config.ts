// Where settings come from: flags > environment > config file > defaults. The token is never taken
// from argv (other users can read argv in `ps`): only from PAM_GATEWAY_TOKEN or a token file.

import { existsSync, readFileSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import { homedir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { TunnelError } from '../machines/errors.js';
import { type IceServer, iceUrlForm, nativeTurnOverTcp, parseIceUrl, turnOnlyOverTcp } from '../adapters/ice-options.js';
import { createGatewayKeyCheck, fingerprintPattern, knownGatewaysPath, type GatewayKeyCheck } from '../adapters/known-gateways.js';
import { gatewayUrlProblem } from '../machines/start-flags.js';
import { type Credentials, defaultUserKeyFile, loadUserKey } from '../adapters/user-key.js';

/** `$XDG_CONFIG_HOME/pam/config.json` (default `~/.config/pam/config.json`). */
export interface ConfigFile {
  readonly path?: string;
  readonly gateway?: string;
  readonly tokenFile?: string;
  /** Default --timeout, in seconds. */
  readonly timeout?: number;
  /** The gateway key fingerprint to pin (as PAM_GATEWAY_KEY). */
  readonly gatewayKey?: string;
}

interface ConfigKey {
  readonly valid: (value: unknown) => boolean;
  readonly hint: string;
}

// Keys are looked up with Object.hasOwn: a key named `__proto__`, `constructor` or `toString` is
// unknown, not a property every object inherits.
const configKeys: Readonly<Record<string, ConfigKey>> = {
  gateway: {
    valid: (value) => typeof value === 'string' && gatewayUrlProblem(value, 'gateway') === undefined,
    hint: 'an http(s) URL string without credentials',
  },
  tokenFile: { valid: (value) => typeof value === 'string' && isAbsolute(value), hint: 'an absolute path string' },
  timeout: {
    valid: (value) => typeof value === 'number' && value >= 1 && value <= 86_400,
    hint: 'a number of seconds, 1 ≤ timeout ≤ 86400',
  },
  gatewayKey: {
    valid: (value) => typeof value === 'string' && fingerprintPattern.test(value),
    hint: "a key fingerprint 'SHA256:…' as `pam gateway` prints it",
  },
};

/** The gateway refuses shorter tokens: 16 random characters is the least that resists guessing. */
export const minGatewayTokenLength = 16;
/** The same floor for PAM_BROKER_TOKEN: whoever holds it can register a site (and answer its clients' offers). */
export const minBrokerTokenLength = 16;
export const makeToken =
  "make one with `openssl rand -hex 32` (or node -e \"console.log(require('crypto').randomBytes(32).toString('hex'))\")";

export function configPath(env: NodeJS.ProcessEnv): string {
  return join(env.XDG_CONFIG_HOME || join(env.HOME || homedir(), '.config'), 'pam', 'config.json');
}

/** The config file if there is one; a bad one is a usage error naming the file and the key. */
export function readConfigFile(env: NodeJS.ProcessEnv): ConfigFile {
  const path = configPath(env);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return {};
  }
  if (process.platform !== 'win32') {
    const mode = statSync(path).mode & 0o777;
    if ((mode & 0o077) !== 0) {
      throw new TunnelError(
        'usage',
        `config file ${path} is readable or writable by others (mode ${mode.toString(8)}): run chmod 600 ${path}`,
      );
    }
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new TunnelError('usage', `config file ${path} is not valid JSON (${(error as Error).message})`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new TunnelError('usage', `config file ${path} must hold a JSON object`);
  const settings: { -readonly [K in keyof ConfigFile]: ConfigFile[K] } = { path };
  for (const [key, entry] of Object.entries(value)) {
    const known = Object.hasOwn(configKeys, key) ? configKeys[key] : undefined;
    if (!known) throw new TunnelError('usage', `config file ${path}: unknown key '${key}' (known: ${Object.keys(configKeys).join(', ')})`);
    if (!known.valid(entry)) throw new TunnelError('usage', `config file ${path}: '${key}' must be ${known.hint}`);
    if (key === 'gateway' || key === 'tokenFile') settings[key] = entry as string;
    else if (key === 'timeout') settings.timeout = entry as number;
  }
  return settings;
}

export function gatewayUrl(flag: string | undefined, env: NodeJS.ProcessEnv, file: ConfigFile = {}): string | undefined {
  return flag ?? env.PAM_GATEWAY_URL ?? file.gateway;
}

/** Which setting gatewayUrl() took, for messages that name it. */
export function gatewaySource(flag: string | undefined, env: NodeJS.ProcessEnv, file: ConfigFile = {}): string {
  if (flag !== undefined) return '--gateway';
  if (env.PAM_GATEWAY_URL !== undefined) return 'PAM_GATEWAY_URL';
  return file.path ? `config file ${file.path}: 'gateway'` : '--gateway';
}

/** --token-file, then PAM_GATEWAY_TOKEN, then the config file's tokenFile. */
export function readToken(tokenFile: string | undefined, env: NodeJS.ProcessEnv, who: 'client' | 'gateway', file: ConfigFile = {}): string {
  if (tokenFile === undefined && !env.PAM_GATEWAY_TOKEN?.trim() && file.tokenFile) tokenFile = file.tokenFile;
  if (tokenFile !== undefined) {
    let text: string;
    try {
      text = readFileSync(tokenFile, 'utf8');
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? String(error);
      throw new TunnelError('usage', `cannot read --token-file ${tokenFile} (${code}): check the path and its permissions`);
    }
    // Like the config file: a secret others can read is no longer a secret (systemd credentials are 0400).
    if (process.platform !== 'win32') {
      const mode = statSync(tokenFile).mode & 0o777;
      if ((mode & 0o077) !== 0) {
        throw new TunnelError(
          'usage',
          `--token-file ${tokenFile} is readable or writable by others (mode ${mode.toString(8)}): run chmod 600 ${tokenFile}`,
        );
      }
    }
    const token = text.trim();
    if (token === '') throw new TunnelError('usage', `--token-file ${tokenFile} is empty: put the gateway token in it`);
    return strongEnough(token, `--token-file ${tokenFile}`, who);
  }
  const token = env.PAM_GATEWAY_TOKEN?.trim();
  if (token) return strongEnough(token, 'PAM_GATEWAY_TOKEN', who);
  const hint =
    who === 'gateway'
      ? 'the gateway refuses to start without a token: set PAM_GATEWAY_TOKEN or pass --token-file (never on the command line)'
      : 'no gateway token: set PAM_GATEWAY_TOKEN or pass --token-file';
  throw new TunnelError('usage', hint);
}

/**
 * The client's credentials: a user key from --key-file, PAM_KEY_FILE or the default key file when it
 * exists, and the token when one is configured. Both may be sent (the gateway decides which counts:
 * docs/access.md); neither is a usage error naming both fixes.
 */
export function readCredentials(options: {
  readonly tokenFile: string | undefined;
  readonly keyFile: string | undefined;
  readonly env: NodeJS.ProcessEnv;
  readonly file?: ConfigFile;
}): Credentials {
  const { env, file = {} } = options;
  const named = options.keyFile ?? (env.PAM_KEY_FILE?.trim() || undefined);
  const source = options.keyFile !== undefined ? '--key-file' : 'PAM_KEY_FILE';
  const fallback = defaultUserKeyFile(env);
  const key =
    named !== undefined ? loadUserKey(named, source) : existsSync(fallback) ? loadUserKey(fallback, 'the default key file') : undefined;
  const tokenGiven = options.tokenFile !== undefined || Boolean(env.PAM_GATEWAY_TOKEN?.trim()) || Boolean(file.tokenFile);
  const token = tokenGiven ? readToken(options.tokenFile, env, 'client', file) : undefined;
  if (key === undefined && token === undefined) {
    throw new TunnelError(
      'usage',
      `no credentials: set PAM_GATEWAY_TOKEN or pass --token-file (shared token), or create a user key with \`pam keygen\` (${fallback}) or pass --key-file / PAM_KEY_FILE`,
    );
  }
  return { ...(token !== undefined ? { token } : {}), ...(key !== undefined ? { key } : {}) };
}

/** The gateway decides what a token must be; a client presents whatever it was given. */
function strongEnough(token: string, source: string, who: 'client' | 'gateway'): string {
  if (who === 'gateway' && token.length < minGatewayTokenLength) {
    throw new TunnelError(
      'usage',
      `the gateway token from ${source} is too short (${token.length} characters, at least ${minGatewayTokenLength}): ${makeToken}`,
    );
  }
  return token;
}

/**
 * This host's own addresses ICE may offer as host candidates, from `PAM_ICE_HOSTS` (comma-separated),
 * e.g. `127.0.0.1` when gateway and client share a machine. Unset: every non-loopback interface. It
 * restricts local host candidates only: the peer's candidates are used as offered, and srflx/relay
 * candidates from --ice-server are unaffected.
 */
export function iceHosts(env: NodeJS.ProcessEnv): string[] {
  const hosts = (env.PAM_ICE_HOSTS ?? '')
    .split(',')
    .map((host) => host.trim())
    .filter(Boolean);
  for (const host of hosts) {
    if (isIP(host) === 0)
      throw new TunnelError('usage', `PAM_ICE_HOSTS: '${host}' is not an IP address (comma-separated local addresses, e.g. 127.0.0.1)`);
  }
  return hosts;
}

/**
 * libdatachannel binds ICE to one address (`bindAddress`; a list fails to gather), so the native
 * transport uses the first of several PAM_ICE_HOSTS; werift offers each. Said once, not silently.
 */
export function nativeIceHostsWarning(hosts: readonly string[]): string | undefined {
  if (hosts.length < 2) return undefined;
  return `PAM_ICE_HOSTS lists ${hosts.length} addresses; the native transport binds ICE to one and uses ${hosts[0]} only (--transport werift offers all of them)`;
}

/**
 * Keepalive from `PAM_KEEPALIVE_TIMEOUT` (seconds, default 15): a peer silent that long is dead and the
 * tunnel reconnects; pings go out every third of it.
 */
export function keepalive(env: NodeJS.ProcessEnv): { keepaliveDeadMs: number; keepaliveIntervalMs: number } {
  const text = env.PAM_KEEPALIVE_TIMEOUT?.trim();
  const seconds = text ? Number(text) : 15;
  if (!(seconds >= 1 && seconds <= 3600)) {
    throw new TunnelError(
      'usage',
      `PAM_KEEPALIVE_TIMEOUT '${env.PAM_KEEPALIVE_TIMEOUT}' must be a number of seconds from 1 to 3600 (default 15)`,
    );
  }
  const deadMs = seconds * 1000;
  return { keepaliveDeadMs: deadMs, keepaliveIntervalMs: Math.max(250, Math.round(deadMs / 3)) };
}

/** The default of `PAM_PARALLEL` (decision 0016). */
export const defaultParallel = 4;

/**
 * `PAM_PARALLEL`: how many WebRTC connections (SCTP associations) a tunnel spreads its bytes over,
 * 1 to 8. Each brings its own congestion and receive window, so a long path carries more with several.
 */
export function parallelConnections(env: NodeJS.ProcessEnv): number {
  const text = env.PAM_PARALLEL?.trim();
  const count = text ? Number(text) : defaultParallel;
  if (!(Number.isInteger(count) && count >= 1 && count <= 8)) {
    throw new TunnelError(
      'usage',
      `PAM_PARALLEL '${env.PAM_PARALLEL}' must be a whole number of connections from 1 to 8 (default ${defaultParallel})`,
    );
  }
  return count;
}

/** `--ice-server` URLs, validated, without credentials (a broker with --turn-secret-file mints them). */
export function iceServerUrls(urls: readonly string[]): Array<{ urls: string }> {
  return urls.map((url) => {
    if (!parseIceUrl(url)) {
      throw new TunnelError('usage', `--ice-server '${url}' must be ${iceUrlForm}`);
    }
    return { urls: url };
  });
}

/** `--ice-server` URLs, validated; TURN credentials come from PAM_ICE_USERNAME / PAM_ICE_CREDENTIAL, never argv. */
export function iceServers(urls: readonly string[], env: NodeJS.ProcessEnv): IceServer[] {
  return iceServerUrls(urls).map(({ urls: url }) => {
    if (!url.startsWith('turn')) return { urls: url };
    const username = env.PAM_ICE_USERNAME;
    const credential = env.PAM_ICE_CREDENTIAL;
    if (!username || !credential) throw new TunnelError('usage', `--ice-server ${url} needs PAM_ICE_USERNAME and PAM_ICE_CREDENTIAL`);
    return { urls: url, username, credential };
  });
}

export interface TransportChoice {
  readonly name: 'native' | 'werift';
  /** Asked for by --transport or PAM_TRANSPORT, not just the default. */
  readonly named: boolean;
}

/** --transport, else PAM_TRANSPORT, else native (docs/decisions/0004-native-by-default.md). */
export function transportChoice(flag: string | undefined, env: NodeJS.ProcessEnv): TransportChoice {
  const name = flag ?? env.PAM_TRANSPORT;
  if (name === undefined) return { name: 'native', named: false };
  const source = flag !== undefined ? '--transport' : 'PAM_TRANSPORT';
  if (name !== 'werift' && name !== 'native')
    throw new TunnelError('usage', `${source} '${name}' is not known: use native (default, node-datachannel) or werift (pure TypeScript)`);
  return { name, named: true };
}

/**
 * With TURN given only over TCP (`--ice-server turn:…?transport=tcp`), the native transport could never
 * relay: werift can (decision 0008). Asked for by name, native is refused with the fix; as the default,
 * werift takes over with one line saying so.
 */
export function transportForTurn(choice: TransportChoice, servers: readonly IceServer[], warn: (line: string) => void): TransportChoice {
  if (choice.name !== 'native' || !turnOnlyOverTcp(servers)) return choice;
  if (choice.named) throw new TunnelError('usage', `${nativeTurnOverTcp}: use --transport werift, or add a turn: server over UDP`);
  warn(`${nativeTurnOverTcp}; using werift, which can (pass --transport werift to say so and silence this)`);
  return { name: 'werift', named: false };
}

/**
 * Import the native (node-datachannel) side when it is the choice. If its prebuilt binary cannot load
 * on this platform and native was only the default, werift takes over with a warning; if it was asked
 * for by name, that is an error naming the fix. Resolves undefined when werift is to be used.
 */
export async function importNative<T>(
  choice: TransportChoice,
  load: () => Promise<T>,
  warn: (line: string) => void,
): Promise<T | undefined> {
  if (choice.name !== 'native') return undefined;
  try {
    return await load();
  } catch (error) {
    const reason = (error instanceof Error ? error.message : String(error)).split('\n')[0];
    const problem = `the native WebRTC transport (node-datachannel) cannot load here (${reason})`;
    if (choice.named) throw new TunnelError('usage', `${problem}; use --transport werift`);
    warn(`${problem}; using werift instead (slower); pass --transport werift to say so and silence this`);
    return undefined;
  }
}

/** The pin from PAM_GATEWAY_KEY, else the config file's gatewayKey; else TOFU in known_gateways. */
export function gatewayKeyCheck(env: NodeJS.ProcessEnv, file: ConfigFile = {}): GatewayKeyCheck {
  const fromEnv = env.PAM_GATEWAY_KEY?.trim();
  if (fromEnv && !fingerprintPattern.test(fromEnv)) {
    throw new TunnelError(
      'usage',
      `PAM_GATEWAY_KEY '${fromEnv.slice(0, 80)}' is not a key fingerprint: use SHA256:… as \`pam gateway\` prints it`,
    );
  }
  const pin = fromEnv
    ? { fingerprint: fromEnv, source: 'PAM_GATEWAY_KEY' }
    : file.gatewayKey
      ? { fingerprint: file.gatewayKey, source: `gatewayKey in ${file.path ?? configPath(env)}` }
      : undefined;
  return createGatewayKeyCheck({ ...(pin ? { pin } : {}), file: knownGatewaysPath(env) });
}

// Validation of `pam tunnel start` flags as given (raw strings), so that usage errors are decided by
// the machines (as guards) and not by if-statements scattered through commands.

import { failure, type Failure } from './errors.js';
import type { TunnelMode } from './ports.js';

/** The flags exactly as the user typed them; undefined = not given. */
export interface StartFlags {
  /** The gateway target; empty with `socks`. */
  readonly target: string;
  /** `--socks`: serve SOCKS5 locally; the gateway decides each destination. */
  readonly socks?: boolean;
  readonly gateway?: string;
  /** Where the gateway URL came from, for messages: '--gateway' (default), 'PAM_GATEWAY_URL', a config file. */
  readonly gatewaySource?: string;
  readonly host?: string;
  readonly port?: string;
  readonly foreground?: boolean;
  readonly background?: boolean;
  readonly run?: string;
  readonly timeout?: string;
  readonly pidFile?: string;
  /** How many times to try re-establishing a lost link (default 5; 0 = give up at once). */
  readonly reconnectAttempts?: string;
  /** Running inside `pam shell`: -fg/-bg are skipped (tunnels persist for the session). */
  readonly inShell?: boolean;
  /** Why the operator opens this tunnel, and the change/incident ticket: sealed to the gateway, journalled here. */
  readonly reason?: string;
  readonly ticket?: string;
}

export interface StartSettings {
  /** The gateway target, or `socksTarget` for a SOCKS tunnel. */
  readonly target: string;
  readonly socks?: true;
  readonly gateway: string;
  readonly host: string;
  readonly port: number;
  readonly mode: TunnelMode;
  readonly command?: string;
  readonly timeoutMs: number;
  readonly reconnectAttempts: number;
  readonly pidFile?: string;
  /** A flag the shell skipped, to tell the user about ('--background'), if any. */
  readonly skipped?: '--foreground' | '--background';
  readonly reason?: string;
  readonly ticket?: string;
}

/** No control characters (newlines, escapes): text that stays one line in logs and journals. */
export function isOneLine(text: string): boolean {
  for (const char of text) {
    const code = char.codePointAt(0)!;
    if (code < 0x20 || code === 0x7f) return false;
  }
  return true;
}

/** Longest --reason / --ticket: a sentence and an identifier, not a document. */
export const maxReasonLength = 500;
export const maxTicketLength = 100;

export const defaultTimeoutSeconds = 30;
export const defaultReconnectAttempts = 5;
export const defaultHost = '127.0.0.1';
/** Below this a connect cannot finish (signalling, ICE and DTLS take several round trips). */
export const minTimeoutSeconds = 1;
const targetPattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/**
 * The target of a `--socks` tunnel, in signalling, the registry and `list`: no target name can be it
 * (a name starts with a letter or digit), so a gateway never mistakes it for one of its --target names.
 */
export const socksTarget = '@socks';

/** The one rule for a target name, on the client (`tunnel start <target>`) and the gateway (`--target name=…`). */
export function isTargetName(name: string): boolean {
  return targetPattern.test(name);
}

export const targetNameRule = "letters, digits, '.', '_' and '-', at most 64";

/**
 * The one grammar of numeric flags, for every command: digits only (no sign, no exponent, no hex),
 * a fraction only where `whole` is false, within min…max. Undefined when the text is not such a number.
 */
export function parseNumberFlag(
  text: string,
  range: { readonly min: number; readonly max: number; readonly whole: boolean },
): number | undefined {
  const pattern = range.whole ? /^\s*\d{1,6}\s*$/ : /^\s*\d+(\.\d+)?\s*$/;
  if (!pattern.test(text)) return undefined;
  const value = Number(text);
  return value >= range.min && value <= range.max ? value : undefined;
}

export type StartParse = { readonly ok: true; readonly settings: StartSettings } | { readonly ok: false; readonly failure: Failure };

export function parseStartFlags(flags: StartFlags): StartParse {
  const usage = (reason: string): StartParse => ({ ok: false, failure: failure('usage', reason) });

  const chosen = [flags.foreground && '--foreground', flags.background && '--background', flags.run !== undefined && '--run'].filter(
    (name): name is string => typeof name === 'string',
  );
  if (chosen.length > 1) {
    return usage(`${chosen.join(' and ')} cannot be combined: choose one of --foreground, --background or --run`);
  }
  if (flags.run !== undefined && flags.run.trim() === '')
    return usage('--run needs a command, e.g. --run "psql -h $PAM_TUNNEL_HOST -p $PAM_TUNNEL_PORT"');
  if (flags.socks) {
    if (flags.target !== '')
      return usage(`--socks takes no target (the gateway decides each destination): drop '${flags.target}', or drop --socks`);
  } else if (flags.target === '') {
    return usage('name a target (`pam tunnel start db`), or pass --socks for a SOCKS5 proxy through the gateway');
  } else if (!isTargetName(flags.target)) {
    return usage(`target '${flags.target}' is not a valid target name (${targetNameRule})`);
  }

  const gateway = flags.gateway?.trim();
  if (!gateway) return usage('no gateway given: pass --gateway URL or set PAM_GATEWAY_URL (e.g. http://127.0.0.1:8765)');
  const refused = gatewayUrlProblem(gateway, flags.gatewaySource ?? '--gateway');
  if (refused) return usage(refused);

  const port = flags.port === undefined ? 0 : parseInteger(flags.port);
  if (port === undefined || port < 0 || port > 65535) {
    return usage(`--port '${flags.port}' is not a port: use a whole number from 1 to 65535, or 0 for any free port`);
  }

  // `[::1]` is how IPv6 addresses are written next to a port; the brackets are not part of the address.
  const host = flags.host === undefined ? defaultHost : flags.host.trim().replace(/^\[([^\]]*:[^\]]*)\]$/, '$1');
  if (host === '' || /[\s[\]]/.test(host)) return usage(`--host '${flags.host}' is not a host name or address`);

  let timeoutMs = defaultTimeoutSeconds * 1000;
  if (flags.timeout !== undefined) {
    const seconds = parseNumberFlag(flags.timeout, { min: 0, max: 86_400, whole: false }) ?? 0;
    if (!(seconds > 0)) return usage(`--timeout '${flags.timeout}' must be a positive number of seconds (at most 86400)`);
    if (seconds < minTimeoutSeconds)
      return usage(`--timeout '${flags.timeout}' is too short: a connect needs at least ${minTimeoutSeconds} s`);
    timeoutMs = Math.round(seconds * 1000);
  }

  if (flags.pidFile !== undefined && flags.pidFile.trim() === '') return usage('--pid-file needs a path');

  const reconnectAttempts = flags.reconnectAttempts === undefined ? defaultReconnectAttempts : parseInteger(flags.reconnectAttempts);
  if (reconnectAttempts === undefined || reconnectAttempts > 100) {
    return usage(`--reconnect-attempts '${flags.reconnectAttempts}' must be a whole number from 0 (never reconnect) to 100`);
  }

  const reason = flags.reason?.trim();
  if (flags.reason !== undefined && !reason) return usage('--reason needs a text, e.g. --reason "restore of db after incident"');
  if (reason !== undefined && (reason.length > maxReasonLength || !isOneLine(reason)))
    return usage(`--reason must be one line of at most ${maxReasonLength} characters`);
  const ticket = flags.ticket?.trim();
  if (flags.ticket !== undefined && !/^[\x21-\x7e]{1,100}$/.test(ticket ?? ''))
    return usage(
      `--ticket '${(flags.ticket ?? '').slice(0, 40)}' must be an identifier (printable, no spaces, at most ${maxTicketLength}), e.g. CHG-1234`,
    );
  if (ticket !== undefined && reason === undefined)
    return usage('--ticket goes with --reason: say why, e.g. --reason "deploy" --ticket CHG-1234');

  let mode: TunnelMode = flags.run !== undefined ? 'run' : flags.background ? 'background' : 'foreground';
  let skipped: StartSettings['skipped'];
  if (flags.inShell && mode !== 'run') {
    if (flags.background) skipped = '--background';
    else if (flags.foreground) skipped = '--foreground';
    mode = 'shell';
  }

  return {
    ok: true,
    settings: {
      target: flags.socks ? socksTarget : flags.target,
      ...(flags.socks ? { socks: true as const } : {}),
      gateway: gatewayUrls(gateway).join(','),
      host,
      port,
      mode,
      timeoutMs,
      reconnectAttempts,
      ...(flags.run !== undefined ? { command: flags.run } : {}),
      ...(flags.pidFile !== undefined ? { pidFile: flags.pidFile } : {}),
      ...(skipped ? { skipped } : {}),
      ...(reason !== undefined ? { reason } : {}),
      ...(ticket !== undefined ? { ticket } : {}),
    },
  };
}

function parseInteger(text: string): number | undefined {
  return parseNumberFlag(text, { min: 0, max: 999_999, whole: true });
}

/**
 * A gateway setting may list several URLs of one site, comma-separated (the site through several
 * brokers): tried in order, the next when one does not answer. Each without a trailing slash.
 */
export function gatewayUrls(text: string): string[] {
  return text
    .split(',')
    .map((part) => part.trim().replace(/\/+$/, ''))
    .filter((part) => part !== '');
}

/**
 * Why a gateway URL (or a comma-separated list of them) is refused, or undefined. Credentials in it (`http://user:secret@host`) would end
 * up in the registry, the journal and `list --json`: the token has its own, private channels. A path
 * is kept (a gateway behind a path-prefix proxy); a query or fragment has no meaning here.
 */
export function gatewayUrlProblem(text: string, source: string): string | undefined {
  const urls = text.split(',').map((part) => part.trim());
  if (urls.length > 1) {
    if (urls.some((url) => url === '')) return `${source} lists an empty URL: separate the URLs of one site with single commas`;
    for (const url of urls) {
      const problem = gatewayUrlProblem(url, source);
      if (problem) return problem;
    }
    return undefined;
  }
  // Not even echoed when the URL does not parse: what looks like userinfo is masked.
  const shown = text.replace(/\/\/[^/@]*@/, '//…@');
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return `${source} '${shown}' is not an http(s) URL (e.g. http://127.0.0.1:8765)`;
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.hostname === '') {
    return `${source} '${shown}' is not an http(s) URL (e.g. http://127.0.0.1:8765)`;
  }
  if (url.username !== '' || url.password !== '') {
    url.username = '';
    url.password = '';
    return `${source} must not carry credentials (user:password@): use ${url.href.replace(/\/$/, '')} and give the token with PAM_GATEWAY_TOKEN or --token-file`;
  }
  if (url.search !== '' || url.hash !== '')
    return `${source} '${shown}' must not have a query or fragment (a path is fine: http://host:port/prefix)`;
  return undefined;
}

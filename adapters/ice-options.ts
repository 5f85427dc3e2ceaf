// ICE settings as both transports and the gateway take them, and the one grammar of a stun:/turn: URL
// (checked by the CLI, taken apart by the native transport).

export interface IceServer {
  readonly urls: string;
  readonly username?: string;
  readonly credential?: string;
}

export interface IceOptions {
  /** Only these local addresses become host candidates (e.g. 127.0.0.1); empty → all interfaces. */
  readonly hosts?: readonly string[];
  /** stun:/turn: URLs; none by default, so nothing outside the configured hosts is contacted. */
  readonly servers?: readonly IceServer[];
}

export interface IceUrl {
  readonly scheme: 'stun' | 'turn' | 'turns';
  readonly host: string;
  readonly port?: number;
  readonly transport?: 'udp' | 'tcp';
}

export const iceUrlForm = 'stun:host[:port] or turn:host[:port][?transport=udp|tcp]';

/** `stun:host[:port]`, `turn:host[:port][?transport=udp|tcp]` (or `turns:`), else undefined. */
export function parseIceUrl(url: string): IceUrl | undefined {
  const match = /^(stun|turns?):([^\s:?]+)(?::(\d{1,5}))?(?:\?transport=(udp|tcp))?$/.exec(url);
  if (!match) return undefined;
  return {
    scheme: match[1] as IceUrl['scheme'],
    host: match[2]!,
    ...(match[3] !== undefined ? { port: Number(match[3]) } : {}),
    ...(match[4] !== undefined ? { transport: match[4] as 'udp' | 'tcp' } : {}),
  };
}

/** TURN over TCP (`turn:…?transport=tcp`; `turns:` is TLS over TCP). */
export function isTurnOverTcp(url: string): boolean {
  const parsed = parseIceUrl(url);
  return parsed !== undefined && (parsed.scheme === 'turns' || (parsed.scheme === 'turn' && parsed.transport === 'tcp'));
}

/** TURN is offered, but only over TCP: libjuice (the native transport) relays over UDP only and cannot use it. */
export function turnOnlyOverTcp(servers: readonly { readonly urls: string }[]): boolean {
  const turn = servers.filter((server) => /^turns?:/.test(server.urls));
  return turn.length > 0 && turn.every((server) => isTurnOverTcp(server.urls));
}

export const nativeTurnOverTcp =
  'the native transport (libdatachannel with libjuice) relays over UDP only and cannot use TURN over TCP (turn:…?transport=tcp)';

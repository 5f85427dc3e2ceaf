// `--inspect [ws-url]` / PAM_INSPECT: stream the live tunnel actor to a Stately inspector over a
// websocket. Opt-in and loaded lazily; it never delays readiness (events queue until connected) and
// never holds the process open: it is stopped at the end, and bin.ts bounds exit regardless of the
// client's own reconnect timer.

import type { InspectionEvent } from 'xstate';
import { TunnelError } from '../machines/errors.js';
import { journalEvent } from '../machines/journal.js';
import type { TunnelContext } from '../machines/tunnel.machine.js';

export const defaultInspectUrl = 'ws://127.0.0.1:8080';

export interface AttachedInspector {
  inspect(event: InspectionEvent): void;
  stop(): void;
}

/** `--inspect` given without a value → the default URL; PAM_INSPECT=1 likewise; PAM_INSPECT=ws://… that URL. */
export function inspectUrl(flag: string | boolean | undefined, env: NodeJS.ProcessEnv): string | undefined {
  if (typeof flag === 'string') return websocketUrl(flag, '--inspect', `--inspect=${defaultInspectUrl}`);
  if (flag === true) return defaultInspectUrl;
  const fromEnv = env.PAM_INSPECT?.trim();
  if (!fromEnv || fromEnv === '0') return undefined;
  return fromEnv === '1' || fromEnv === 'true' ? defaultInspectUrl : websocketUrl(fromEnv, 'PAM_INSPECT', `1, 0 or ${defaultInspectUrl}`);
}

/** A URL the inspector client can open, checked here: a bad one otherwise fails inside the websocket library. */
function websocketUrl(text: string, source: string, example: string): string {
  let protocol = '';
  try {
    protocol = new URL(text).protocol;
  } catch {
    // reported below
  }
  if (protocol !== 'ws:' && protocol !== 'wss:')
    throw new TunnelError('usage', `${source} '${text}' is not a ws:// or wss:// URL (e.g. ${example})`);
  return text;
}

/** Live handles are replaced by what they mean; nothing secret (SDP, token) leaves the process. */
function sanitizeContext(context: unknown): unknown {
  const tunnel = context as Partial<TunnelContext> | undefined;
  if (!tunnel || typeof tunnel !== 'object' || !('flags' in tunnel)) return context;
  return {
    ...tunnel,
    listener: tunnel.listener ? { host: tunnel.listener.host, port: tunnel.listener.port } : undefined,
    negotiation: tunnel.negotiation ? '[negotiation]' : undefined,
    link: tunnel.link ? '[link]' : undefined,
  };
}

export async function attachInspector(url: string, warn: (message: string) => void): Promise<AttachedInspector> {
  const { createWebSocketInspector } = await import('@statelyai/inspect');
  const inspector = createWebSocketInspector({
    url,
    sanitizeContext: sanitizeContext as never,
    sanitizeEvent: ((event: { type: string }) => journalEvent(event)) as never,
  });
  warn(`inspector: streaming this tunnel to ${url} (open https://stately.ai/inspect or a compatible receiver)`);
  return {
    // Only the tunnel actor itself: its invoked children hold live handles (a peer connection with its
    // DTLS private key, the SDP) in their input and output, which must never leave the process.
    inspect: (event) => {
      if (event.actorRef.sessionId === event.rootId) inspector.inspect.next?.(event as never);
    },
    stop: () => inspector.stop(),
  };
}

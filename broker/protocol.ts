// The gateway ↔ broker WebSocket protocol: JSON messages, one per frame. The broker only ever holds
// sealed bytes (base64) it cannot open; the gateway key it serves to clients is checked by them
// (pinning / known_gateways), so a broker that swaps it is caught before any tunnel is set up.

import type { WebSocket } from 'ws';
import type { IceServer } from '../adapters/ice-options.js';

/** 2: gateways carry an id and report their tunnel count (several gateways per site). */
export const brokerProtocol = 2;
export const siteNamePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export type GatewayToBroker =
  /** `id`: random per gateway process, so a site can have several and a gateway moving brokers stays one. */
  | { type: 'register'; protocol: number; id: string; site: string; targets: string[]; key: string; tunnels: number }
  /** `sealed`: the sealed answer; otherwise the request could not be opened (`status`, `error` in clear). */
  | { type: 'answer'; id: string; sealed?: string; status?: number; error?: string; tunnels?: number }
  /** The gateway's tunnel count, sent when it changes: new tunnels go to the gateway of a site with the fewest. */
  | { type: 'load'; tunnels: number };

export type BrokerToGateway =
  | { type: 'registered'; site: string }
  | { type: 'refused'; reason: string }
  | { type: 'offer'; id: string; sealed: string; client: string; iceServers: IceServer[] };

const isString = (value: unknown): value is string => typeof value === 'string';
const isCount = (value: unknown): value is number => typeof value === 'number' && Number.isInteger(value) && value >= 0 && value < 1e6;
export const gatewayIdPattern = /^[0-9a-f]{8,64}$/;

/** A message from either side, shape-checked; undefined when it is not one of ours. */
export function parseMessage(text: string): GatewayToBroker | undefined;
export function parseMessage(text: string, from: 'broker'): BrokerToGateway | undefined;
export function parseMessage(text: string, from: 'gateway' | 'broker' = 'gateway'): GatewayToBroker | BrokerToGateway | undefined {
  let value: Record<string, unknown>;
  try {
    const parsed: unknown = JSON.parse(text);
    if (typeof parsed !== 'object' || parsed === null) return undefined;
    value = parsed as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (from === 'gateway') {
    if (
      value.type === 'register' &&
      typeof value.protocol === 'number' &&
      isString(value.site) &&
      isString(value.key) &&
      Array.isArray(value.targets) &&
      value.targets.every(isString)
    ) {
      // An older gateway sends no id: it gets the protocol refusal, which names the fix.
      const id = isString(value.id) && gatewayIdPattern.test(value.id) ? value.id : '';
      const tunnels = isCount(value.tunnels) ? value.tunnels : 0;
      return { type: 'register', protocol: value.protocol, id, site: value.site, key: value.key, targets: value.targets, tunnels };
    }
    if (value.type === 'load' && isCount(value.tunnels)) return { type: 'load', tunnels: value.tunnels };
    if (value.type === 'answer' && isString(value.id)) {
      return {
        type: 'answer',
        id: value.id,
        ...(isString(value.sealed) ? { sealed: value.sealed } : {}),
        ...(typeof value.status === 'number' && value.status >= 400 && value.status < 600 ? { status: value.status } : {}),
        ...(isString(value.error) ? { error: value.error.slice(0, 300) } : {}),
        ...(isCount(value.tunnels) ? { tunnels: value.tunnels } : {}),
      };
    }
    return undefined;
  }
  if (value.type === 'registered' && isString(value.site)) return { type: 'registered', site: value.site };
  if (value.type === 'refused' && isString(value.reason)) return { type: 'refused', reason: value.reason };
  if (value.type === 'offer' && isString(value.id) && isString(value.sealed) && isString(value.client) && Array.isArray(value.iceServers)) {
    const servers = value.iceServers.filter(
      (server): server is IceServer => typeof server === 'object' && server !== null && isString((server as { urls?: unknown }).urls),
    );
    return { type: 'offer', id: value.id, sealed: value.sealed, client: value.client, iceServers: servers };
  }
  return undefined;
}

/**
 * Keeps a broker link honest from either end: a ping every `intervalMs`; a pong or any message since
 * the last one proves the peer alive, and a silent interval terminates the socket (its 'close' handler
 * then cleans up or reconnects). Stops by itself when the socket closes.
 */
export function heartbeat(ws: WebSocket, intervalMs: number, onSilent: () => void): void {
  let alive = true;
  const proof = () => (alive = true);
  ws.on('pong', proof);
  ws.on('message', proof);
  const timer = setInterval(() => {
    if (!alive) {
      onSilent();
      ws.terminate();
      return;
    }
    alive = false;
    ws.ping();
  }, intervalMs);
  ws.once('close', () => clearInterval(timer));
}

// `pam broker`: the rendezvous for gateways without an inbound port. Gateways register a site over an
// outbound WebSocket (PAM_BROKER_TOKEN); clients fetch the site's gateway key and post sealed offers
// over HTTP, which the broker relays to the gateway and whose sealed answers it relays back. It holds
// no tunnel state beyond one exchange, never sees tunnel bytes, and cannot open what it relays.

import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { BodyTooLarge, readBodyBytes } from '../adapters/http-body.js';
import { keyFingerprint } from '../adapters/key-fingerprint.js';
import { sealedContentType } from '../adapters/sealed-signalling.js';
import type { IceServer } from '../adapters/ice-options.js';
import { HttpError, jsonServer, listenOn } from '../adapters/http-listen.js';
import { brokerProtocol, type BrokerToGateway, type GatewayToBroker, heartbeat, parseMessage, siteNamePattern } from './protocol.js';

export interface BrokerOptions {
  readonly host: string;
  readonly port: number;
  /** PAM_BROKER_TOKEN: what a gateway must present to register. */
  readonly token: string;
  readonly log: (line: string) => void;
  /** Handed to both ends of every exchange. turn: entries get minted credentials when `turnSecret` is set. */
  readonly iceServers?: readonly IceServer[];
  /** coturn's static-auth-secret: mint TURN REST credentials per exchange. */
  readonly turnSecret?: string;
  /** Lifetime of minted TURN credentials (default 12 h: an allocation must refresh with them while a tunnel lasts). */
  readonly turnCredentialTtlSeconds?: number;
  readonly tls?: { readonly cert: string; readonly key: string };
  /** Longest wait for a gateway's answer; then 504. */
  readonly exchangeTimeoutMs?: number;
  /** Interval of the broker's pings; a gateway silent for two of them is dropped. */
  readonly pingIntervalMs?: number;
  readonly now?: () => number;
}

export interface Broker {
  readonly url: string;
  readonly port: number;
  sites(): string[];
  close(): Promise<void>;
}

interface Site {
  readonly name: string;
  readonly socket: WebSocket;
  readonly key: Buffer;
  readonly targets: readonly string[];
  readonly from: string;
  readonly since: string;
  readonly pending: Map<string, (message: GatewayToBroker | { type: 'gone' }) => void>;
}

const digest = (text: string) => createHash('sha256').update(text).digest();

/** TURN REST API credentials (what coturn's use-auth-secret checks): `expiry:label`, base64 HMAC-SHA1. */
export function mintTurnCredential(secret: string, label: string, expiresAt: number): { username: string; credential: string } {
  const username = `${expiresAt}:${label}`;
  return { username, credential: createHmac('sha1', secret).update(username).digest('base64') };
}

export async function startBroker(options: BrokerOptions): Promise<Broker> {
  const sites = new Map<string, Site>();
  const tokenDigest = digest(options.token);
  const exchangeTimeoutMs = options.exchangeTimeoutMs ?? 15_000;
  const pingIntervalMs = options.pingIntervalMs ?? 10_000;
  const ttl = options.turnCredentialTtlSeconds ?? 12 * 3600;
  const now = options.now ?? Date.now;
  const maxBodyBytes = 64 * 1024;
  const maxPendingPerSite = 64;

  const iceFor = (label: string): IceServer[] =>
    (options.iceServers ?? []).map((server) => {
      if (!server.urls.startsWith('turn') || options.turnSecret === undefined) return server;
      return { urls: server.urls, ...mintTurnCredential(options.turnSecret, label, Math.floor(now() / 1000) + ttl) };
    });

  const authorized = (request: IncomingMessage) => {
    const header = request.headers.authorization ?? '';
    const presented = header.startsWith('Bearer ') ? header.slice('Bearer '.length) : '';
    return presented.length > 0 && timingSafeEqual(digest(presented), tokenDigest);
  };

  async function route(request: IncomingMessage, response: ServerResponse): Promise<unknown> {
    const path = (request.url ?? '').split('?')[0] ?? '';
    if (path === '/healthz' && request.method === 'GET') return { ok: true, broker: true, sites: sites.size };
    const match = /^\/sites\/([^/]+)\/v1\/(key|tunnels)$/.exec(path);
    if (!match) throw new HttpError(404, 'not found (a site is reached as /sites/NAME)');
    const name = decodeURIComponent(match[1]!);
    const site = sites.get(name);
    if (!site) throw new HttpError(404, `no gateway is registered for site '${name.slice(0, 64)}' at this broker`);
    const exchange = randomBytes(8).toString('hex');
    if (match[2] === 'key') {
      if (request.method !== 'GET') throw new HttpError(405, 'use GET');
      return { kem: 'X25519', key: site.key.toString('base64'), iceServers: iceFor(`pam-client-${exchange}`) };
    }
    if (request.method !== 'POST') throw new HttpError(405, 'use POST');
    const body = await readBodyBytes(request, maxBodyBytes).catch((error: unknown) => {
      throw error instanceof BodyTooLarge ? new HttpError(413, error.message) : error;
    });
    if (site.pending.size >= maxPendingPerSite)
      throw new HttpError(429, `site '${name}' has ${maxPendingPerSite} exchanges in flight: try again`);
    const answer = await new Promise<GatewayToBroker | { type: 'gone' } | undefined>((resolve) => {
      const timer = setTimeout(() => {
        site.pending.delete(exchange);
        resolve(undefined);
      }, exchangeTimeoutMs);
      site.pending.set(exchange, (message) => {
        clearTimeout(timer);
        site.pending.delete(exchange);
        resolve(message);
      });
      send(site.socket, {
        type: 'offer',
        id: exchange,
        sealed: body.toString('base64'),
        client: request.socket.remoteAddress ?? 'unknown',
        iceServers: iceFor(`pam-gateway-${exchange}`),
      });
    });
    if (answer === undefined) throw new HttpError(504, `the gateway of site '${name}' did not answer within ${exchangeTimeoutMs / 1000} s`);
    if (answer.type === 'gone') throw new HttpError(502, `the gateway of site '${name}' went away during the exchange`);
    if (answer.type !== 'answer') throw new HttpError(502, 'the gateway sent something other than an answer');
    if (answer.sealed === undefined) throw new HttpError(answer.status ?? 502, answer.error ?? 'the gateway refused the request');
    const sealed = Buffer.from(answer.sealed, 'base64');
    response.writeHead(200, { 'content-type': sealedContentType, 'content-length': sealed.length });
    response.end(sealed);
    return undefined;
  }

  const server = jsonServer({ tls: options.tls, requestTimeoutMs: 30_000, log: options.log }, route);

  const sockets = new WebSocketServer({ noServer: true, maxPayload: 256 * 1024 });
  server.on('upgrade', (request: IncomingMessage, socket: Socket, head: Buffer) => {
    const from = request.socket.remoteAddress ?? 'unknown';
    if ((request.url ?? '').split('?')[0] !== '/v1/gateways') {
      socket.end('HTTP/1.1 404 Not Found\r\nconnection: close\r\n\r\n');
      return;
    }
    if (!authorized(request)) {
      options.log(`refused a gateway from ${from}: wrong or missing PAM_BROKER_TOKEN`);
      socket.end('HTTP/1.1 401 Unauthorized\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      return;
    }
    sockets.handleUpgrade(request, socket, head, (ws) => accept(ws, from));
  });

  function accept(ws: WebSocket, from: string): void {
    let site: Site | undefined;
    const registerDeadline = setTimeout(() => ws.close(4400, 'no registration'), 10_000);
    heartbeat(ws, pingIntervalMs, () => options.log(`${site ? `site ${site.name}` : `gateway from ${from}`}: no pong, dropped`));
    ws.on('error', () => undefined);
    ws.on('close', () => {
      clearTimeout(registerDeadline);
      if (site && sites.get(site.name) === site) {
        sites.delete(site.name);
        options.log(`site ${site.name} unregistered (its gateway went away)`);
        for (const settle of [...site.pending.values()]) settle({ type: 'gone' });
      }
    });
    ws.on('message', (data) => {
      const message = parseMessage(data.toString());
      if (!message) return void ws.close(4400, 'not a broker protocol message');
      if (message.type === 'register') {
        if (site) return;
        clearTimeout(registerDeadline);
        if (message.protocol !== brokerProtocol)
          return refuse(ws, `this broker speaks protocol ${brokerProtocol}, the gateway ${message.protocol}: run the same pam version`);
        if (!siteNamePattern.test(message.site))
          return refuse(ws, `site name '${message.site.slice(0, 64)}' must match ${siteNamePattern}`);
        const key = Buffer.from(message.key, 'base64');
        if (key.length !== 32) return refuse(ws, 'the gateway key must be 32 bytes of X25519');
        const held = sites.get(message.site);
        if (held) {
          options.log(
            `refused a second gateway for site ${message.site} from ${from}: one from ${held.from} is registered since ${held.since}`,
          );
          return refuse(
            ws,
            `site '${message.site}' already has a gateway registered (from ${held.from} since ${held.since}); stop that one or choose another --site`,
          );
        }
        site = {
          name: message.site,
          socket: ws,
          key,
          targets: message.targets,
          from,
          since: new Date(now()).toISOString(),
          pending: new Map(),
        };
        sites.set(site.name, site);
        options.log(`site ${site.name} registered from ${from} (targets: ${site.targets.join(', ')}; gateway key ${keyFingerprint(key)})`);
        send(ws, { type: 'registered', site: site.name });
        return;
      }
      if (message.type === 'answer' && site) site.pending.get(message.id)?.(message);
    });
  }

  const { url, port } = await listenOn(server, options.host, options.port, options.tls !== undefined);
  return {
    url,
    port,
    sites: () => [...sites.keys()],
    async close() {
      for (const client of sockets.clients) client.terminate();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
    },
  };
}

function send(ws: WebSocket, message: BrokerToGateway): void {
  if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(message));
}

function refuse(ws: WebSocket, reason: string): void {
  send(ws, { type: 'refused', reason });
  ws.close(4409, 'refused');
}

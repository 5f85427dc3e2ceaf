// `pam broker`: the rendezvous for gateways without an inbound port. Gateways register a site over an
// outbound WebSocket (PAM_BROKER_TOKEN); clients fetch the site's gateway key and post sealed offers
// over HTTP, which the broker relays to the gateway and whose sealed answers it relays back. It holds
// no tunnel state beyond one exchange, never sees tunnel bytes, and cannot open what it relays.
// A site may have several gateways (one key); a new tunnel goes to the one with the fewest tunnels.
// With --redis, brokers share presence and relay exchanges to each other (broker/redis-routing.ts).

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
import type { ForwardedAnswer, ForwardedOffer, Presence, RedisRouting } from './redis-routing.js';

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
  /** Share routing with other brokers through Redis; without it, routing is in memory (this broker only). */
  readonly redis?: { readonly url: string; readonly password?: string };
  /** How long a gateway's presence in Redis outlives this broker's last refresh (default 5 s). */
  readonly presenceTtlMs?: number;
  readonly now?: () => number;
}

/** What /healthz reports, for a load balancer and for operators. */
export interface BrokerHealth {
  readonly ok: true;
  readonly broker: true;
  readonly id: string;
  /** off: no --redis; down: routing only for this broker's own gateways. */
  readonly redis: 'off' | 'up' | 'down';
  /** Sites with a gateway connected to this broker, and those gateways. */
  readonly sites: number;
  readonly gateways: number;
  /** Exchanges answered with a sealed answer, relayed to or from other brokers, and refused or failed. */
  readonly exchanges: number;
  readonly forwarded: number;
  readonly failures: number;
}

export interface Broker {
  readonly url: string;
  readonly port: number;
  sites(): string[];
  health(): BrokerHealth;
  close(): Promise<void>;
}

/** A gateway connected to this broker. */
interface LocalGateway {
  readonly id: string;
  readonly site: string;
  readonly socket: WebSocket;
  readonly key: Buffer;
  readonly targets: readonly string[];
  readonly from: string;
  readonly since: string;
  tunnels: number;
  readonly pending: Map<string, (message: GatewayToBroker | { type: 'gone' }) => void>;
}

/** A gateway a tunnel may go to: connected here (`local`), or at another broker (`broker`). */
interface Candidate {
  readonly id: string;
  readonly key: Buffer;
  readonly tunnels: number;
  readonly local?: LocalGateway;
  readonly broker?: string;
}

type Relayed = GatewayToBroker | { type: 'gone' } | undefined;

const digest = (text: string) => createHash('sha256').update(text).digest();

/** TURN REST API credentials (what coturn's use-auth-secret checks): `expiry:label`, base64 HMAC-SHA1. */
export function mintTurnCredential(secret: string, label: string, expiresAt: number): { username: string; credential: string } {
  const username = `${expiresAt}:${label}`;
  return { username, credential: createHmac('sha1', secret).update(username).digest('base64') };
}

export async function startBroker(options: BrokerOptions): Promise<Broker> {
  const sites = new Map<string, Map<string, LocalGateway>>();
  const brokerId = randomBytes(8).toString('hex');
  const tokenDigest = digest(options.token);
  const exchangeTimeoutMs = options.exchangeTimeoutMs ?? 15_000;
  const pingIntervalMs = options.pingIntervalMs ?? 10_000;
  const presenceTtlMs = options.presenceTtlMs ?? 5_000;
  const ttl = options.turnCredentialTtlSeconds ?? 12 * 3600;
  const now = options.now ?? Date.now;
  const maxBodyBytes = 64 * 1024;
  const maxPendingPerGateway = 128;
  const counts = { exchanges: 0, forwarded: 0, failures: 0 };
  /** Exchanges this broker has in flight per gateway, and counts gateways reported in answers: spread a burst. */
  const inFlight = new Map<string, number>();
  const reported = new Map<string, { tunnels: number; at: number }>();

  let routing: RedisRouting | undefined;
  if (options.redis) {
    const { connectRedisRouting } = await import('./redis-routing.js');
    routing = await connectRedisRouting({
      url: options.redis.url,
      ...(options.redis.password !== undefined ? { password: options.redis.password } : {}),
      broker: brokerId,
      presenceTtlMs,
      log: options.log,
    });
  }

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

  const localGateways = () => [...sites.values()].flatMap((gateways) => [...gateways.values()]);
  const presenceOf = (gateway: LocalGateway): Presence => ({
    id: gateway.id,
    site: gateway.site,
    broker: brokerId,
    key: gateway.key.toString('base64'),
    targets: gateway.targets,
    tunnels: gateway.tunnels,
  });

  /** The live gateways of a site: this broker's, then (with Redis) the other brokers'. */
  async function candidates(name: string): Promise<Candidate[]> {
    const local: Candidate[] = [...(sites.get(name)?.values() ?? [])].map((gateway) => ({
      id: gateway.id,
      key: gateway.key,
      tunnels: gateway.tunnels,
      local: gateway,
    }));
    if (!routing) return local;
    let shared: Presence[];
    try {
      shared = await routing.gatewaysOf(name);
    } catch {
      if (local.length > 0) return local;
      throw new HttpError(
        503,
        `site '${name.slice(0, 64)}' has no gateway at this broker, and Redis ${routing.shown} is unreachable, so gateways registered at other brokers cannot be reached: use another broker of the site, or bring Redis back`,
      );
    }
    const here = new Set(local.map((candidate) => candidate.id));
    const remote = shared
      .filter((presence) => presence.broker !== brokerId && !here.has(presence.id))
      .map((presence) => {
        const recent = reported.get(presence.id);
        const tunnels = recent && now() - recent.at < presenceTtlMs ? recent.tunnels : presence.tunnels;
        return { id: presence.id, key: Buffer.from(presence.key, 'base64'), tunnels, broker: presence.broker };
      });
    return [...local, ...remote];
  }

  /** Fewest tunnels first (counting this broker's exchanges in flight), ties in random order. */
  const byLoad = (list: Candidate[]) =>
    list
      .map((candidate) => ({ candidate, load: candidate.tunnels + (inFlight.get(candidate.id) ?? 0), tie: Math.random() }))
      .sort((a, b) => a.load - b.load || a.tie - b.tie)
      .map(({ candidate }) => candidate);

  /** One offer to a gateway connected here, bounded by the exchange deadline. */
  function relayLocal(gateway: LocalGateway, offer: Omit<ForwardedOffer, 'gateway'>): Promise<Relayed> {
    if (gateway.pending.size >= maxPendingPerGateway)
      throw new HttpError(429, `the gateway of site '${gateway.site}' has ${maxPendingPerGateway} exchanges in flight: try again`);
    return new Promise<Relayed>((resolve) => {
      const timer = setTimeout(() => {
        gateway.pending.delete(offer.id);
        resolve(undefined);
      }, exchangeTimeoutMs);
      gateway.pending.set(offer.id, (message) => {
        clearTimeout(timer);
        gateway.pending.delete(offer.id);
        if (message.type === 'answer' && message.tunnels !== undefined) gateway.tunnels = message.tunnels;
        resolve(message);
      });
      send(gateway.socket, {
        type: 'offer',
        id: offer.id,
        sealed: offer.sealed,
        client: offer.client,
        iceServers: offer.iceServers as IceServer[],
      });
    });
  }

  // Offers other brokers relay to a gateway of ours.
  routing?.onOffer(async (offer) => {
    const gateway = localGateways().find((candidate) => candidate.id === offer.gateway);
    if (!gateway) return { missing: true };
    counts.forwarded += 1;
    const answer = await relayLocal(gateway, offer).catch((error: unknown): Relayed => {
      if (error instanceof HttpError) return { type: 'answer', id: offer.id, status: error.status, error: error.message };
      return undefined;
    });
    if (answer === undefined) return { status: 504, error: `the gateway did not answer within ${exchangeTimeoutMs / 1000} s` };
    if (answer.type === 'gone') return { missing: true };
    if (answer.type !== 'answer') return { status: 502, error: 'the gateway sent something other than an answer' };
    return {
      ...(answer.sealed !== undefined ? { sealed: answer.sealed } : {}),
      ...(answer.status !== undefined ? { status: answer.status } : {}),
      ...(answer.error !== undefined ? { error: answer.error } : {}),
      tunnels: gateway.tunnels,
    };
  });

  async function route(request: IncomingMessage, response: ServerResponse): Promise<unknown> {
    const path = (request.url ?? '').split('?')[0] ?? '';
    if (path === '/healthz' && request.method === 'GET') return health();
    const match = /^\/sites\/([^/]+)\/v1\/(key|tunnels)$/.exec(path);
    if (!match) throw new HttpError(404, 'not found (a site is reached as /sites/NAME)');
    const name = decodeURIComponent(match[1]!);
    try {
      return await exchange(name, match[2] as 'key' | 'tunnels', request, response);
    } catch (error) {
      counts.failures += 1;
      throw error;
    }
  }

  async function exchange(name: string, what: 'key' | 'tunnels', request: IncomingMessage, response: ServerResponse): Promise<unknown> {
    const noGateway = () =>
      new HttpError(
        404,
        `no gateway is registered for site '${name.slice(0, 64)}' at this broker${routing ? ' or any broker sharing its Redis' : ''}`,
      );
    const exchangeId = randomBytes(8).toString('hex');
    if (what === 'key') {
      if (request.method !== 'GET') throw new HttpError(405, 'use GET');
      const [first] = await candidates(name);
      if (!first) throw noGateway();
      return { kem: 'X25519', key: first.key.toString('base64'), iceServers: iceFor(`pam-client-${exchangeId}`) };
    }
    if (request.method !== 'POST') throw new HttpError(405, 'use POST');
    const body = await readBodyBytes(request, maxBodyBytes).catch((error: unknown) => {
      throw error instanceof BodyTooLarge ? new HttpError(413, error.message) : error;
    });
    const offer = {
      id: exchangeId,
      sealed: body.toString('base64'),
      client: request.socket.remoteAddress ?? 'unknown',
      iceServers: iceFor(`pam-gateway-${exchangeId}`),
    };
    const tried = new Set<string>();
    // A gateway or broker that vanished since the list was read is skipped: the next one is asked.
    for (let round = 0; round < 4; round += 1) {
      const next = byLoad(await candidates(name)).find((candidate) => !tried.has(candidate.id));
      if (!next) {
        if (tried.size === 0) throw noGateway();
        throw new HttpError(502, `every gateway of site '${name}' went away during the exchange`);
      }
      tried.add(next.id);
      inFlight.set(next.id, (inFlight.get(next.id) ?? 0) + 1);
      let answer: ForwardedAnswer | 'gone' | 'timeout';
      try {
        answer = await ask(next, offer);
      } finally {
        const left = (inFlight.get(next.id) ?? 1) - 1;
        if (left > 0) inFlight.set(next.id, left);
        else inFlight.delete(next.id);
      }
      if (answer === 'gone') continue;
      if (answer === 'timeout')
        throw new HttpError(504, `the gateway of site '${name}' did not answer within ${exchangeTimeoutMs / 1000} s`);
      if (answer.sealed === undefined) throw new HttpError(answer.status ?? 502, answer.error ?? 'the gateway refused the request');
      counts.exchanges += 1;
      const sealed = Buffer.from(answer.sealed, 'base64');
      response.writeHead(200, { 'content-type': sealedContentType, 'content-length': sealed.length });
      response.end(sealed);
      return undefined;
    }
    throw new HttpError(502, `the gateways of site '${name}' kept going away during the exchange: try again`);
  }

  /** Relay to a gateway here or through Redis to its broker; `gone` when it is not there any more. */
  async function ask(candidate: Candidate, offer: Omit<ForwardedOffer, 'gateway'>): Promise<ForwardedAnswer | 'gone' | 'timeout'> {
    if (candidate.local) {
      const answer = await relayLocal(candidate.local, offer);
      if (answer === undefined) return 'timeout';
      if (answer.type === 'gone') return 'gone';
      if (answer.type !== 'answer') return { status: 502, error: 'the gateway sent something other than an answer' };
      return answer;
    }
    if (!routing || candidate.broker === undefined) return 'gone';
    counts.forwarded += 1;
    let answer: Awaited<ReturnType<RedisRouting['forward']>>;
    try {
      answer = await routing.forward(candidate.broker, { ...offer, gateway: candidate.id }, exchangeTimeoutMs);
    } catch {
      throw new HttpError(
        503,
        `the gateway chosen for this tunnel is at another broker and Redis ${routing.shown} is unreachable: try again, or use the broker the gateway is connected to`,
      );
    }
    if (answer === 'nobody' || answer === 'timeout') return answer === 'nobody' ? 'gone' : 'timeout';
    if (answer.missing) return 'gone';
    if (answer.tunnels !== undefined) reported.set(candidate.id, { tunnels: answer.tunnels, at: now() });
    return answer;
  }

  function health(): BrokerHealth {
    const gateways = localGateways().length;
    return {
      ok: true,
      broker: true,
      id: brokerId,
      redis: routing ? (routing.up() ? 'up' : 'down') : 'off',
      sites: sites.size,
      gateways,
      ...counts,
    };
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

  const keyRefusal = (site: string, held: Buffer, presented: Buffer) =>
    `site '${site}' is served with gateway key ${keyFingerprint(held)}, this gateway presents ${keyFingerprint(presented)}: ` +
    'every gateway of a site must have the same key (copy the --key-file), or choose another --site';

  function forget(gateway: LocalGateway): void {
    const held = sites.get(gateway.site);
    if (held?.get(gateway.id) !== gateway) return;
    held.delete(gateway.id);
    if (held.size === 0) sites.delete(gateway.site);
    inFlight.delete(gateway.id);
    routing?.release(gateway).catch(() => undefined);
    for (const settle of [...gateway.pending.values()]) settle({ type: 'gone' });
  }

  /** Presence in Redis, refreshed well within its lifetime; a key that lost the race for its site is refused. */
  async function publish(gateway: LocalGateway): Promise<void> {
    if (!routing?.up()) return;
    const held = await routing.claim(presenceOf(gateway)).catch(() => undefined);
    if (held === undefined) return;
    options.log(`refused gateway ${gateway.id} of site ${gateway.site} from ${gateway.from}: another key holds the site in Redis`);
    forget(gateway);
    refuse(gateway.socket, keyRefusal(gateway.site, Buffer.from(held, 'base64'), gateway.key));
  }
  const refresh = setInterval(() => void Promise.all(localGateways().map(publish)), Math.max(250, Math.floor(presenceTtlMs / 3)));
  routing?.onReady(() => void Promise.all(localGateways().map(publish)));

  function accept(ws: WebSocket, from: string): void {
    let gateway: LocalGateway | undefined;
    const registerDeadline = setTimeout(() => ws.close(4400, 'no registration'), 10_000);
    heartbeat(ws, pingIntervalMs, () =>
      options.log(`${gateway ? `gateway ${gateway.id} of site ${gateway.site}` : `gateway from ${from}`}: no pong, dropped`),
    );
    ws.on('error', () => undefined);
    ws.on('close', () => {
      clearTimeout(registerDeadline);
      if (gateway && sites.get(gateway.site)?.get(gateway.id) === gateway) {
        forget(gateway);
        options.log(`gateway ${gateway.id} of site ${gateway.site} unregistered (it went away)`);
      }
    });
    ws.on('message', (data) => {
      const message = parseMessage(data.toString());
      if (!message) return void ws.close(4400, 'not a broker protocol message');
      if (message.type === 'register') {
        if (gateway) return;
        clearTimeout(registerDeadline);
        void register(ws, from, message).then((registered) => {
          gateway = registered;
        });
        return;
      }
      if (!gateway) return;
      if (message.type === 'load') gateway.tunnels = message.tunnels;
      else if (message.type === 'answer') gateway.pending.get(message.id)?.(message);
    });
  }

  async function register(
    ws: WebSocket,
    from: string,
    message: Extract<GatewayToBroker, { type: 'register' }>,
  ): Promise<LocalGateway | undefined> {
    if (message.protocol !== brokerProtocol || message.id === '') {
      refuse(ws, `this broker speaks protocol ${brokerProtocol}, the gateway ${message.protocol}: run the same pam version`);
      return undefined;
    }
    if (!siteNamePattern.test(message.site)) {
      refuse(ws, `site name '${message.site.slice(0, 64)}' must match ${siteNamePattern}`);
      return undefined;
    }
    const key = Buffer.from(message.key, 'base64');
    if (key.length !== 32) {
      refuse(ws, 'the gateway key must be 32 bytes of X25519');
      return undefined;
    }
    const gateway: LocalGateway = {
      id: message.id,
      site: message.site,
      socket: ws,
      key,
      targets: message.targets,
      from,
      since: new Date(now()).toISOString(),
      tunnels: message.tunnels,
      pending: new Map(),
    };
    const other = [...(sites.get(message.site)?.values() ?? [])].find((held) => !held.key.equals(key));
    let held = other?.key;
    if (!held && routing?.up()) {
      const shared = await routing.claim(presenceOf(gateway)).catch(() => undefined);
      if (shared !== undefined) held = Buffer.from(shared, 'base64');
    }
    if (held) {
      options.log(
        `refused a gateway for site ${message.site} from ${from}: its key ${keyFingerprint(key)} is not the site's ${keyFingerprint(held)}`,
      );
      refuse(ws, keyRefusal(message.site, held, key));
      return undefined;
    }
    if (ws.readyState !== ws.OPEN) return undefined;
    const gateways = sites.get(gateway.site) ?? new Map<string, LocalGateway>();
    sites.set(gateway.site, gateways);
    const previous = gateways.get(gateway.id);
    if (previous) {
      // The same gateway again (its old link has not timed out yet): the new link wins.
      forget(previous);
      previous.socket.terminate();
    }
    gateways.set(gateway.id, gateway);
    if (routing && !routing.up())
      options.log(`Redis ${routing.shown} is unreachable: site ${gateway.site} is reachable through this broker only, for now`);
    options.log(
      `site ${gateway.site} registered from ${from} (targets: ${gateway.targets.join(', ')}; gateway key ${keyFingerprint(key)}; gateway ${gateway.id}, ${gateways.size} at this broker)`,
    );
    send(ws, { type: 'registered', site: gateway.site });
    return gateway;
  }

  const { url, port } = await listenOn(server, options.host, options.port, options.tls !== undefined).catch(async (error: unknown) => {
    clearInterval(refresh);
    await routing?.close();
    throw error;
  });
  return {
    url,
    port,
    sites: () => [...sites.keys()],
    health,
    async close() {
      clearInterval(refresh);
      // Other brokers stop routing here at once, instead of when the presence expires.
      await Promise.all(localGateways().map((gateway) => routing?.release(gateway).catch(() => undefined)));
      for (const client of sockets.clients) client.terminate();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
      await routing?.close();
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

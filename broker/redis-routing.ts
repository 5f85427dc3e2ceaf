// Shared routing for several `pam broker --redis` processes: which gateways of a site are live, at
// which broker, with how many tunnels (expiring keys each broker refreshes), the site's key (one per
// site, first come), and exchanges relayed to the broker holding the chosen gateway over pub/sub.
// Redis holds no secret: gateway public keys, target names, counts and sealed bytes in flight.

import { Redis } from 'ioredis';
import { TunnelError } from '../machines/errors.js';
import { parseRedisUrl, redactRedisUrl } from './url.js';

/** What Redis knows of one live gateway (a hash at `pam:gw:<id>`, expiring unless refreshed). */
export interface Presence {
  readonly id: string;
  readonly site: string;
  /** The broker the gateway's WebSocket is connected to. */
  readonly broker: string;
  /** The site key (base64 X25519), the same for every gateway of the site. */
  readonly key: string;
  readonly targets: readonly string[];
  readonly tunnels: number;
}

/** An offer relayed to the broker that holds the gateway. */
export interface ForwardedOffer {
  readonly id: string;
  readonly gateway: string;
  readonly sealed: string;
  readonly client: string;
  readonly iceServers: unknown[];
}

/** The gateway's reply, or `missing` when the gateway is no longer at that broker. */
export interface ForwardedAnswer {
  readonly sealed?: string;
  readonly status?: number;
  readonly error?: string;
  readonly missing?: boolean;
  /** The gateway's tunnel count after this exchange. */
  readonly tunnels?: number;
}

/** Redis cannot be reached: the broker routes only for its own gateways until it can again. */
export class RoutingDown extends Error {}

export interface RedisRoutingOptions {
  /** redis://[user:password@]HOST:PORT[/DB]; the password may come from `password` instead. */
  readonly url: string;
  readonly password?: string;
  /** This broker's id (random per process): its pub/sub channel and the owner field of its gateways. */
  readonly broker: string;
  /** How long a presence outlives its last refresh. */
  readonly presenceTtlMs: number;
  readonly log: (line: string) => void;
}

export interface RedisRouting {
  /** Where it points, without credentials (for logs, errors, /healthz). */
  readonly shown: string;
  up(): boolean;
  /** Publish or refresh a gateway's presence; returns the site's other key when it differs (nothing is written then). */
  claim(presence: Presence): Promise<string | undefined>;
  /** Remove a gateway's presence if this broker still owns it. */
  release(presence: Pick<Presence, 'id' | 'site'>): Promise<void>;
  /** Live gateways of a site at every broker. */
  gatewaysOf(site: string): Promise<Presence[]>;
  /** Relay an offer to `broker`; `nobody` when that broker is not listening (it died). */
  forward(broker: string, offer: ForwardedOffer, deadlineMs: number): Promise<ForwardedAnswer | 'nobody' | 'timeout'>;
  /** Offers other brokers relay to this one's gateways. */
  onOffer(handler: (offer: ForwardedOffer) => Promise<ForwardedAnswer>): void;
  /** Each time Redis becomes reachable (again): re-publish presence, it may have lost everything. */
  onReady(handler: () => void): void;
  close(): Promise<void>;
}

const channel = (broker: string) => `pam:broker:${broker}`;
const gatewayKey = (id: string) => `pam:gw:${id}`;
const siteSet = (site: string) => `pam:site:${site}:gateways`;
const siteKey = (site: string) => `pam:site:${site}:key`;

// One round trip, atomic: the site key is first come; a gateway with another key writes nothing.
const claimScript = `
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then return held end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[3], 'site', ARGV[4], 'broker', ARGV[5], 'key', ARGV[1], 'targets', ARGV[6], 'tunnels', ARGV[7])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return false`;

// Only the owner removes a presence: a gateway that moved to another broker keeps its new one.
const releaseScript = `
if redis.call('HGET', KEYS[1], 'broker') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[2])
end
return 1`;

export async function connectRedisRouting(options: RedisRoutingOptions): Promise<RedisRouting> {
  const target = parseRedisUrl(options.url);
  const shown = redactRedisUrl(options.url);
  const password = options.password ?? target.password;
  const connection = {
    host: target.host,
    port: target.port,
    db: target.db,
    ...(target.username !== undefined ? { username: target.username } : {}),
    ...(password !== undefined ? { password } : {}),
    // Fail fast while Redis is away (the broker answers 503 meanwhile) and keep trying to come back.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: 2_000,
    connectTimeout: 2_000,
    retryStrategy: (times: number) => Math.min(100 * times, 1_000),
    lazyConnect: true,
  };
  const commands = new Redis(connectionName(connection, 'commands'));
  // Subscribes itself on every (re)connect, so an offer never finds this broker deaf after Redis returns.
  const subscriber = new Redis(connectionName({ ...connection, autoResubscribe: false }, 'subscriber'));
  let subscribed = false;
  const waiting = new Map<string, (answer: ForwardedAnswer) => void>();
  let offerHandler: ((offer: ForwardedOffer) => Promise<ForwardedAnswer>) | undefined;
  const readyHandlers: Array<() => void> = [];
  let wasUp = false;
  let lastError = '';
  let closing = false;

  for (const client of [commands, subscriber]) {
    client.on('error', (error: Error & { code?: string }) => {
      const text = error.code ?? error.message;
      if (text !== lastError && !closing) options.log(`Redis ${shown}: ${text}`);
      lastError = text;
    });
  }
  const up = () => commands.status === 'ready' && subscribed;
  const becameReady = () => {
    if (!up() || wasUp) return;
    if (lastError !== '') options.log(`Redis ${shown} is reachable again: routing across brokers`);
    wasUp = true;
    lastError = '';
    for (const handler of readyHandlers) handler();
  };
  commands.on('ready', becameReady);
  subscriber.on('ready', () => {
    subscriber.subscribe(channel(options.broker)).then(
      () => {
        subscribed = true;
        becameReady();
      },
      () => undefined,
    );
  });
  // Whichever connection notices first says so, once: the two close in either order when Redis stops.
  const lost = () => {
    if (wasUp && !closing) options.log(`lost Redis ${shown}: routing only for this broker's own gateways until it is back`);
    wasUp = false;
  };
  subscriber.on('close', () => {
    subscribed = false;
    lost();
  });
  commands.on('close', lost);

  subscriber.on('message', (_channel: string, text: string) => {
    let message: { type?: unknown; id?: unknown; reply?: unknown } & Record<string, unknown>;
    try {
      message = JSON.parse(text) as typeof message;
    } catch {
      return;
    }
    if (typeof message.id !== 'string') return;
    if (message.type === 'answer') {
      waiting.get(message.id)?.({
        ...(typeof message.sealed === 'string' ? { sealed: message.sealed } : {}),
        ...(typeof message.status === 'number' ? { status: message.status } : {}),
        ...(typeof message.error === 'string' ? { error: message.error } : {}),
        ...(message.missing === true ? { missing: true } : {}),
        ...(typeof message.tunnels === 'number' ? { tunnels: message.tunnels } : {}),
      });
      return;
    }
    if (message.type !== 'offer' || typeof message.reply !== 'string' || !offerHandler) return;
    const { gateway, sealed, client, iceServers } = message;
    if (typeof gateway !== 'string' || typeof sealed !== 'string' || typeof client !== 'string' || !Array.isArray(iceServers)) return;
    const reply = message.reply;
    const id = message.id;
    offerHandler({ id, gateway, sealed, client, iceServers }).then(
      (answer) => commands.publish(channel(reply), JSON.stringify({ type: 'answer', id, ...answer })).catch(() => undefined),
      () => undefined,
    );
  });

  const guarded = async <T>(run: () => Promise<T>): Promise<T> => {
    if (!up()) throw new RoutingDown(`Redis ${shown} is unreachable`);
    try {
      return await run();
    } catch (error) {
      throw new RoutingDown(`Redis ${shown}: ${(error as Error).message}`);
    }
  };

  // Both connect now; a Redis that is down at start is not fatal (degraded until it comes), a refused password is.
  let refusal: string | undefined;
  for (const client of [commands, subscriber]) {
    client.on('error', (error: Error) => {
      const match = /^(WRONGPASS|NOAUTH|NOPERM)\b/.exec(error.message);
      if (match) refusal = match[1];
    });
  }
  await Promise.all([commands, subscriber].map((client) => client.connect().catch(() => undefined)));
  if (refusal !== undefined) {
    closing = true;
    commands.disconnect();
    subscriber.disconnect();
    throw new TunnelError(
      'usage',
      `Redis ${shown} refused the credentials (${refusal}): set PAM_REDIS_PASSWORD (or user:password@ in --redis)`,
    );
  }
  // Wait a moment for the subscription, so a broker that starts with Redis up says so.
  if (!up()) {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 2_000);
      readyHandlers.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
  return {
    shown,
    up,
    claim: (presence) =>
      guarded(async () => {
        const held = await commands.eval(
          claimScript,
          3,
          siteKey(presence.site),
          siteSet(presence.site),
          gatewayKey(presence.id),
          presence.key,
          String(options.presenceTtlMs),
          presence.id,
          presence.site,
          presence.broker,
          presence.targets.join(','),
          String(presence.tunnels),
        );
        return typeof held === 'string' ? held : undefined;
      }),
    release: (presence) =>
      guarded(async () => {
        await commands.eval(releaseScript, 2, gatewayKey(presence.id), siteSet(presence.site), options.broker, presence.id);
      }),
    gatewaysOf: (site) =>
      guarded(async () => {
        const ids = await commands.smembers(siteSet(site));
        if (ids.length === 0) return [];
        const pipeline = commands.pipeline();
        for (const id of ids) pipeline.hgetall(gatewayKey(id));
        const rows = (await pipeline.exec()) ?? [];
        const live: Presence[] = [];
        const expired: string[] = [];
        ids.forEach((id, index) => {
          const row = rows[index]?.[1] as Record<string, string> | undefined;
          if (!row || row.broker === undefined || row.key === undefined) {
            expired.push(id);
            return;
          }
          live.push({
            id,
            site,
            broker: row.broker,
            key: row.key,
            targets: (row.targets ?? '').split(',').filter(Boolean),
            tunnels: Number(row.tunnels) || 0,
          });
        });
        if (expired.length > 0) await commands.srem(siteSet(site), ...expired);
        return live;
      }),
    forward: (broker, offer, deadlineMs) =>
      guarded(async () => {
        const answered = new Promise<ForwardedAnswer | 'timeout'>((resolve) => {
          const timer = setTimeout(() => {
            waiting.delete(offer.id);
            resolve('timeout');
          }, deadlineMs);
          waiting.set(offer.id, (answer) => {
            clearTimeout(timer);
            waiting.delete(offer.id);
            resolve(answer);
          });
        });
        const receivers = await commands
          .publish(channel(broker), JSON.stringify({ type: 'offer', reply: options.broker, ...offer }))
          .catch((error: unknown) => {
            waiting.get(offer.id)?.({ missing: true });
            throw error;
          });
        if (receivers === 0) {
          waiting.get(offer.id)?.({ missing: true });
          await answered;
          return 'nobody';
        }
        return answered;
      }),
    onOffer: (handler) => {
      offerHandler = handler;
    },
    onReady: (handler) => {
      readyHandlers.push(handler);
      if (up()) handler();
    },
    async close() {
      closing = true;
      for (const settle of [...waiting.values()]) settle({ missing: true });
      await Promise.all([commands.quit().catch(() => commands.disconnect()), subscriber.quit().catch(() => subscriber.disconnect())]);
    },
  };
}

function connectionName<T extends object>(connection: T, role: string): T & { connectionName: string } {
  return { ...connection, connectionName: `pam-broker-${role}` };
}

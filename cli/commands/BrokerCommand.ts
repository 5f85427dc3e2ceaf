// `pam broker`: the rendezvous for gateways that have no inbound port (broker/server.ts).

import { readFileSync } from 'node:fs';
import { Command, Option } from 'clipanion';
import { PamCommand } from '../pam-command.js';
import { SingleString } from '../single-option.js';
import { TunnelError } from '../../machines/errors.js';
import { iceServers, iceServerUrls } from '../config.js';
import { parseHostPort, readBrokerToken, readTls, stopSignal } from './GatewayCommand.js';

export class BrokerCommand extends PamCommand {
  static override paths = [['broker']];

  static override usage = Command.Usage({
    category: 'Gateway',
    description: 'run a broker: the rendezvous between clients and gateways that have no inbound port',
    details: `
      Gateways started with --broker URL --site NAME dial in over a WebSocket, authenticated by
      PAM_BROKER_TOKEN (the same value here and on each gateway, at least 16 characters: make one with
      \`openssl rand -hex 32\`; a wrong token is refused and logged).
      Clients reach a site with --gateway http(s)://BROKER/sites/NAME: the broker hands them the
      site's gateway key and its ICE servers, relays their sealed offer to the gateway and the sealed
      answer back. It cannot read or alter either (they are sealed to the gateway's key, which clients
      pin), keeps no state beyond one exchange and never carries tunnel bytes.

      --ice-server URLs are handed to both ends of every exchange. With --turn-secret-file (coturn's
      static-auth-secret), each turn: URL gets TURN REST credentials minted per exchange (username
      \`expiry:label\`, password base64 HMAC-SHA1), valid 12 hours; otherwise TURN credentials come from
      PAM_ICE_USERNAME/PAM_ICE_CREDENTIAL. Stops on SIGINT/SIGTERM.

      A site may have several gateways, all with the site's key (the same --key-file); a new tunnel
      goes to the live one with the fewest tunnels, and a gateway with another key is refused.
      Without --redis, routing is in memory: a client reaches the gateways registered at this broker.
      With --redis redis://HOST:PORT[/DB] (password from PAM_REDIS_PASSWORD or the URL, never shown),
      brokers share routing: a gateway registered at one is reachable through all, its presence
      expires within seconds of its broker dying, and an exchange is relayed to the gateway's broker
      over pub/sub. While Redis is unreachable the broker still routes to its own gateways and answers
      503 (naming Redis) for the others, until Redis is back. GET /healthz reports the counts.
    `,
    examples: [
      ['A broker on loopback for a local test', 'PAM_BROKER_TOKEN=$(openssl rand -hex 32) $0 broker --listen 127.0.0.1:8443'],
      [
        'One of several brokers behind a load balancer, sharing routing through Redis',
        'PAM_REDIS_PASSWORD=… $0 broker --listen 0.0.0.0:8443 --redis redis://redis.internal:6379/0',
      ],
      [
        'A public broker with TLS, STUN and coturn with minted credentials',
        '$0 broker --listen 0.0.0.0:8443 --tls-cert /etc/pam/broker.crt --tls-key /etc/pam/broker.key --ice-server stun:turn.example:3478 --ice-server turn:turn.example:3478 --turn-secret-file /etc/pam/turn-secret',
      ],
    ],
  });

  listen = SingleString('--listen', '127.0.0.1:8443', { description: 'address:port for clients and gateways (default 127.0.0.1:8443)' });
  tlsCert = SingleString('--tls-cert', { description: 'PEM certificate: serve HTTPS and WSS (with --tls-key)' });
  tlsKey = SingleString('--tls-key', { description: 'PEM private key for --tls-cert' });
  iceServers = Option.Array('--ice-server', [], { description: 'stun:/turn: URL handed to both ends of every exchange (repeatable)' });
  turnSecretFile = SingleString('--turn-secret-file', {
    description: "file holding coturn's static-auth-secret: mint TURN REST credentials per exchange",
  });
  redis = SingleString('--redis', {
    description: 'redis://HOST:PORT[/DB]: share routing with other brokers (password: $PAM_REDIS_PASSWORD)',
  });
  json = Option.Boolean('--json', false, { description: 'print JSON lines instead of prose' });

  async execute(): Promise<number> {
    const listen = parseHostPort(this.listen, '--listen', '127.0.0.1:8443 (port 0 picks a free one)');
    const token = readBrokerToken(this.context.env);
    const tls = readTls(this.tlsCert, this.tlsKey);
    const turnSecret = this.turnSecretFile !== undefined ? readSecret(this.turnSecretFile) : undefined;
    // With a secret the broker mints TURN credentials itself; without one they come from the environment.
    const servers = turnSecret !== undefined ? iceServerUrls(this.iceServers) : iceServers(this.iceServers, this.context.env);
    if (turnSecret !== undefined && !servers.some((server) => server.urls.startsWith('turn'))) {
      throw new TunnelError(
        'usage',
        '--turn-secret-file mints credentials for turn: servers: add at least one --ice-server turn:HOST[:PORT]',
      );
    }
    const redisPassword = this.context.env.PAM_REDIS_PASSWORD;
    const redis = this.redis !== undefined ? { url: this.redis, ...(redisPassword ? { password: redisPassword } : {}) } : undefined;
    // Never echoed with its userinfo, nor the password anywhere in what this process prints.
    const secrets = [redisPassword, redis ? safeUserinfo(redis.url) : undefined].filter((text): text is string => !!text);
    const redact = (line: string) => secrets.reduce((text, secret) => text.split(secret).join('…'), line);
    const log = (line: string) => this.context.stderr.write(`pam broker: ${redact(line)}\n`);
    const [{ startBroker }, { redactRedisUrl, parseRedisUrl }] = await Promise.all([
      import('../../broker/server.js'),
      import('../../broker/url.js'),
    ]);
    if (redis) parseRedisUrl(redis.url);
    const broker = await startBroker({
      host: listen.host,
      port: listen.port,
      token,
      log,
      iceServers: servers,
      ...(turnSecret !== undefined ? { turnSecret } : {}),
      ...(tls ? { tls } : {}),
      ...(redis ? { redis } : {}),
    });
    const shared = redis ? redactRedisUrl(redis.url) : undefined;
    const health = broker.health();
    this.context.stdout.write(
      this.json
        ? `${JSON.stringify({ event: 'listening', url: broker.url, port: broker.port, id: health.id, redis: shared ?? null, iceServers: servers.map((server) => server.urls), mintsTurnCredentials: turnSecret !== undefined })}\n`
        : `pam broker: listening on ${broker.url} (sites at ${broker.url}/sites/NAME; routing ${shared ? `shared through Redis ${shared} (${health.redis})` : 'in memory'}${servers.length > 0 ? `; ICE: ${servers.map((server) => server.urls).join(', ')}` : ''})\n`,
    );
    const signal = await stopSignal();
    log(`${signal}: closing`);
    await broker.close();
    return 0;
  }
}

/** The `user:password` of a redis:// URL, to redact wherever it could show up. */
function safeUserinfo(text: string): string | undefined {
  const match = /^[a-z]+:\/\/([^/@]+)@/i.exec(text);
  return match?.[1];
}

function readSecret(path: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8').trim();
  } catch (error) {
    throw new TunnelError('usage', `cannot read --turn-secret-file ${path} (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
  }
  if (text === '') throw new TunnelError('usage', `--turn-secret-file ${path} is empty: put coturn's static-auth-secret in it`);
  return text;
}

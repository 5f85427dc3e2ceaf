// The real checks behind `pam tunnel diagnose` (machines/diagnose.ts, DiagnosePorts): HTTP(S) to the
// broker or gateway, the site's key (checked against the pin), STUN Binding and TURN Allocate
// (adapters/stun-client.ts), and a real tunnel through the transport the CLI hands in.

import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect } from 'node:net';
import { TunnelError } from '../machines/errors.js';
import type { DiagnosePorts, StunServerRef, TurnServerRef } from '../machines/diagnose.js';
import type { Transport } from '../machines/ports.js';
import { type IceServer, parseIceUrl } from './ice-options.js';
import { keyFingerprint } from './key-fingerprint.js';
import type { GatewayKeyCheck } from './known-gateways.js';
import { fetchKey, signallingUrl } from './peer-transport.js';
import { openStunChannel, stunBinding, turnAllocate } from './stun-client.js';
import { createTcpListenerFactory } from './tcp-listener.js';

export interface DiagnoseChecksOptions {
  /** --ice-server / env servers, tried with whatever the broker hands out. */
  readonly iceServers: readonly IceServer[];
  readonly keys: GatewayKeyCheck;
  /** Loaded only for the test tunnel (it imports a WebRTC library). */
  readonly transport: () => Transport;
  /** Deadline of each network step. */
  readonly timeoutMs: number;
}

export interface DiagnoseChecks extends DiagnosePorts {
  /** Close the sockets the STUN steps kept open (one local port for both servers). */
  close(): void;
}

const brokerSite = /^(.*)\/sites\/[^/]+\/?$/;

const tlsCodes = /CERT|SSL|TLS|SELF_SIGNED|UNABLE_TO_VERIFY|DEPTH_ZERO|HOSTNAME/;

/** A GET that says what answered (any HTTP status means reachable); network and TLS errors name the fix. */
function probe(url: URL, timeoutMs: number): Promise<{ status: number; body: string }> {
  const requestFn = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const request = requestFn(url, { method: 'GET', agent: false, signal: AbortSignal.timeout(timeoutMs) });
    request.on('error', (error: NodeJS.ErrnoException) => {
      const code = error.code ?? error.name;
      if (tlsCodes.test(code ?? ''))
        reject(
          new TunnelError(
            'gatewayUnreachable',
            `TLS to ${url.origin} failed (${code}: ${error.message}); trust its CA with NODE_EXTRA_CA_CERTS=FILE`,
          ),
        );
      else if (code === 'AbortError' || code === 'ABORT_ERR')
        reject(new TunnelError('gatewayUnreachable', `${url.origin} did not answer within ${timeoutMs / 1000} s`));
      else reject(new TunnelError('gatewayUnreachable', `${url.origin} is unreachable (${code ?? error.message})`));
    });
    request.on('response', (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => {
        if (body.length < 4096) body += chunk;
      });
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
    });
    request.end();
  });
}

function endpoints(servers: readonly IceServer[]): { stun: StunServerRef[]; turn: TurnServerRef[] } {
  const stun: StunServerRef[] = [];
  const turn: TurnServerRef[] = [];
  for (const server of servers) {
    const url = parseIceUrl(server.urls);
    if (!url || url.scheme === 'turns') continue;
    const ref = { host: url.host, port: url.port ?? 3478, transport: url.transport ?? 'udp' } as const;
    if (url.scheme === 'stun') stun.push(ref);
    else if (server.username && server.credential) turn.push({ ...ref, username: server.username, credential: server.credential });
  }
  return { stun, turn };
}

export function createDiagnoseChecks(options: DiagnoseChecksOptions): DiagnoseChecks {
  const sockets = new Map<number, Promise<UdpSocket>>();
  const udpSocket = (id: number) => {
    let socket = sockets.get(id);
    if (!socket) {
      socket = new Promise<UdpSocket>((resolve) => {
        const udp = createSocket('udp4');
        udp.bind(0, () => resolve(udp));
      });
      sockets.set(id, socket);
    }
    return socket;
  };

  return {
    async reach(url) {
      const base = brokerSite.exec(new URL(url).pathname) ? url.replace(/\/sites\/[^/]+\/?$/, '') : url;
      const health = signallingUrl(base, '/healthz');
      const answer = await probe(health, options.timeoutMs);
      const tls = health.protocol === 'https:' ? ', TLS accepted' : '';
      let broker = false;
      try {
        broker = (JSON.parse(answer.body) as { broker?: unknown }).broker === true;
      } catch {
        // not JSON: still an HTTP server that answered
      }
      return `${health.origin} answers (HTTP ${answer.status} for /healthz${broker ? ', a pam broker' : ''}${tls}); the gateway token is checked by the test tunnel`;
    },

    async site(url) {
      const hello = await fetchKey(url, AbortSignal.timeout(options.timeoutMs));
      options.keys.verify(url, hello.key);
      return {
        broker: brokerSite.test(new URL(url).pathname),
        fingerprint: keyFingerprint(hello.key),
        ...endpoints([...options.iceServers, ...hello.iceServers]),
      };
    },

    async stunBinding(server, socket) {
      const channel = await openStunChannel(server, options.timeoutMs, server.transport === 'udp' ? await udpSocket(socket) : undefined);
      try {
        return await stunBinding(channel);
      } finally {
        channel.close();
      }
    },

    async turnAllocate(server) {
      const channel = await openStunChannel(server, options.timeoutMs);
      try {
        return await turnAllocate(channel, server.username, server.credential);
      } finally {
        channel.close();
      }
    },

    async testTunnel(url, target) {
      const transport = options.transport();
      const signal = AbortSignal.timeout(Math.max(options.timeoutMs, 20_000));
      const negotiation = await transport.negotiate({ gateway: url, target, signal });
      const link = await transport.establish(negotiation, signal).catch(async (error: unknown) => {
        await negotiation.close().catch(() => undefined);
        throw signal.aborted
          ? new TunnelError('connectTimeout', `no ICE/DTLS path to the gateway within ${Math.max(options.timeoutMs, 20_000) / 1000} s`)
          : error;
      });
      const listener = await createTcpListenerFactory().bind('127.0.0.1', 0);
      try {
        listener.accept((socket) => link.carry(socket));
        const bytes = await exchangeAFewBytes(listener.port, target);
        const path = link.path?.();
        return { path: path?.kind ?? 'unknown', pair: path?.pair ?? 'not reported', bytes };
      } finally {
        await listener.close();
        await link.close();
      }
    },

    close() {
      for (const socket of sockets.values()) void socket.then((udp) => udp.close());
      sockets.clear();
    },
  };
}

/**
 * Connect through the tunnel and read what the target sends first (an SSH or SMTP banner, or nothing
 * for a protocol where the client speaks first) for up to 2 s, at most 64 KiB. A reset means the
 * gateway could not connect to the target.
 */
function exchangeAFewBytes(port: number, target: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    let bytes = 0;
    const finish = (error?: Error) => {
      clearTimeout(timer);
      socket.destroy();
      if (error) reject(error);
      else resolve(bytes);
    };
    const timer = setTimeout(() => finish(), 2_000);
    socket.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      if (bytes >= 64 * 1024) finish();
    });
    socket.on('error', (error: NodeJS.ErrnoException) =>
      finish(
        new TunnelError(
          'gatewayUnreachable',
          `the tunnel is up, but the connection to ${target} was reset (${error.code ?? error.message}): is the target running at the gateway?`,
        ),
      ),
    );
    // The target ended first: end our side too (an orderly close at the target, not a reset), then report.
    socket.on('end', () => {
      clearTimeout(timer);
      socket.once('close', () => resolve(bytes));
      socket.end();
    });
  });
}

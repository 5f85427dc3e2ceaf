// A minimal STUN/TURN client for `pam tunnel diagnose`: an RFC 5389 Binding request (the public
// address a server sees) and an RFC 5766 Allocate with long-term credentials (401, then success),
// over UDP or TCP. Nothing more than a diagnosis needs: no retransmission schedule beyond a few
// resends, no channels, no permissions.

import { createHash, createHmac, randomBytes } from 'node:crypto';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { connect, type Socket as TcpSocket } from 'node:net';

const magicCookie = 0x2112a442;
const method = { binding: 0x0001, allocate: 0x0003, refresh: 0x0004 } as const;
const success = 0x0100;
const attr = {
  mappedAddress: 0x0001,
  username: 0x0006,
  messageIntegrity: 0x0008,
  errorCode: 0x0009,
  lifetime: 0x000d,
  xorRelayedAddress: 0x0016,
  requestedTransport: 0x0019,
  realm: 0x0014,
  nonce: 0x0015,
  xorMappedAddress: 0x0020,
} as const;

export interface StunEndpoint {
  readonly host: string;
  readonly port: number;
  readonly transport: 'udp' | 'tcp';
}

export interface MappedAddress {
  readonly address: string;
  readonly port: number;
}

interface StunMessage {
  readonly type: number;
  readonly id: Buffer;
  readonly attributes: Map<number, Buffer>;
}

function encode(type: number, id: Buffer, attributes: ReadonlyArray<readonly [number, Buffer]>, integrityKey?: Buffer): Buffer {
  const parts: Buffer[] = [];
  for (const [kind, value] of attributes) {
    const header = Buffer.alloc(4);
    header.writeUInt16BE(kind, 0);
    header.writeUInt16BE(value.length, 2);
    parts.push(header, value, Buffer.alloc((4 - (value.length % 4)) % 4));
  }
  let body = Buffer.concat(parts);
  const header = (length: number) => {
    const head = Buffer.alloc(20);
    head.writeUInt16BE(type, 0);
    head.writeUInt16BE(length, 2);
    head.writeUInt32BE(magicCookie, 4);
    id.copy(head, 8);
    return head;
  };
  if (integrityKey) {
    // MESSAGE-INTEGRITY covers the header with the length as if the attribute were already there (RFC 5389 §15.4).
    const mac = createHmac('sha1', integrityKey)
      .update(Buffer.concat([header(body.length + 24), body]))
      .digest();
    const integrity = Buffer.alloc(4);
    integrity.writeUInt16BE(attr.messageIntegrity, 0);
    integrity.writeUInt16BE(20, 2);
    body = Buffer.concat([body, integrity, mac]);
  }
  return Buffer.concat([header(body.length), body]);
}

function decode(packet: Buffer): StunMessage | undefined {
  if (packet.length < 20 || packet.readUInt32BE(4) !== magicCookie) return undefined;
  const length = packet.readUInt16BE(2);
  if (packet.length < 20 + length) return undefined;
  const attributes = new Map<number, Buffer>();
  for (let at = 20; at + 4 <= 20 + length; ) {
    const kind = packet.readUInt16BE(at);
    const size = packet.readUInt16BE(at + 2);
    if (!attributes.has(kind)) attributes.set(kind, packet.subarray(at + 4, at + 4 + size));
    at += 4 + size + ((4 - (size % 4)) % 4);
  }
  return { type: packet.readUInt16BE(0), id: packet.subarray(8, 20), attributes };
}

function xorAddress(value: Buffer | undefined, id: Buffer): MappedAddress | undefined {
  if (!value || value.length < 8) return undefined;
  const port = value.readUInt16BE(2) ^ (magicCookie >>> 16);
  if (value[1] === 0x01) {
    const address = [0, 1, 2, 3].map((i) => value[4 + i]! ^ ((magicCookie >>> (24 - 8 * i)) & 0xff)).join('.');
    return { address, port };
  }
  const mask = Buffer.concat([Buffer.from([0x21, 0x12, 0xa4, 0x42]), id]);
  const bytes = [...value.subarray(4, 20)].map((byte, i) => byte ^ mask[i]!);
  const groups = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  return { address: groups.join(':'), port };
}

function plainAddress(value: Buffer | undefined): MappedAddress | undefined {
  if (!value || value.length < 8 || value[1] !== 0x01) return undefined;
  return { address: [...value.subarray(4, 8)].join('.'), port: value.readUInt16BE(2) };
}

function errorOf(message: StunMessage): { code: number; reason: string } | undefined {
  const value = message.attributes.get(attr.errorCode);
  if (!value || value.length < 4) return undefined;
  return { code: (value[2]! & 0x7) * 100 + value[3]!, reason: value.subarray(4).toString('utf8') };
}

/** One conversation with one server: requests out, responses matched by transaction id. */
export interface StunChannel {
  request(type: number, attributes: ReadonlyArray<readonly [number, Buffer]>, integrityKey?: Buffer): Promise<StunMessage>;
  close(): void;
}

/** A UDP socket (shared across servers, so two servers show whether the NAT keeps the mapping) or a TCP connection. */
export async function openStunChannel(server: StunEndpoint, timeoutMs: number, udp?: UdpSocket): Promise<StunChannel> {
  const waiting = new Map<string, (message: StunMessage) => void>();
  const deliver = (packet: Buffer) => {
    const message = decode(packet);
    if (message) waiting.get(message.id.toString('hex'))?.(message);
  };
  let send: (packet: Buffer) => void;
  let close: () => void;
  if (server.transport === 'udp') {
    const socket = udp ?? createSocket(server.host.includes(':') ? 'udp6' : 'udp4');
    if (!udp) await new Promise<void>((resolve) => socket.bind(0, resolve));
    const onMessage = (packet: Buffer, from: { address: string; port: number }) => {
      if (from.address === server.host && from.port === server.port) deliver(packet);
    };
    socket.on('message', onMessage);
    send = (packet) => socket.send(packet, server.port, server.host);
    close = () => (udp ? void socket.off('message', onMessage) : socket.close());
  } else {
    const socket: TcpSocket = connect({ host: server.host, port: server.port });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`no TCP connection within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        resolve();
      });
      socket.once('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
    });
    let buffered = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= 20 && buffered.length >= 20 + buffered.readUInt16BE(2)) {
        const size = 20 + buffered.readUInt16BE(2);
        deliver(buffered.subarray(0, size));
        buffered = buffered.subarray(size);
      }
    });
    socket.on('error', () => undefined);
    send = (packet) => void socket.write(packet);
    close = () => socket.destroy();
  }
  return {
    request(type, attributes, integrityKey) {
      const id = randomBytes(12);
      const packet = encode(type, id, attributes, integrityKey);
      return new Promise((resolve, reject) => {
        // UDP may lose a request: resend a few times within the deadline (TCP is reliable: sent once).
        const resend = server.transport === 'udp' ? setInterval(() => send(packet), Math.max(100, timeoutMs / 5)) : undefined;
        const timer = setTimeout(() => finish(new Error(`no answer within ${timeoutMs / 1000} s`)), timeoutMs);
        const finish = (error?: Error, message?: StunMessage) => {
          clearTimeout(timer);
          clearInterval(resend);
          waiting.delete(id.toString('hex'));
          if (error) reject(error);
          else resolve(message!);
        };
        waiting.set(id.toString('hex'), (message) => finish(undefined, message));
        send(packet);
      });
    },
    close,
  };
}

/** RFC 5389 Binding: the address and port the server saw this request come from. */
export async function stunBinding(channel: StunChannel): Promise<MappedAddress> {
  const response = await channel.request(method.binding, []);
  const mapped =
    xorAddress(response.attributes.get(attr.xorMappedAddress), response.id) ?? plainAddress(response.attributes.get(attr.mappedAddress));
  if (response.type !== (method.binding | success) || !mapped) {
    const error = errorOf(response);
    throw new Error(`the Binding response carried no mapped address${error ? ` (error ${error.code} ${error.reason})` : ''}`);
  }
  return mapped;
}

/**
 * RFC 5766 Allocate with the long-term credential mechanism: the first request is answered 401 with
 * a realm and nonce, the second carries USERNAME, REALM, NONCE and MESSAGE-INTEGRITY. Resolves with
 * the relayed address; the allocation is released (Refresh, lifetime 0) before returning.
 */
export async function turnAllocate(channel: StunChannel, username: string, password: string): Promise<MappedAddress> {
  const udpTransport = Buffer.from([17, 0, 0, 0]);
  const first = await channel.request(method.allocate, [[attr.requestedTransport, udpTransport]]);
  const challenge = errorOf(first);
  const realm = first.attributes.get(attr.realm);
  const nonce = first.attributes.get(attr.nonce);
  if (first.type === (method.allocate | success)) throw new Error('the server allocated without asking for credentials');
  if (challenge?.code !== 401 || !realm || !nonce) {
    throw new Error(`expected 401 with a realm and nonce, got ${challenge ? `${challenge.code} ${challenge.reason}` : 'something else'}`);
  }
  const key = createHash('md5')
    .update(`${username}:${realm.toString('utf8')}:${password}`)
    .digest();
  const signed = (extra: ReadonlyArray<readonly [number, Buffer]>): Array<readonly [number, Buffer]> => [
    ...extra,
    [attr.username, Buffer.from(username)],
    [attr.realm, realm],
    [attr.nonce, nonce],
  ];
  const second = await channel.request(method.allocate, signed([[attr.requestedTransport, udpTransport]]), key);
  const relayed = xorAddress(second.attributes.get(attr.xorRelayedAddress), second.id);
  if (second.type !== (method.allocate | success) || !relayed) {
    const error = errorOf(second);
    throw new Error(`Allocate refused: ${error ? `${error.code} ${error.reason}` : 'no relayed address'}`);
  }
  const zero = Buffer.alloc(4);
  await channel.request(method.refresh, signed([[attr.lifetime, zero]]), key).catch(() => undefined);
  return relayed;
}

// The local end of a SOCKS tunnel: RFC 1928 on each accepted connection (no-auth method, CONNECT to an
// IPv4, IPv6 or domain-name destination). The destination goes to the gateway, which decides; the
// SOCKS reply is sent only once the gateway answered, with its reply code.

import type { Socket } from 'node:net';
import type { MuxDestination, OpenResult } from './mux.js';

export const socksVersion = 5;
const noAuth = 0x00;
const noAcceptableMethods = 0xff;
const connectCommand = 0x01;
export const socksReplyCode = {
  succeeded: 0x00,
  generalFailure: 0x01,
  commandNotSupported: 0x07,
  addressTypeNotSupported: 0x08,
} as const;

/** A client that has not finished its greeting and request by then is dropped. */
const handshakeTimeoutMs = 10_000;

export type OpenDestination = (socket: Socket, destination: MuxDestination, onOpened: (result: OpenResult) => void) => void;

/** VER · REP · RSV · ATYP 1 · BND.ADDR 0.0.0.0 · BND.PORT 0 (the gateway's bound address is not ours to tell). */
export function socksReply(code: number): Buffer {
  return Buffer.from([socksVersion, code, 0, 1, 0, 0, 0, 0, 0, 0]);
}

type Parsed<T> = { readonly value: T; readonly rest: Buffer } | 'more' | { readonly error: number | 'close' };

function parseGreeting(buffer: Buffer): Parsed<boolean> {
  if (buffer.length < 2) return 'more';
  if (buffer[0] !== socksVersion) return { error: 'close' };
  const count = buffer[1]!;
  if (buffer.length < 2 + count) return 'more';
  const methods = buffer.subarray(2, 2 + count);
  return { value: methods.includes(noAuth), rest: buffer.subarray(2 + count) };
}

function parseRequest(buffer: Buffer): Parsed<MuxDestination> {
  if (buffer.length < 5) return 'more';
  if (buffer[0] !== socksVersion) return { error: 'close' };
  const type = buffer[3];
  let length: number;
  if (type === 1) length = 4;
  else if (type === 4) length = 16;
  else if (type === 3) length = 1 + buffer[4]!;
  else return { error: socksReplyCode.addressTypeNotSupported };
  if (buffer.length < 4 + length + 2) return 'more';
  // The command is checked once the request is whole, so the reply follows the request it answers.
  if (buffer[1] !== connectCommand) return { error: socksReplyCode.commandNotSupported };
  const address = buffer.subarray(4, 4 + length);
  const port = buffer.readUInt16BE(4 + length);
  let host: string;
  if (type === 1) host = [...address].join('.');
  else if (type === 4) host = ipv6Text(address);
  else host = address.subarray(1).toString('latin1');
  if (type === 3 && (host.length === 0 || host.includes('\0'))) return { error: socksReplyCode.generalFailure };
  return { value: { host, port }, rest: buffer.subarray(4 + length + 2) };
}

function ipv6Text(bytes: Buffer): string {
  const groups: string[] = [];
  for (let offset = 0; offset < 16; offset += 2) groups.push(bytes.readUInt16BE(offset).toString(16));
  return new URL(`http://[${groups.join(':')}]`).hostname.slice(1, -1);
}

/**
 * Serve one SOCKS5 client on `socket`: greeting, request, then `open` with the destination. Bytes the
 * client sent after its request are put back, so they are carried once the stream is open.
 */
export function serveSocks(socket: Socket, open: OpenDestination, log?: (line: string) => void): void {
  let buffered: Buffer = Buffer.alloc(0);
  let stage: 'greeting' | 'request' = 'greeting';
  const timer = setTimeout(() => socket.destroy(), handshakeTimeoutMs);
  timer.unref();
  const finish = () => {
    clearTimeout(timer);
    socket.off('data', onData);
    socket.pause();
  };
  const refuse = (code: number | 'close') => {
    finish();
    if (code === 'close') socket.destroy();
    else socket.end(socksReply(code), () => socket.destroy());
  };
  socket.on('error', () => undefined);
  socket.once('close', () => clearTimeout(timer));
  const onData = (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    // A greeting is at most 257 bytes and a request 262: more without either being whole is not SOCKS5.
    const tooLong = buffered.length > 600;
    if (stage === 'greeting') {
      const greeting = parseGreeting(buffered);
      if (greeting === 'more') return tooLong ? refuse('close') : undefined;
      if ('error' in greeting) return refuse(greeting.error);
      if (!greeting.value) {
        finish();
        socket.end(Buffer.from([socksVersion, noAcceptableMethods]), () => socket.destroy());
        return;
      }
      socket.write(Buffer.from([socksVersion, noAuth]));
      stage = 'request';
      buffered = greeting.rest;
    }
    const request = parseRequest(buffered);
    if (request === 'more') return tooLong ? refuse('close') : undefined;
    if ('error' in request) return refuse(request.error);
    finish();
    if (request.rest.length > 0) socket.unshift(request.rest);
    const { host, port } = request.value;
    open(socket, request.value, (result) => {
      if (socket.destroyed) return;
      if (result.ok) {
        socket.write(socksReply(socksReplyCode.succeeded));
        return;
      }
      log?.(
        `SOCKS CONNECT ${host.includes(':') ? `[${host}]` : host}:${port} refused by the gateway (reply ${result.code}): ${result.reason}`,
      );
      socket.end(socksReply(result.code), () => socket.destroy());
    });
  };
  socket.on('data', onData);
  socket.resume();
}

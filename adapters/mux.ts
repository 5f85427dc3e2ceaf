// Many TCP connections over one ordered, reliable message channel (the WebRTC data channel), with
// per-connection credit windows so a slow reader on either side never makes the other buffer without
// bound, half-close and reset carried through, and a keepalive that detects a dead peer.
// Frame: type (u8) · stream id (u32 BE) · payload. Stream 0 carries PING/PONG.
// An OPEN with an empty payload is for the tunnel's named target (its first, with several); one that
// names a target of several carries u8 2 · the name (UTF-8); a SOCKS stream's OPEN carries its
// destination (u8 1 · port u16 BE · host UTF-8) and its OPEN_FAIL a code (u8 SOCKS5 reply · reason).
// Why one multiplexed channel and not a channel per connection: docs/decisions/0002-one-multiplexed-channel.md.

import type { Socket } from 'node:net';

export const frameType = {
  open: 1,
  openOk: 2,
  openFail: 3,
  data: 4,
  window: 5,
  fin: 6,
  rst: 7,
  ping: 8,
  pong: 9,
  /** Orderly end of the whole tunnel, so the peer frees it at once instead of waiting for a timeout. */
  goodbye: 10,
} as const;

const headerBytes = 5;
/** werift refuses messages above 64 KiB; keep every frame below it. */
export const maxPayloadBytes = 60 * 1024;

/**
 * A stream that starts while the channel is cold (see MuxOptions.coldIdleMs) sends its first data
 * frame with at most this much, and each next one twice as much up to maxPayloadBytes. A message is
 * delivered only once all of it arrived, and a fresh or long-idle association sends a few packets per
 * round trip (slow start): a first 60 KiB frame reached the reader four round trips after the target
 * sent it, a 1 KiB one (one SCTP packet) in the first (decision 0017). On a busy channel the small
 * frames would only cost: 1,000 connections × 64 KiB took 15–25 % longer with them.
 */
export const firstFrameBytes = 1024;

/** The channel is cold until it has carried this much data (slow start is still ramping up). */
const coldBytes = 1024 * 1024;

/** The most a net.Socket hands over in one 'data' event: what a sender may overshoot its credit by. */
const socketReadBytes = 64 * 1024;

/** Both transports raise `bufferedamountlow` here: the mux resumes its sockets once the channel drains to it. */
export const channelLowWater = 256 * 1024;

/** How a tunnel ended from the peer's side: `lost` (gone, closed, keepalive) or `revoked` (access withdrawn: do not come back). */
export type MuxEnding = 'lost' | 'revoked';

/** What a goodbye frame may carry (JSON payload): why the peer ends the tunnel. An empty payload is a plain goodbye. */
export interface Farewell {
  readonly ending: 'revoked';
  readonly reason: string;
}

/** The message channel under the mux (a data channel in production, an in-memory pair in tests). */
export interface FrameChannel {
  send(frame: Buffer): void;
  readonly bufferedAmount: number;
  onFrame(handler: (frame: Buffer) => void): void;
  /** bufferedAmount fell below the low-water mark. */
  onDrain(handler: () => void): void;
  /** The channel closed without close() from this side. */
  onClose(handler: (reason: string) => void): void;
  close(): void;
}

/**
 * The frame handlers of a FrameChannel. Frames that arrive before the first handler is added are held
 * for it: a tunnel's parallel channels open one after another, and the mux is put on them only once
 * all are open, while the peer may already be sending on the first (decision 0016).
 */
export function frameHandlers(): { add(handler: (frame: Buffer) => void): void; emit(frame: Buffer): void } {
  const handlers: Array<(frame: Buffer) => void> = [];
  let held: Buffer[] | undefined = [];
  return {
    add(handler) {
      handlers.push(handler);
      if (!held) return;
      const queued = held;
      held = undefined;
      for (const frame of queued) handler(frame);
    },
    emit(frame) {
      if (held) held.push(frame);
      else for (const handler of handlers) handler(frame);
    },
  };
}

export interface MuxOptions {
  /** Bytes a stream may send ahead of the peer's acknowledgement (per direction), at first. */
  readonly windowBytes?: number;
  /**
   * The receive window a new stream starts with, while the mux's growth budget lasts: `windowBytes`
   * (what the peer assumes) plus credit lent at once from `maxGrowthBytes`, granted right after OPEN.
   */
  readonly startWindowBytes?: number;
  /** How far one stream's receive window may grow while its socket keeps draining. */
  readonly maxWindowBytes?: number;
  /** Growth beyond `windowBytes` summed over all streams of this mux. */
  readonly maxGrowthBytes?: number;
  /** Pause every socket while the channel holds more than this. */
  readonly channelHighWater?: number;
  readonly keepaliveIntervalMs?: number;
  /** Declare the peer dead after this long without any frame. */
  readonly keepaliveDeadMs?: number;
  /**
   * After this long without sending data the channel counts as cold again (SCTP shrinks an idle
   * association's congestion window), and new streams start with small frames (firstFrameBytes).
   */
  readonly coldIdleMs?: number;
  /**
   * Gateway side: open the target for a new stream (`destination` when the client named one, `target`
   * when it named one of the tunnel's several targets), or reject with a reason; an error's
   * `replyCode` (a SOCKS5 reply code) travels back to the client, and `logged: true` says the dialler
   * has logged the refusal already.
   */
  readonly dial?: (destination: MuxDestination | undefined, target?: string) => Promise<Socket>;
  readonly log?: (line: string) => void;
  /** Told of each stream's life (the gateway's audit log). */
  readonly streams?: StreamObserver;
  /**
   * Client side: the peer holds data that arrives before its dial finished (its answer said
   * `earlyData`), so a connection's first bytes go with its OPEN instead of a round trip later.
   * Within the stream's window, as always; never for a SOCKS stream (its client waits for the reply).
   */
  readonly earlyData?: boolean;
}

/** How a stream ended: FIN both ways, a reset from the peer or from this side, the dial failed, the tunnel lost or closed. */
export type StreamEnd = 'fin' | 'reset-by-peer' | 'reset-here' | 'dial-failed' | 'lost' | 'closed';

export interface StreamObserver {
  /** Awaited before a stream the peer opens is dialled (with the destination its open frame names, if any); a rejection refuses the stream with its message. */
  opening?(id: number, destination: MuxDestination | undefined): Promise<void>;
  /** Once per stream, when it ends: payload bytes sent to and received from the peer. */
  ended?(id: number, outcome: { readonly sent: number; readonly received: number; readonly end: StreamEnd }): void;
}

/** Where a stream goes when the client names it (a SOCKS CONNECT): a host name or address and a port. */
export interface MuxDestination {
  readonly host: string;
  readonly port: number;
}

/** How the peer answered an open that named a destination. */
export type OpenResult = { readonly ok: true } | { readonly ok: false; readonly code: number; readonly reason: string };

const destinationTag = 1;
/** An OPEN for one of a tunnel's several targets: u8 2 · its name. */
const targetTag = 2;

export function encodeTarget(target: string): Buffer {
  return Buffer.concat([Buffer.from([targetTag]), Buffer.from(target, 'utf8')]);
}
/** SOCKS5 "general failure": the code of a refusal that gave none. */
const generalFailure = 0x01;

export function encodeDestination(destination: MuxDestination): Buffer {
  const host = Buffer.from(destination.host, 'utf8');
  const payload = Buffer.allocUnsafe(3 + host.length);
  payload.writeUInt8(destinationTag, 0);
  payload.writeUInt16BE(destination.port, 1);
  host.copy(payload, 3);
  return payload;
}

/** The destination an OPEN payload names; undefined for the named target (empty); null when malformed. */
export function decodeDestination(payload: Buffer): MuxDestination | undefined | null {
  if (payload.length === 0) return undefined;
  if (payload.length < 4 || payload.length > 3 + 255 || payload.readUInt8(0) !== destinationTag) return null;
  return { port: payload.readUInt16BE(1), host: payload.subarray(3).toString('utf8') };
}

interface Stream {
  readonly id: number;
  socket: Socket | undefined;
  sendCredit: number;
  /** Bytes written to the socket that the peer has not been credited for yet. */
  owed: number;
  /** The receive window granted to the peer: windowBytes, grown while the socket drains freely. */
  window: number;
  /** Bytes the socket took without pushing back since the window last grew. */
  drainedRun: number;
  waitingDrain: boolean;
  /** The size of the stream's next data frame (0 until its first): firstFrameBytes doubling, or maxPayloadBytes. */
  frameBytes: number;
  open: boolean;
  sentFin: boolean;
  gotFin: boolean;
  ended: boolean;
  /** Payload bytes sent to / received from the peer. */
  sent: number;
  received: number;
  /** The open named a destination: its answer goes here, and OPEN_FAIL carries a code. */
  onOpened: ((result: OpenResult) => void) | undefined;
  /** Dial side: data that arrived before the target's socket existed (a FIN then is `gotFin`). */
  early: { data: Buffer[]; bytes: number } | undefined;
}

export const defaultMuxOptions = {
  windowBytes: 256 * 1024,
  startWindowBytes: 2 * 1024 * 1024,
  maxWindowBytes: 16 * 1024 * 1024,
  maxGrowthBytes: 16 * 1024 * 1024,
  channelHighWater: 1024 * 1024,
  keepaliveIntervalMs: 5_000,
  keepaliveDeadMs: 15_000,
  coldIdleMs: 1_000,
};

export class Mux {
  private readonly streams = new Map<number, Stream>();
  private readonly lostHandlers: Array<(reason: string, ending: MuxEnding) => void> = [];
  private readonly options: Required<Omit<MuxOptions, 'dial' | 'log' | 'streams' | 'earlyData'>> & MuxOptions;
  private nextId = 1;
  /** Sum over streams of window − windowBytes. */
  private grown = 0;
  private channelPaused = false;
  private closed = false;
  private lastHeard = Date.now();
  /** Data bytes sent so far and when the last were: whether the channel is cold (firstFrameBytes). */
  private dataSent = 0;
  private dataSentAt = 0;
  private readonly keepalive: NodeJS.Timeout;
  private lostReason: string | undefined;
  private lostEnding: MuxEnding = 'lost';

  constructor(
    private readonly channel: FrameChannel,
    options: MuxOptions = {},
  ) {
    this.options = { ...defaultMuxOptions, ...options };
    channel.onFrame((frame) => this.receive(frame));
    channel.onDrain(() => this.resumeAfterChannelDrain());
    channel.onClose((reason) => this.lose(reason));
    this.keepalive = setInterval(() => this.tick(), this.options.keepaliveIntervalMs);
    this.keepalive.unref();
  }

  get streamCount(): number {
    return this.streams.size;
  }

  /** Receive-window growth currently lent to streams (at most maxGrowthBytes). */
  get grownBytes(): number {
    return this.grown;
  }

  /** Client side: carry a local connection to the peer's target (named when the tunnel has several). */
  carry(socket: Socket, target?: string): void {
    if (this.closed || this.lostReason !== undefined) {
      socket.destroy();
      return;
    }
    this.openStream(socket, undefined, target);
  }

  /**
   * Client side: carry `socket` to `destination`, which the peer decides on. `onOpened` hears the
   * answer before any byte of the target reaches the socket; on a refusal the socket is left to the
   * caller (to send its own reply and close it).
   */
  open(socket: Socket, destination: MuxDestination, onOpened: (result: OpenResult) => void): void {
    if (this.closed || this.lostReason !== undefined) {
      onOpened({ ok: false, code: generalFailure, reason: this.lostReason ?? 'the tunnel is closed' });
      return;
    }
    this.openStream(socket, { destination, onOpened });
  }

  private openStream(
    socket: Socket,
    named: { destination: MuxDestination; onOpened: (result: OpenResult) => void } | undefined,
    target?: string,
  ): void {
    const id = this.nextId;
    this.nextId += 2;
    socket.pause();
    const stream = this.addStream(id, socket);
    // Early data: the peer holds what arrives before its dial is done, so bytes go out at once.
    stream.open = named === undefined && this.options.earlyData === true;
    if (named) stream.onOpened = named.onOpened;
    this.send(frameType.open, id, named ? encodeDestination(named.destination) : target !== undefined ? encodeTarget(target) : undefined);
    this.lendStartWindow(stream);
    this.updateFlow(stream);
  }

  onLost(handler: (reason: string, ending: MuxEnding) => void): void {
    if (this.lostReason !== undefined) handler(this.lostReason, this.lostEnding);
    else this.lostHandlers.push(handler);
  }

  /**
   * Orderly shutdown from this side: connections are closed, the peer is told (goodbye frame, given up
   * to `graceMs` to leave the channel), then the channel closes. No lost event here. A `farewell`
   * tells the peer why (the gateway ending a tunnel whose access was revoked).
   */
  async close(graceMs = 500, farewell?: Farewell): Promise<void> {
    if (this.closed) return;
    const wasLost = this.lostReason !== undefined;
    if (!wasLost) this.send(frameType.goodbye, 0, farewell ? Buffer.from(JSON.stringify(farewell).slice(0, 4096)) : undefined);
    this.closed = true;
    clearInterval(this.keepalive);
    for (const stream of this.streams.values()) {
      if (!stream.ended) this.ended(stream, 'closed');
      stream.socket?.destroy();
    }
    this.streams.clear();
    this.grown = 0;
    for (let waited = 0; !wasLost && waited < graceMs && this.channel.bufferedAmount > 0; waited += 10) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    this.channel.close();
  }

  private addStream(id: number, socket: Socket | undefined): Stream {
    const stream: Stream = {
      id,
      socket: undefined,
      sendCredit: this.options.windowBytes,
      owed: 0,
      window: this.options.windowBytes,
      drainedRun: 0,
      waitingDrain: false,
      frameBytes: 0,
      open: true,
      sentFin: false,
      gotFin: false,
      ended: false,
      sent: 0,
      received: 0,
      onOpened: undefined,
      early: undefined,
    };
    this.streams.set(id, stream);
    if (socket) this.bind(stream, socket);
    return stream;
  }

  private bind(stream: Stream, socket: Socket): void {
    stream.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      if (stream.ended) return;
      const now = Date.now();
      if (stream.frameBytes === 0) {
        const cold = this.dataSent < coldBytes || now - this.dataSentAt > this.options.coldIdleMs;
        stream.frameBytes = cold ? firstFrameBytes : maxPayloadBytes;
      }
      this.dataSent += chunk.length;
      this.dataSentAt = now;
      for (let offset = 0; offset < chunk.length; ) {
        const size = Math.min(stream.frameBytes, chunk.length - offset);
        this.send(frameType.data, stream.id, chunk.subarray(offset, offset + size));
        offset += size;
        if (stream.frameBytes < maxPayloadBytes) stream.frameBytes = Math.min(maxPayloadBytes, stream.frameBytes * 2);
      }
      stream.sendCredit -= chunk.length;
      stream.sent += chunk.length;
      this.updateFlow(stream);
    });
    socket.on('end', () => {
      if (stream.ended) return;
      stream.sentFin = true;
      this.send(frameType.fin, stream.id);
      this.finishIfDone(stream);
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      if (stream.ended) return;
      this.ended(stream, stream.sentFin && stream.gotFin ? 'fin' : 'reset-here');
      this.forget(stream);
      // Closed before both sides said FIN: the peer must not wait for more.
      if (!(stream.sentFin && stream.gotFin) && !this.closed) this.send(frameType.rst, stream.id, Buffer.from('connection reset'));
    });
  }

  private updateFlow(stream: Stream): void {
    const socket = stream.socket;
    if (!socket || socket.destroyed) return;
    if (stream.open && stream.sendCredit > 0 && !this.channelPaused) socket.resume();
    else socket.pause();
  }

  private resumeAfterChannelDrain(): void {
    if (!this.channelPaused) return;
    this.channelPaused = false;
    for (const stream of this.streams.values()) this.updateFlow(stream);
  }

  private send(type: number, id: number, payload?: Buffer): void {
    if (this.closed || this.lostReason !== undefined) return;
    const frame = Buffer.allocUnsafe(headerBytes + (payload?.length ?? 0));
    frame.writeUInt8(type, 0);
    frame.writeUInt32BE(id, 1);
    payload?.copy(frame, headerBytes);
    try {
      this.channel.send(frame);
    } catch (error) {
      this.lose(`data channel send failed: ${error instanceof Error ? error.message : String(error)}`);
      return;
    }
    if (!this.channelPaused && this.channel.bufferedAmount > this.options.channelHighWater) {
      this.channelPaused = true;
      for (const stream of this.streams.values()) stream.socket?.pause();
    }
  }

  private receive(frame: Buffer): void {
    this.lastHeard = Date.now();
    if (frame.length < headerBytes) return this.lose('malformed frame from peer');
    const type = frame.readUInt8(0);
    const id = frame.readUInt32BE(1);
    const payload = frame.subarray(headerBytes);
    if (type === frameType.ping) return this.send(frameType.pong, 0, payload);
    if (type === frameType.pong) return;
    if (type === frameType.goodbye) return this.farewell(payload);
    if (type === frameType.open) return this.acceptOpen(id, payload);
    const stream = this.streams.get(id);
    if (!stream) {
      // Late frames of a stream that is already gone; tell the peer once it sends data.
      if (type === frameType.data) this.send(frameType.rst, id, Buffer.from('unknown stream'));
      return;
    }
    switch (type) {
      case frameType.openOk:
        stream.open = true;
        // The caller's reply goes out before any byte of the target: data frames follow OPEN_OK.
        stream.onOpened?.({ ok: true });
        stream.onOpened = undefined;
        this.updateFlow(stream);
        return;
      case frameType.openFail:
        if (stream.onOpened) return this.refused(stream, payload);
        this.options.log?.(`the target refused a connection (${payload.toString('utf8').slice(0, 200)}): the local client got a reset`);
        return this.drop(stream, 'reset-by-peer');
      case frameType.data:
        return this.deliver(stream, payload);
      case frameType.window:
        if (payload.length >= 4) stream.sendCredit += payload.readUInt32BE(0);
        return this.updateFlow(stream);
      case frameType.fin:
        stream.gotFin = true;
        stream.socket?.end();
        return this.finishIfDone(stream);
      case frameType.rst:
        return this.drop(stream, 'reset-by-peer');
      default:
        return this.lose(`unknown frame type ${type} from peer`);
    }
  }

  private deliver(stream: Stream, payload: Buffer): void {
    const socket = stream.socket;
    if (!socket && this.options.dial && !stream.ended) return this.hold(stream, payload);
    if (!socket || socket.destroyed) return;
    const flushed = socket.write(payload);
    stream.received += payload.length;
    stream.owed += payload.length;
    if (flushed) this.growIfDraining(stream, payload.length);
    else stream.drainedRun = 0;
    if (!flushed && !stream.waitingDrain) {
      stream.waitingDrain = true;
      socket.once('drain', () => {
        stream.waitingDrain = false;
        this.grant(stream, 0);
      });
    }
    if (!stream.waitingDrain) this.grant(stream, this.options.windowBytes / 4);
  }

  /**
   * Early data: bytes of a stream whose target is still being dialled, kept until its socket exists.
   * The peer may send only its window before any credit, and one socket read past it (a sender pauses
   * its socket once the credit is spent), so more than that is a broken peer.
   */
  private hold(stream: Stream, payload: Buffer): void {
    const early = (stream.early ??= { data: [], bytes: 0 });
    if (early.bytes + payload.length > stream.window + socketReadBytes) {
      this.options.log?.(`connection ${stream.id}: the peer sent more than its window before the target answered; reset`);
      this.ended(stream, 'reset-here');
      this.forget(stream);
      this.send(frameType.rst, stream.id, Buffer.from('more data than the window allows'));
      return;
    }
    early.data.push(payload);
    early.bytes += payload.length;
  }

  /** The target's socket exists: what arrived before it goes first, then a FIN that came with it. */
  private flushEarly(stream: Stream): void {
    const early = stream.early;
    stream.early = undefined;
    for (const payload of early?.data ?? []) this.deliver(stream, payload);
    if (stream.gotFin) {
      stream.socket?.end();
      this.finishIfDone(stream);
    }
  }

  /**
   * Window auto-tuning. One connection may have only `window` bytes unacknowledged, which caps its rate
   * at window / round trip (measured: 256 KiB → 127 MiB/s, 1 MiB → 147 MiB/s on native). A socket that
   * has taken a whole window without pushing back is limited by the window, not by its reader: double
   * the window by crediting the peer that much extra, up to maxWindowBytes per stream and
   * maxGrowthBytes over the mux. The cost is bounded: a reader that stalls later makes this side hold
   * at most its stream's grown window (kernel buffers can hide a slow reader for a few MiB, so a stalled
   * stream may have grown), and all grown windows together at most maxGrowthBytes more than the
   * initial ones. Growth is returned to the budget when the stream ends.
   */
  private growIfDraining(stream: Stream, bytes: number): void {
    stream.drainedRun += bytes;
    if (stream.drainedRun < stream.window) return;
    stream.drainedRun = 0;
    this.widen(stream, stream.window);
  }

  /** Add up to `wanted` to the stream's window (owed to the peer as credit), within both caps; false if none. */
  private widen(stream: Stream, wanted: number): boolean {
    const extra = Math.min(wanted, this.options.maxWindowBytes - stream.window, this.options.maxGrowthBytes - this.grown);
    if (extra <= 0) return false;
    stream.window += extra;
    stream.owed += extra;
    this.grown += extra;
    return true;
  }

  /**
   * A new stream's window starts at startWindowBytes, lent from the growth budget: on a long path a
   * window that has to grow from 256 KiB keeps SCTP short of data for its first round trips, and an
   * association left without data loses its congestion window (measured in decision 0018). What a
   * stalled reader can make this side hold stays within the same budget.
   */
  private lendStartWindow(stream: Stream): void {
    if (this.widen(stream, this.options.startWindowBytes - stream.window)) this.grant(stream, 0);
  }

  private forget(stream: Stream): void {
    if (this.streams.get(stream.id) !== stream) return;
    this.streams.delete(stream.id);
    this.grown -= stream.window - this.options.windowBytes;
  }

  /** Credit the peer for bytes the socket has taken, in batches of at least `minimum`. */
  private grant(stream: Stream, minimum: number): void {
    if (stream.owed === 0 || stream.owed < minimum || stream.ended) return;
    const credit = Buffer.allocUnsafe(4);
    credit.writeUInt32BE(stream.owed, 0);
    stream.owed = 0;
    this.send(frameType.window, stream.id, credit);
  }

  private acceptOpen(id: number, payload: Buffer): void {
    const dial = this.options.dial;
    const target = payload.length > 1 && payload[0] === targetTag ? payload.subarray(1).toString('utf8') : undefined;
    const destination = target === undefined ? decodeDestination(payload) : undefined;
    // A code travels back only to a client that named a destination (older clients read text only).
    const fail = (code: number, reason: string) =>
      this.send(frameType.openFail, id, destination ? Buffer.concat([Buffer.from([code]), Buffer.from(reason)]) : Buffer.from(reason));
    if (!dial || this.streams.has(id)) return fail(generalFailure, 'this side does not accept connections');
    if (destination === null) return fail(generalFailure, 'malformed destination in the open frame');
    const stream = this.addStream(id, undefined);
    this.lendStartWindow(stream);
    const observer = this.options.streams;
    if (!observer?.opening) return this.dialStream(stream, dial, destination, target, fail);
    observer.opening(id, destination).then(
      () => this.dialStream(stream, dial, destination, target, fail),
      (error: unknown) => {
        stream.ended = true;
        this.forget(stream);
        const reason = error instanceof Error ? error.message : String(error);
        this.options.log?.(`connection ${id} refused: ${reason}`);
        fail(generalFailure, reason.slice(0, 1000));
      },
    );
  }

  private dialStream(
    stream: Stream,
    dial: NonNullable<MuxOptions['dial']>,
    destination: MuxDestination | undefined,
    target: string | undefined,
    fail: (code: number, reason: string) => void,
  ): void {
    const id = stream.id;
    if (stream.ended || this.closed) return;
    dial(destination, target).then(
      (socket) => {
        if (stream.ended || this.closed) {
          socket.destroy();
          return;
        }
        this.bind(stream, socket);
        this.send(frameType.openOk, id);
        this.flushEarly(stream);
        this.updateFlow(stream);
      },
      (error: unknown) => {
        if (stream.ended) return;
        this.ended(stream, 'dial-failed');
        this.forget(stream);
        const reason = error instanceof Error ? error.message : String(error);
        const { replyCode: code, logged } = error as { replyCode?: unknown; logged?: unknown };
        if (logged !== true) this.options.log?.(`connection ${id} not opened: ${reason}`);
        fail(typeof code === 'number' && code > 0 && code < 256 ? code : generalFailure, reason.slice(0, 1000));
      },
    );
  }

  private finishIfDone(stream: Stream): void {
    if (stream.sentFin && stream.gotFin && stream.socket && !stream.socket.destroyed && stream.socket.writableEnded) {
      // Both directions are done; the socket closes once its last bytes are flushed.
      stream.socket.once('finish', () => stream.socket?.destroy());
    }
  }

  /** Mark a stream ended, once, and tell the observer how. */
  private ended(stream: Stream, end: StreamEnd): void {
    stream.ended = true;
    this.options.streams?.ended?.(stream.id, { sent: stream.sent, received: stream.received, end });
  }

  /** The peer refused a stream that named a destination: the caller answers its client and closes. */
  private refused(stream: Stream, payload: Buffer): void {
    stream.ended = true;
    this.forget(stream);
    const onOpened = stream.onOpened;
    stream.onOpened = undefined;
    const code = payload.length > 0 ? payload.readUInt8(0) : generalFailure;
    onOpened?.({ ok: false, code, reason: payload.subarray(1).toString('utf8').slice(0, 1000) });
  }

  /** The peer reset or refused the stream, or the tunnel is lost: reset the local side too. */
  private drop(stream: Stream, end: StreamEnd): void {
    if (stream.onOpened) {
      // Never answered (the tunnel went away): the caller still owes its client a reply.
      return this.refused(stream, Buffer.concat([Buffer.from([generalFailure]), Buffer.from(this.lostReason ?? 'stream reset')]));
    }
    if (!stream.ended) this.ended(stream, end);
    this.forget(stream);
    const socket = stream.socket;
    if (socket && !socket.destroyed) {
      if (typeof socket.resetAndDestroy === 'function' && socket.readyState !== 'opening') socket.resetAndDestroy();
      else socket.destroy();
    }
  }

  private tick(): void {
    if (Date.now() - this.lastHeard > this.options.keepaliveDeadMs) {
      this.lose(`no keepalive answer from the peer for ${Math.round(this.options.keepaliveDeadMs / 1000)} s`);
      return;
    }
    this.send(frameType.ping, 0);
  }

  private farewell(payload: Buffer): void {
    let said: Partial<Farewell> = {};
    try {
      said = payload.length > 0 ? (JSON.parse(payload.toString('utf8')) as Partial<Farewell>) : {};
    } catch {
      // a goodbye without a readable reason is a plain goodbye
    }
    if (said.ending === 'revoked' && typeof said.reason === 'string') return this.lose(said.reason.slice(0, 500), 'revoked');
    return this.lose('the peer closed the tunnel');
  }

  private lose(reason: string, ending: MuxEnding = 'lost'): void {
    if (this.closed || this.lostReason !== undefined) return;
    this.lostReason = reason;
    this.lostEnding = ending;
    clearInterval(this.keepalive);
    for (const stream of this.streams.values()) this.drop(stream, 'lost');
    for (const handler of this.lostHandlers.splice(0)) handler(reason, ending);
    try {
      this.channel.close();
    } catch {
      // already closed
    }
  }
}

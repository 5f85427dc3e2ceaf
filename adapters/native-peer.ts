// node-datachannel (libdatachannel, native) peers for both ends: ICE bound to the configured host
// address, no STUN unless configured, gathering completed before an SDP is sent, and the data
// channel seen as a FrameChannel for the mux. Chosen with --transport native (decision 0003).

import { initLogger, PeerConnection, setSctpSettings, type DataChannel, type LogLevel } from 'node-datachannel';
import type { LinkPath } from '../machines/ports.js';
import { type IceOptions, type IceServer, isTurnOverTcp, parseIceUrl } from './ice-options.js';
import { channelLowWater, frameHandlers, type FrameChannel } from './mux.js';

type NativeIceServer = string | { hostname: string; port: number; username?: string; password?: string; relayType?: 'TurnUdp' | 'TurnTcp' };

function iceServer(server: IceServer): NativeIceServer {
  if (server.urls.startsWith('stun:')) return server.urls;
  const url = parseIceUrl(server.urls);
  return {
    hostname: url?.host ?? '',
    port: url?.port ?? 3478,
    ...(server.username ? { username: server.username } : {}),
    ...(server.credential ? { password: server.credential } : {}),
    relayType: url?.transport === 'tcp' ? 'TurnTcp' : 'TurnUdp',
  };
}

let loggerSet = false;
const logLevels: readonly LogLevel[] = ['Verbose', 'Debug', 'Info', 'Warning', 'Error', 'Fatal'];

/** libdatachannel's own log on stderr, when PAM_WEBRTC_LOG names a level (Debug, Info, …): for ICE/TURN trouble. */
function webrtcLog(): void {
  if (loggerSet) return;
  loggerSet = true;
  const level = logLevels.find((name) => name.toLowerCase() === process.env.PAM_WEBRTC_LOG?.toLowerCase());
  if (level) initLogger(level, (at, message) => void process.stderr.write(`libdatachannel ${at}: ${message}\n`));
}

/**
 * usrsctp's send buffer per association, for every peer of this process (libdatachannel reads it when an
 * association is created, so it is set before the first). It bounds what one association has in flight
 * and queued, so at 100 ms it caps a tunnel's four associations at about 4 × 1 MiB per round trip.
 * Decision 0016 had halved it to 512 KiB, when the mux's windows still started at 256 KiB: then a
 * smaller one helped the scheduler see a slow association sooner. With windows that start at 2 MiB
 * (decision 0018) the 1 MiB of libdatachannel's default measured better: 16.4–19.6 against 13.2–15.1
 * MiB/s at 100 ms, 20.7–34.7 against 20.9–21.7 at 40 ms (WAN lab, docs/performance.md).
 */
export const sctpSendBufferBytes = 1024 * 1024;
let sctpSet = false;

export function createNativePeer(name: string, ice: IceOptions = {}): PeerConnection {
  webrtcLog();
  if (!sctpSet) {
    sctpSet = true;
    setSctpSettings({ sendBufferSize: sctpSendBufferBytes });
  }
  const hosts = ice.hosts ?? [];
  return new PeerConnection(name, {
    // libjuice relays over UDP only: TURN over TCP is left out here rather than refused inside it.
    iceServers: (ice.servers ?? []).filter((server) => !isTurnOverTcp(server.urls)).map(iceServer) as never,
    ...(hosts.length > 0 ? { bindAddress: hosts[0] } : {}),
  });
}

/**
 * The offer as the gateway's libdatachannel should read it so that it answers `a=setup:passive` (DTLS
 * server) instead of its default `active`; used when the client asks for it (`answerSetup`). Why: on a
 * fast path the answerer's ICE connects before the offerer has even read the answer, so an active
 * answerer's first DTLS flight reaches an offerer with no DTLS transport yet, is dropped, and OpenSSL
 * resends it only after its 1 s timer: measured on loopback, one connect in four took ~1 s. A passive
 * answerer waits for the offerer's ClientHello, which the offerer sends once it has the answer. Passive
 * is a legal answer to `actpass` (RFC 5763 §5), so the exchange on the wire stays standard; only the
 * answerer's own parser sees `active`. A werift offerer told by a passive answer to be DTLS client
 * fails its handshake against libdatachannel's OpenSSL server (the channel closed within 200 ms when
 * tried), which is why the client must ask rather than the gateway always doing it.
 */
export function offerForPassiveAnswer(offer: string): string {
  return offer.replace(/^a=setup:actpass\r?$/gm, (line) => line.replace('actpass', 'active'));
}

/** `relay` when either end of the selected pair is a TURN relay candidate; else `direct`. */
export function nativeSelectedPath(peer: PeerConnection): LinkPath | undefined {
  let pair: ReturnType<PeerConnection['getSelectedCandidatePair']>;
  try {
    pair = peer.getSelectedCandidatePair();
  } catch {
    return undefined;
  }
  if (!pair) return undefined;
  const describe = (end: { type: string; address: string; port: number; transportType: string }) =>
    `${end.type} ${end.address}:${end.port}/${end.transportType.toLowerCase()}`;
  const relayed = /relay/i.test(pair.local.type) || /relay/i.test(pair.remote.type);
  return { kind: relayed ? 'relay' : 'direct', pair: `${describe(pair.local)} → ${describe(pair.remote)}` };
}

/**
 * How long gathering may take before the SDP is sent with the candidates found so far. An unreachable
 * STUN/TURN server keeps libjuice gathering for many seconds; without a bound the whole --timeout went
 * by "in signalling" and the failure did not name ICE.
 */
export const gatheringDeadlineMs = 4_000;

/** Resolve with the local SDP once gathering is complete (non-trickle), or with what is gathered at the deadline. */
export function nativeGathered(peer: PeerConnection, signal?: AbortSignal, deadlineMs = gatheringDeadlineMs): Promise<string> {
  return new Promise((resolve, reject) => {
    // Called from the library's callback, where a throw would abort the process (see nativeFrames).
    const done = () => {
      clearTimeout(timer);
      const description = peer.localDescription();
      if (description) resolve(description.sdp);
      else reject(new Error('the peer connection closed while gathering candidates'));
    };
    const timer = setTimeout(done, deadlineMs);
    if (peer.gatheringState() === 'complete') return done();
    peer.onGatheringStateChange((state) => {
      if (state === 'complete') done();
    });
    signal?.addEventListener(
      'abort',
      () => {
        clearTimeout(timer);
        reject(signal.reason);
      },
      { once: true },
    );
  });
}

/** Resolve when the channel is open; reject if the connection fails or closes first. */
export function nativeChannelOpen(peer: PeerConnection, channel: DataChannel, signal?: AbortSignal): Promise<void> {
  if (channel.isOpen()) return Promise.resolve();
  return new Promise((resolve, reject) => {
    channel.onOpen(() => resolve());
    channel.onError((error) => reject(new Error(`data channel error: ${error}`)));
    peer.onStateChange((state) => {
      if (state === 'failed' || state === 'closed')
        reject(new Error(`the peer connection ${state} before the data channel opened (no ICE path between the hosts?)`));
    });
    signal?.addEventListener('abort', () => reject(signal.reason), { once: true });
  });
}

/**
 * The channel as a FrameChannel. Often called from the library's own callback (a channel that just
 * opened), where an exception does not reach JavaScript: node-datachannel's thread calls
 * std::terminate and the process aborts. A peer closed in the meantime (a client that went away
 * during its connect) makes `onStateChange()` throw, so that case is a channel that is closed from
 * the start, reported to each close handler when it is added. For the same reason nothing thrown
 * by the handlers above (the striped channel, the mux) may leave the library's callbacks: an
 * exception while a frame is handled ends this channel with the error as its reason (one tunnel,
 * not the whole gateway), and one thrown by a close handler is rethrown outside the callback, where
 * Node reports it as any uncaught exception.
 */
export function nativeFrames(peer: PeerConnection, channel: DataChannel): FrameChannel {
  channel.setBufferedAmountLowThreshold(channelLowWater);
  let closing = false;
  let closedWith: string | undefined;
  const frames = frameHandlers();
  const drainHandlers: Array<() => void> = [];
  const closeHandlers: Array<(reason: string) => void> = [];
  const closed = (reason: string) => {
    if (closing) return;
    closing = true;
    closedWith = reason;
    for (const handler of closeHandlers) {
      try {
        handler(reason);
      } catch (error) {
        setImmediate(() => {
          throw error;
        });
      }
    }
  };
  const shut = () => {
    try {
      channel.close();
      peer.close();
    } catch {
      // already closed
    }
  };
  /** A library callback running a handler of ours: what the handler throws ends this channel instead. */
  const guarded =
    <T>(work: (value: T) => void) =>
    (value: T) => {
      try {
        work(value);
      } catch (error) {
        closed(`internal error in the data path: ${error instanceof Error ? error.message : String(error)}`);
        shut();
      }
    };
  channel.onMessage(
    guarded((message: string | Buffer | ArrayBuffer) => {
      const frame = Buffer.isBuffer(message)
        ? message
        : typeof message === 'string'
          ? Buffer.from(message)
          : Buffer.from(new Uint8Array(message));
      frames.emit(frame);
    }),
  );
  channel.onBufferedAmountLow(
    guarded<void>(() => {
      for (const handler of drainHandlers) handler();
    }),
  );
  channel.onClosed(() => closed('the data channel closed'));
  try {
    peer.onStateChange((state) => {
      if (state === 'failed' || state === 'closed') closed(`the peer connection ${state}`);
    });
  } catch {
    closed('the peer connection closed');
  }
  return {
    // sendMessageBinary() returns false when the message was queued rather than sent at once: that is
    // back-pressure, which bufferedAmount reports and the mux already acts on, not a failure.
    send: (frame) => void channel.sendMessageBinary(frame),
    get bufferedAmount() {
      return closing ? 0 : channel.bufferedAmount();
    },
    onFrame: (handler) => frames.add(handler),
    onDrain: (handler) => void drainHandlers.push(handler),
    onClose(handler) {
      const reason = closedWith;
      if (reason === undefined) closeHandlers.push(handler);
      else queueMicrotask(() => handler(reason));
    },
    close() {
      if (closing) return;
      closing = true;
      shut();
    },
  };
}

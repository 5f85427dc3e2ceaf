// werift peer connections as both ends use them: local host candidates limited to the configured
// addresses, no public STUN unless asked for, gathering completed before an SDP is sent (no trickle),
// and the data channel seen as a FrameChannel for the mux.

import { RTCPeerConnection, type RTCDataChannel } from 'werift';
import type { LinkPath } from '../machines/ports.js';
import type { IceOptions } from './ice-options.js';
import { channelLowWater, frameHandlers, type FrameChannel } from './mux.js';

export function createPeer(ice: IceOptions = {}): RTCPeerConnection {
  const hosts = ice.hosts ?? [];
  // With hosts: no interface scan, only these addresses become local host candidates. Remote
  // candidates are whatever the peer offered: they are the other host's addresses, which are never in
  // our own list (filtering pairs by it left only loopback-to-loopback pairs: issue 22).
  return new RTCPeerConnection({
    iceServers: [...(ice.servers ?? [])],
    ...(hosts.length > 0 ? { iceUseIpv4: false, iceUseIpv6: false, iceAdditionalHostAddresses: [...hosts] } : {}),
  });
}

/**
 * werift falls back to stun.l.google.com when no STUN server is configured. Without a configured
 * server we want no server-reflexive query at all (nothing leaves the configured hosts), so clear it
 * on every ICE connection before gathering starts (call before setLocalDescription).
 */
export function withoutDefaultStun(peer: RTCPeerConnection, ice: IceOptions = {}): void {
  if ((ice.servers ?? []).some((server) => server.urls.startsWith('stun:'))) return;
  for (const transport of peer.iceTransports) {
    (transport.connection as unknown as { stunServer?: unknown }).stunServer = undefined;
  }
}

/** Resolve once ICE gathering is complete, so the SDP carries every candidate. */
export function gatheringComplete(peer: RTCPeerConnection, signal?: AbortSignal): Promise<void> {
  if (peer.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise<void>((resolve, reject) => {
    const subscription = peer.iceGatheringStateChange.subscribe((state) => {
      if (state !== 'complete') return;
      subscription.unSubscribe();
      resolve();
    });
    signal?.addEventListener(
      'abort',
      () => {
        subscription.unSubscribe();
        reject(signal.reason);
      },
      { once: true },
    );
  });
}

/** Resolve when the channel is open; reject with a readable reason if the connection fails first. */
export function channelOpen(peer: RTCPeerConnection, channel: RTCDataChannel, signal?: AbortSignal): Promise<void> {
  if (channel.readyState === 'open') return Promise.resolve();
  return new Promise<void>((resolve, reject) => {
    const subscriptions = [
      channel.stateChanged.subscribe((state) => {
        if (state === 'open') done();
        else if (state === 'closed') done(new Error('the data channel closed before it opened'));
      }),
      peer.connectionStateChange.subscribe((state) => {
        if (state === 'failed' || state === 'closed')
          done(new Error(`the peer connection ${state} before the data channel opened (no ICE path between the hosts?)`));
      }),
    ];
    const onAbort = () => done(signal?.reason ?? new Error('aborted'));
    signal?.addEventListener('abort', onAbort, { once: true });
    function done(error?: Error) {
      for (const subscription of subscriptions) subscription.unSubscribe();
      signal?.removeEventListener('abort', onAbort);
      if (error) reject(error);
      else resolve();
    }
  });
}

/** The data channel as the mux sees it. */
export function channelFrames(peer: RTCPeerConnection, channel: RTCDataChannel): FrameChannel {
  channel.bufferedAmountLowThreshold = channelLowWater;
  let closing = false;
  const frames = frameHandlers();
  channel.onMessage.subscribe((data) => frames.emit(typeof data === 'string' ? Buffer.from(data) : data));
  return {
    send: (frame) => channel.send(frame),
    get bufferedAmount() {
      return channel.bufferedAmount;
    },
    onFrame: (handler) => frames.add(handler),
    onDrain(handler) {
      channel.bufferedAmountLow.subscribe(() => handler());
    },
    onClose(handler) {
      channel.stateChanged.subscribe((state) => {
        if (state === 'closed' && !closing) handler('the data channel closed');
      });
      peer.connectionStateChange.subscribe((state) => {
        if ((state === 'failed' || state === 'closed') && !closing) handler(`the peer connection ${state}`);
      });
    },
    close() {
      if (closing) return;
      closing = true;
      try {
        channel.close();
      } catch {
        // already closed
      }
      void peer.close().catch(() => undefined);
    },
  };
}

/** One candidate as the path names it: `relay 203.0.113.1:49160/udp` (from its SDP `candidate:` line). */
export function describeCandidate(candidate: string): { type: string; text: string } | undefined {
  // candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> …
  const match = /^(?:a=)?(?:candidate:)?\S+ \d+ (\S+) \d+ (\S+) (\d+) typ (\S+)/i.exec(candidate.trim());
  if (!match) return undefined;
  const [, transport, address, port, type] = match;
  return { type: type!, text: `${type} ${address}:${port}/${transport!.toLowerCase()}` };
}

/** `relay` when either end of werift's selected pair is a TURN relay candidate; else `direct`. */
export function weriftSelectedPath(peer: RTCPeerConnection): LinkPath | undefined {
  for (const transport of peer.iceTransports) {
    let pair: ReturnType<typeof transport.getSelectedCandidatePair>;
    try {
      pair = transport.getSelectedCandidatePair();
    } catch {
      continue;
    }
    const local = pair && describeCandidate(pair.local.candidate);
    const remote = pair && describeCandidate(pair.remote.candidate);
    if (!local || !remote) continue;
    const relayed = local.type === 'relay' || remote.type === 'relay';
    return { kind: relayed ? 'relay' : 'direct', pair: `${local.text} → ${remote.text}` };
  }
  return undefined;
}

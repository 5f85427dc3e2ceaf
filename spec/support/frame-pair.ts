// Two in-memory FrameChannels joined back to back, delivering asynchronously and counting what is in
// flight as bufferedAmount, like a data channel; `stall()` stops delivery to emulate a dead peer.

import type { FrameChannel } from '../../adapters/mux.js';

class MemoryChannel implements FrameChannel {
  peer!: MemoryChannel;
  bufferedAmount = 0;
  stalled = false;
  closed = false;
  readonly lowWater: number;
  private frameHandler: (frame: Buffer) => void = () => undefined;
  private drainHandler: () => void = () => undefined;
  private closeHandler: (reason: string) => void = () => undefined;

  constructor(lowWater: number) {
    this.lowWater = lowWater;
  }

  send(frame: Buffer): void {
    if (this.closed) throw new Error('channel closed');
    this.bufferedAmount += frame.length;
    const copy = Buffer.from(frame);
    setImmediate(() => {
      if (this.stalled || this.peer.closed) return;
      const before = this.bufferedAmount;
      this.bufferedAmount -= copy.length;
      this.peer.frameHandler(copy);
      if (before > this.lowWater && this.bufferedAmount <= this.lowWater) this.drainHandler();
    });
  }

  onFrame(handler: (frame: Buffer) => void): void {
    this.frameHandler = handler;
  }

  onDrain(handler: () => void): void {
    this.drainHandler = handler;
  }

  onClose(handler: (reason: string) => void): void {
    this.closeHandler = handler;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (!this.peer.closed) setImmediate(() => this.peer.remoteClosed());
  }

  private remoteClosed(): void {
    if (this.closed) return;
    this.closed = true;
    this.closeHandler('the data channel closed');
  }
}

export function framePair(lowWater = 256 * 1024): [MemoryChannel, MemoryChannel] {
  const a = new MemoryChannel(lowWater);
  const b = new MemoryChannel(lowWater);
  a.peer = b;
  b.peer = a;
  return [a, b];
}

// A background owner's log as `pam tunnel logs` reads it: the whole file or its last N lines, then,
// when following, the bytes appended since, until the owner is gone. Polled (bounded interval): the
// owner appends with O_APPEND from another process, and fs.watch is not dependable on every filesystem.

import { open } from 'node:fs/promises';

export interface LogRead {
  readonly text: string;
  /** Where the next read starts. */
  readonly offset: number;
}

/** Read `path` from `offset`; with `tail`, only its last `tail` lines (a partial last line counts as one). */
export async function readLog(path: string, options: { readonly offset?: number; readonly tail?: number } = {}): Promise<LogRead> {
  const handle = await open(path, 'r');
  try {
    const { size } = await handle.stat();
    const from = Math.min(options.offset ?? 0, size);
    const buffer = Buffer.alloc(size - from);
    let read = 0;
    while (read < buffer.length) {
      const { bytesRead } = await handle.read(buffer, read, buffer.length - read, from + read);
      if (bytesRead === 0) break;
      read += bytesRead;
    }
    const text = buffer.subarray(0, read).toString('utf8');
    return { text: options.tail === undefined ? text : lastLines(text, options.tail), offset: from + read };
  } finally {
    await handle.close();
  }
}

export function lastLines(text: string, count: number): string {
  if (count === 0) return '';
  const lines = text.split('\n');
  const complete = text.endsWith('\n');
  if (complete) lines.pop();
  const kept = lines.slice(-count).join('\n');
  return kept === '' ? '' : complete ? `${kept}\n` : kept;
}

/**
 * Write what is appended to `path` after `offset` until `running()` says the owner is gone; then the
 * last bytes it wrote, and resolve. A log truncated meanwhile is read again from its start.
 */
export async function followLog(
  path: string,
  offset: number,
  options: { readonly write: (text: string) => void; readonly running: () => Promise<boolean>; readonly pollMs: number },
): Promise<void> {
  let at = offset;
  const drain = async () => {
    const next = await readLog(path, { offset: at }).catch(() => ({ text: '', offset: at }));
    if (next.offset < at) at = 0;
    else {
      if (next.text !== '') options.write(next.text);
      at = next.offset;
    }
  };
  for (;;) {
    const running = await options.running();
    await drain();
    if (!running) return;
    await new Promise((resolve) => setTimeout(resolve, options.pollMs));
  }
}

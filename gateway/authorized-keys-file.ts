// `--authorized-keys FILE`: read at start (a malformed file refuses the start, naming the line), then
// re-read on SIGHUP and when the file changes (stat polling, so an editor's rename-over is seen too).
// A bad new version keeps the grants in force, with a log line.

import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import { TunnelError } from '../machines/errors.js';
import { AuthorizedKeysError, parseAuthorizedKeys, type AuthorizedKeys } from './authorized-keys.js';

export interface AuthorizedKeysFile {
  current(): AuthorizedKeys;
  /** Read the file again now; true when new grants are in force. */
  reload(why: 'SIGHUP' | 'file changed'): boolean;
  close(): void;
}

class Unreadable extends Error {
  constructor(
    message: string,
    readonly text?: string,
  ) {
    super(message);
  }
}

function read(path: string): { text: string; keys: AuthorizedKeys } {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new Unreadable(`cannot read ${path} (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
  }
  try {
    return { text, keys: parseAuthorizedKeys(text) };
  } catch (error) {
    if (error instanceof AuthorizedKeysError) throw new Unreadable(`${path} ${error.message}`, text);
    throw error;
  }
}

export function openAuthorizedKeys(
  path: string,
  options: { log: (line: string) => void; onReload: () => void; pollMs?: number },
): AuthorizedKeysFile {
  let loaded: { text: string; keys: AuthorizedKeys };
  try {
    loaded = read(path);
  } catch (error) {
    throw new TunnelError('usage', `--authorized-keys: ${(error as Error).message}`);
  }
  options.log(`authorized_keys ${path}: ${loaded.keys.grants.size} key(s)`);
  let debounce: NodeJS.Timeout | undefined;
  /** The last bad version seen, so polling reports it once (SIGHUP, an explicit request, always answers). */
  let refusedText: string | undefined;

  function reload(why: 'SIGHUP' | 'file changed'): boolean {
    let next: { text: string; keys: AuthorizedKeys };
    try {
      next = read(path);
    } catch (error) {
      const text = error instanceof Unreadable ? error.text : undefined;
      const repeated = why !== 'SIGHUP' && text !== undefined && text === refusedText;
      refusedText = text;
      if (repeated) return false;
      options.log(
        `authorized_keys not reloaded (${why}): ${(error as Error).message}; the previous ${loaded.keys.grants.size} key(s) stay in force`,
      );
      return false;
    }
    refusedText = undefined;
    if (next.text === loaded.text) return false;
    // Seen by polling, a file with no key is most likely one caught between truncate and write: only
    // an explicit SIGHUP takes it (and so revokes every key).
    if (why !== 'SIGHUP' && next.keys.grants.size === 0 && loaded.keys.grants.size > 0) {
      options.log('authorized_keys now holds no key: not taken until SIGHUP (it may be a write in progress)');
      return false;
    }
    loaded = next;
    options.log(`authorized_keys reloaded (${why}): ${loaded.keys.grants.size} key(s)`);
    options.onReload();
    return true;
  }

  const pollMs = options.pollMs ?? 250;
  const readText = () => {
    try {
      return readFileSync(path, 'utf8');
    } catch {
      return undefined;
    }
  };
  const onChange = () => {
    clearTimeout(debounce);
    // An editor may write in several steps: take the file once it has been quiet a moment and reads
    // the same twice, 150 ms apart (a half-written file would revoke the keys it has not reached yet).
    debounce = setTimeout(() => {
      const first = readText();
      debounce = setTimeout(() => (readText() === first ? reload('file changed') : onChange()), 150);
      debounce.unref();
    }, 100);
    debounce.unref();
  };
  watchFile(path, { interval: pollMs, persistent: false }, onChange);

  return {
    current: () => loaded.keys,
    reload,
    close() {
      clearTimeout(debounce);
      unwatchFile(path, onChange);
    },
  };
}

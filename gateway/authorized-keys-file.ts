// `--authorized-keys FILE`: read at start (a malformed file refuses the start, naming the line), then
// re-read on SIGHUP and when the file changes (stat polling, so an editor's rename-over is seen too).
// A bad new version keeps the grants in force, with a log line.

import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import { TunnelError } from '../machines/errors.js';
import { AuthorizedKeysError, parseAuthorizedKeys, type AuthorizedKeys } from './authorized-keys.js';

export interface AuthorizedKeysFile {
  current(): AuthorizedKeys;
  /** Read the file again now; true when new grants are in force. */
  reload(why: string): boolean;
  close(): void;
}

function read(path: string): { text: string; keys: AuthorizedKeys } {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new Error(`cannot read ${path} (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
  }
  try {
    return { text, keys: parseAuthorizedKeys(text) };
  } catch (error) {
    if (error instanceof AuthorizedKeysError) throw new Error(`${path} ${error.message}`);
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

  function reload(why: string): boolean {
    let next: { text: string; keys: AuthorizedKeys };
    try {
      next = read(path);
    } catch (error) {
      options.log(
        `authorized_keys not reloaded (${why}): ${(error as Error).message}; the previous ${loaded.keys.grants.size} key(s) stay in force`,
      );
      return false;
    }
    if (next.text === loaded.text) return false;
    loaded = next;
    options.log(`authorized_keys reloaded (${why}): ${loaded.keys.grants.size} key(s)`);
    options.onReload();
    return true;
  }

  const pollMs = options.pollMs ?? 250;
  const onChange = () => {
    clearTimeout(debounce);
    // An editor may write in several steps: read once it has been quiet a moment.
    debounce = setTimeout(() => reload('file changed'), 100);
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

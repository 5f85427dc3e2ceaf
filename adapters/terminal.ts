// After a hangup (the terminal closed under `pam shell`): let go of the dead terminal before exit.
// Node 20 restores the terminal's mode at exit and aborts when tcsetattr fails with EIO (an assertion
// in node::ResetStdio); it skips a standard fd that no longer names the file it named at start-up.

import { closeSync, openSync } from 'node:fs';

/** Point every standard fd that was a terminal at /dev/null (late writes go nowhere, exit is clean). */
export function releaseHungUpTerminal(target: NodeJS.Process = process): void {
  const streams = [target.stdin, target.stdout, target.stderr];
  for (const [fd, stream] of streams.entries()) {
    if (!(stream as { isTTY?: boolean }).isTTY) continue;
    try {
      // Lower fds are open, so the lowest free one, which open() returns, is `fd` itself.
      closeSync(fd);
      const reopened = openSync('/dev/null', 'r+');
      if (reopened !== fd) closeSync(reopened);
    } catch {
      // nothing more to do for a terminal that is already gone
    }
  }
}

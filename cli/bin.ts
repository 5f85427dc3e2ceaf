// Process entry of the bundled CLI: build the context from the real process and exit with the code.

import { isInteractive, type PamContext } from './context.js';
import { runCli } from './main.js';

const context: PamContext = {
  stdin: process.stdin,
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  interactive: isInteractive(process.env, process.stdin, process.stdout),
  colorDepth: 1,
};
// Colour only for a person at a terminal, and never with NO_COLOR set (https://no-color.org).
if (context.interactive && !process.env.NO_COLOR) context.colorDepth = 8;

runCli(process.argv.slice(2), context).then(
  (code) => {
    process.exitCode = code;
    // Everything of ours is closed by now; a library handle that lingers (a UDP socket, a retry
    // timer) must not keep a finished command alive. The timer is unref'd: a clean exit is not delayed.
    setTimeout(() => process.exit(code), 2000).unref();
    // Once the loop is idle, leave through process.exit rather than Node's own teardown, which can
    // spin forever closing a socket that was closed with resetAndDestroy() (seen: `pam gateway`
    // hanging after SIGTERM in about one demo run in six, Node 20.20).
    process.once('beforeExit', () => process.exit(code));
  },
  (error: unknown) => {
    process.stderr.write(`pam: internal error: ${error instanceof Error ? error.stack : String(error)}\n`);
    process.exitCode = 70;
  },
);

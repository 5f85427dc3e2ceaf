// node-datachannel keeps a process alive after its last peer connection closed, until the closed
// peers' JS objects are collected and its threads wind down, which in an idle process took from 30 s
// to over 300 s (tap's limit) in a spec file that makes native peers itself. The CLI leaves through
// process.exit; such a spec file does too, two seconds after its last test, with the exit code tap
// set. (The library's own cleanup() crashes the process when a finalizer runs after it.)

import type { Teardownable } from './processes.js';

export function exitAfterLastTest(root: Teardownable): void {
  root.teardown(() => {
    // Unref'd: a process with nothing left alive exits on its own, sooner.
    setTimeout(() => process.exit(process.exitCode ?? 0), 2_000).unref();
  });
}

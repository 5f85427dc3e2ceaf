// The launcher's side of a --background tunnel against real processes and the real registry: it hears
// the owner's ready entry the moment it lands (a directory watch, not only the poll), and an owner that
// dies first is reported with its own words.

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { createBackgroundOwners } from '../../adapters/background-owner.js';
import { openFsRegistry } from '../../adapters/fs-registry.js';
import { repoRoot, scratchDir } from '../support/processes.js';
import type { TunnelRecord } from '../../machines/ports.js';
import type { Outcome } from '../../machines/errors.js';
import type { TapTest } from '../support/tap.js';

/** An owner stand-in: opens the same registry, waits `PAM_SPEC_DELAY_MS`, records tunnel `PAM_SPEC_ID` ready, lingers. */
function ownerScript(t: TapTest): string {
  const dir = scratchDir(t, 'pam-owner-');
  const script = join(dir, 'owner.mjs');
  const registry = join(repoRoot, 'build', 'adapters', 'fs-registry.js');
  writeFileSync(
    script,
    `import { openFsRegistry } from ${JSON.stringify(registry)};
const registry = await openFsRegistry({ env: process.env, dir: process.env.PAM_SPEC_REGISTRY });
await new Promise((resolve) => setTimeout(resolve, Number(process.env.PAM_SPEC_DELAY_MS)));
if (process.env.PAM_SPEC_FAIL) {
  console.log(JSON.stringify({ event: 'stopped', exitCode: 69, kind: 'gatewayUnreachable', reason: 'no gateway here' }));
  process.exit(69);
}
await registry.put({ id: process.env.PAM_SPEC_ID, target: 'db', gateway: 'http://127.0.0.1:1', host: '127.0.0.1', port: 4321,
  mode: 'background', state: 'ready', reconnects: 0, startedAt: new Date().toISOString() });
setTimeout(() => registry.remove(process.env.PAM_SPEC_ID).then(() => process.exit(0)), 30_000);
process.on('SIGTERM', () => registry.remove(process.env.PAM_SPEC_ID).then(() => process.exit(0)));
`,
  );
  return script;
}

async function launch(t: TapTest, env: Record<string, string>) {
  const dir = join(scratchDir(t, 'pam-owner-registry-'), 'registry');
  const registry = await openFsRegistry({ env: {}, dir });
  // A poll an hour apart: only the directory watch can hear the owner in time.
  const owners = createBackgroundOwners({
    registry,
    argv: [ownerScript(t)],
    env: { ...process.env, PAM_SPEC_REGISTRY: dir, PAM_SPEC_ID: 'abcd0001', ...env },
    pollMs: 3_600_000,
  });
  const owner = await owners.spawn('abcd0001');
  const heard = await new Promise<{ ready?: TunnelRecord; exited?: Outcome; unheard?: true }>((resolve) => {
    const stop = owners.watch('abcd0001', owner, {
      ready: (record) => resolve({ ready: record }),
      exited: (outcome) => resolve({ exited: outcome }),
    });
    t.teardown(async () => {
      stop();
      // A ready owner is unref'd (the launcher exits without it): keep this process up until it is gone.
      const alive = setInterval(() => undefined, 1000);
      await owners.abandon(owner).finally(() => clearInterval(alive));
    });
    // A bound, not a measurement: the owner is ready within a second; the next poll is an hour away.
    setTimeout(() => resolve({ unheard: true }), 20_000).unref();
  });
  return { heard, owner };
}

t.test('the launcher hears the owner ready as soon as its entry lands, without waiting for a poll', async (t) => {
  const { heard } = await launch(t, { PAM_SPEC_DELAY_MS: '300' });
  t.equal(heard.unheard, undefined, 'heard within 20 s, with the poll an hour apart');
  t.equal(heard.ready?.id, 'abcd0001');
  t.equal(heard.ready?.state, 'ready');
  t.equal(heard.ready?.port, 4321);
});

t.test('an owner that exits before it is ready is reported with its own words and exit code', async (t) => {
  const { heard } = await launch(t, { PAM_SPEC_DELAY_MS: '100', PAM_SPEC_FAIL: '1' });
  t.equal(heard.ready, undefined);
  t.equal(heard.exited?.exitCode, 69);
  t.equal(heard.exited?.reason, 'no gateway here');
});

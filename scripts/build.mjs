// Builds pam-tunnel twice from one source tree:
//  - dist/: an esbuild bundle of the CLI with code splitting, so commands that never open a
//    connection (help, list, stop) do not pay werift's ~250 ms import (it sits in a lazy chunk);
//  - build/: tsc output of everything (sources, specs, bench, scripts) for tap and type checking,
//    so coverage maps to the code that really runs.
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
rmSync('dist', { recursive: true, force: true });
rmSync('build', { recursive: true, force: true });

execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.json'], { stdio: 'inherit' });

await build({
  entryPoints: { cli: 'cli/bin.ts' },
  outdir: 'dist',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  // Dependencies are bundled (fewer files to resolve and load at start-up); werift and the inspector
  // client stay external and are only ever imported lazily, by the commands that need them; so does ws
  // (broker and broker-registered gateways), whose optional native add-ons esbuild cannot resolve, and
  // ioredis (only `pam broker --redis`: ~1 MiB of client that no other command should parse).
  external: ['werift', '@statelyai/inspect', 'node-datachannel', 'ws', 'ioredis'],
  // clipanion (CommonJS) requires node built-ins; give the ESM chunks a real `require` for them.
  banner: { js: "import { createRequire as __pamCreateRequire } from 'node:module'; const require = __pamCreateRequire(import.meta.url);" },
  sourcemap: true,
  logLevel: 'warning',
});

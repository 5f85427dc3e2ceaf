// Runs tap over the compiled specs and ends with one plain line `N passed, N failed[, N skipped]`,
// taken from tap's own final counts, so CI can read the result whatever the reporter prints.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

const require = createRequire(import.meta.url);
// tap exports only its API; its CLI is found through the package's own `bin` field.
const tapPackage = require.resolve('tap/package.json');
const tapBin = join(dirname(tapPackage), JSON.parse(readFileSync(tapPackage, 'utf8')).bin.tap);
const args = [tapBin, '--reporter=tap', ...process.argv.slice(2)];
const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });

let summary;
let buffered = '';
child.stdout.setEncoding('utf8').on('data', (chunk) => {
  process.stdout.write(chunk);
  buffered = (buffered + chunk).slice(-4096);
  const match = /^# \{ total: (\d+)(?:, pass: (\d+))?(?:, fail: (\d+))?(?:, todo: \d+)?(?:, skip: (\d+))?[^}]*\}$/m.exec(buffered);
  if (match) summary = { pass: Number(match[2] ?? 0), fail: Number(match[3] ?? 0), skip: Number(match[4] ?? 0) };
});
child.on('exit', (code, signal) => {
  const failed = summary ? summary.fail : 0;
  const exitCode = code ?? 1;
  // A run that crashed or failed without counting a failed assertion still counts as one failure.
  const fail = failed > 0 || exitCode === 0 ? failed : 1;
  const pass = summary ? summary.pass : 0;
  process.stdout.write(`${pass} passed, ${fail} failed${summary?.skip ? `, ${summary.skip} skipped` : ''}\n`);
  process.exitCode = signal ? 1 : exitCode;
});

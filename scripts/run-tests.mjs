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
// DISABLE_V8_COMPILE_CACHE: tap's TypeScript loader would otherwise leave a compile cache in /tmp.
const child = spawn(process.execPath, args, {
  stdio: ['ignore', 'pipe', 'inherit'],
  env: { ...process.env, DISABLE_V8_COMPILE_CACHE: '1' },
});

let summary;
let buffered = '';
let pending = '';
// Reliability specs report what they tried as `# reliability {...}` comments; add them up.
const tally = { faults: [0, 0], badInputs: [0, 0], load: [], bytes: [0, 0], seen: false };
const count = (line) => {
  const match = /^\s*# reliability (\{.*\})\s*$/.exec(line);
  if (!match) return;
  const value = JSON.parse(match[1]);
  tally.seen = true;
  if (value.faults) tally.faults = [tally.faults[0] + value.faults.tried, tally.faults[1] + value.faults.survived];
  if (value.badInputs) tally.badInputs = [tally.badInputs[0] + value.badInputs.tried, tally.badInputs[1] + value.badInputs.rejectedCleanly];
  if (value.load) tally.load.push(value.load);
  if (value.bytes) tally.bytes = [tally.bytes[0] + value.bytes.sent, tally.bytes[1] + value.bytes.lost];
};
child.stdout.setEncoding('utf8').on('data', (chunk) => {
  process.stdout.write(chunk);
  const lines = (pending + chunk).split('\n');
  pending = lines.pop();
  lines.forEach(count);
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
  if (tally.seen) {
    const [faults, survived] = tally.faults;
    const [inputs, rejected] = tally.badInputs;
    const load =
      tally.load.length === 0
        ? 'no load run'
        : `load ${tally.load.every((entry) => entry.held) ? 'held' : 'FAILED'} (${tally.load.map((entry) => entry.what).join(', ')})`;
    process.stdout.write(
      `reliability: faults survived ${survived}/${faults}, bad inputs tried ${inputs} (${rejected === inputs ? 'all rejected cleanly' : `${inputs - rejected} NOT rejected cleanly`}), ${load}, bytes lost ${tally.bytes[1]} of ${tally.bytes[0]} verified\n`,
    );
  }
  process.stdout.write(`${pass} passed, ${fail} failed${summary?.skip ? `, ${summary.skip} skipped` : ''}\n`);
  process.exitCode = signal ? 1 : exitCode;
});

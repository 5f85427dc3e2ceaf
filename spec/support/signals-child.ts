// A process hosting the real posix-signals adapter for the signals contract: commands on stdin
// (`watch`, `unwatch N`, `seen N`), one JSON reply line each; `{"signal":...}` when watchers ran.

import { createInterface } from 'node:readline';
import { createProcessSignals } from '../../adapters/posix-signals.js';

const signals = createProcessSignals();
const seen: string[][] = [];
const stops: Array<(() => void) | undefined> = [];
const reply = (value: object) => process.stdout.write(`${JSON.stringify(value)}\n`);

createInterface({ input: process.stdin }).on('line', (line) => {
  const [command, arg] = line.split(' ');
  const index = Number(arg);
  if (command === 'watch') {
    const mine = seen.push([]) - 1;
    stops.push(
      signals.watch((signal) => {
        seen[mine]!.push(signal);
        reply({ signal, watcher: mine });
      }),
    );
    reply({ watching: mine });
  } else if (command === 'unwatch') {
    stops[index]?.();
    stops[index] = undefined;
    reply({ unwatched: index });
  } else if (command === 'seen') {
    reply({ seen: seen[index] ?? [] });
  }
});
reply({ ready: true });

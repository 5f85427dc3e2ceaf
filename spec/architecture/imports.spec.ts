// The module structure holds: no import cycle among the project's own modules, and machines/ stays pure.

import t from 'tap';
import { importCycles, importGraph } from '../support/import-graph.js';
import { repoRoot } from '../support/processes.js';

const graph = importGraph(repoRoot, ['machines', 'adapters', 'cli', 'gateway', 'broker']);

t.test('the checker finds a cycle when there is one', async (t) => {
  const cycles = importCycles(
    new Map([
      ['a.ts', ['b.ts']],
      ['b.ts', ['c.ts']],
      ['c.ts', ['a.ts']],
      ['d.ts', ['a.ts']],
    ]),
  );
  t.same(cycles, [['a.ts', 'b.ts', 'c.ts', 'a.ts']]);
});

t.test('no import cycle among machines/, adapters/, cli/, gateway/ and broker/', async (t) => {
  t.ok(graph.size > 40, `read the sources (${graph.size} modules)`);
  t.same(
    importCycles(graph).map((cycle) => cycle.join(' → ')),
    [],
    'a command reaches the CLI through this.cli, never by importing cli/main.ts',
  );
});

t.test('machines/ imports nothing from adapters/, cli/, gateway/ or broker/', async (t) => {
  const outside = [...graph].flatMap(([file, targets]) =>
    file.startsWith('machines/') ? targets.filter((target) => !target.startsWith('machines/')).map((target) => `${file} → ${target}`) : [],
  );
  t.same(outside, []);
});

// `npm run docs`: regenerate the docs that are derived from code. Run with --check to fail
// (exit 1) instead of writing when a committed file is stale.

import { readFileSync, writeFileSync } from 'node:fs';
import { generatedDocs } from './generated-docs.js';

const check = process.argv.includes('--check');
let stale = 0;
for (const [path, content] of Object.entries(generatedDocs())) {
  let current = '';
  try {
    current = readFileSync(path, 'utf8');
  } catch {
    // missing counts as stale
  }
  if (current === content) continue;
  if (check) {
    process.stderr.write(`stale: ${path} (run npm run docs)\n`);
    stale += 1;
  } else {
    writeFileSync(path, content);
    process.stdout.write(`wrote ${path}\n`);
  }
}
process.exitCode = stale > 0 ? 1 : 0;

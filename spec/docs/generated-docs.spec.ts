// Docs derived from code must match the code: regenerate with `npm run docs` when this fails.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { generatedDocs } from '../../scripts/generated-docs.js';
import { repoRoot } from '../support/processes.js';
import { failureKinds } from '../../machines/errors.js';
import { createCli } from '../../cli/main.js';

for (const [path, content] of Object.entries(generatedDocs())) {
  t.test(`${path} is up to date`, async (t) => {
    let committed = '';
    try {
      committed = readFileSync(join(repoRoot, path), 'utf8');
    } catch {
      // missing: fails below
    }
    t.ok(content.length > 0, 'the generator produced content');
    t.equal(committed, content, `${path} is stale: run \`npm run docs\` and commit the result`);
  });
}

t.test('the README exit-code table lists every code of the failure table', async (t) => {
  const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
  for (const [kind, { exitCode }] of Object.entries(failureKinds))
    t.match(readme, new RegExp(`^\\| ${exitCode} \\|`, 'm'), `${kind} (${exitCode})`);
});

t.test('the `tunnel start` help lists every exit code it can end with', async (t) => {
  const start = createCli()
    .definitions()
    .find((definition) => definition.path === 'pam tunnel start');
  const details = (start?.details ?? '').replace(/\s+/g, ' ');
  for (const [kind, { exitCode }] of Object.entries(failureKinds)) {
    if (kind !== 'generic') t.match(details, new RegExp(`[ :,]${exitCode} `), `${kind} (${exitCode})`);
  }
});

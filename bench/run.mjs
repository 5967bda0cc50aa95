// `npm run bench`: every benchmark, one after another. `--json FILE` also writes the figures.
// Benchmarks report numbers; they never pass or fail on them.
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { benchDecide, printDecide } from './decide.mjs';

const { values } = parseArgs({ options: { json: { type: 'string' }, only: { type: 'string' } } });
const out = {};
const want = (name) => !values.only || values.only.split(',').includes(name);

if (want('decide')) {
  out.decide = await benchDecide();
  printDecide(out.decide);
}

if (values.json) writeFileSync(values.json, JSON.stringify(out, null, 2) + '\n');

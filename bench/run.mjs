// `npm run bench`: every benchmark, one after another. `--json FILE` also writes the figures.
// Benchmarks report numbers; they never pass or fail on them.
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { benchDecide, printDecide } from './decide.mjs';
import { benchProxy, printProfile, printProxy, profileProxy } from './proxy.mjs';
import { benchSoak, printSoak } from './soak.mjs';
import { benchPropagation, printPropagation } from './propagation.mjs';
import { benchIntercept, printIntercept } from './intercept.mjs';

const { values } = parseArgs({
  options: {
    json: { type: 'string' },
    only: { type: 'string' },
    // proxy, soak and profile (bench/proxy.mjs, bench/soak.mjs):
    rounds: { type: 'string' },
    duration: { type: 'string' },
    targets: { type: 'string' },
    minutes: { type: 'string' },
    'profile-dir': { type: 'string' },
    'portcullis-cli': { type: 'string' },
    'floor-workers': { type: 'string' },
  },
});
const out = {};
const want = (name) => !values.only || values.only.split(',').includes(name);
// Soak and profile take minutes and are only run when asked for by name.
const asked = (name) => values.only !== undefined && values.only.split(',').includes(name);
const proxyOptions = {
  ...(values.rounds ? { rounds: Number(values.rounds) } : {}),
  ...(values.duration ? { durationS: Number(values.duration) } : {}),
  ...(values.targets ? { targets: values.targets.split(',') } : {}),
  ...(values['portcullis-cli'] ? { portcullisCli: values['portcullis-cli'] } : {}),
  ...(values['floor-workers'] ? { floorWorkers: Number(values['floor-workers']) } : {}),
};

if (want('decide')) {
  out.decide = await benchDecide();
  printDecide(out.decide);
}

if (want('propagation')) {
  out.propagation = await benchPropagation();
  printPropagation(out.propagation);
}

if (want('intercept')) {
  out.intercept = await benchIntercept();
  printIntercept(out.intercept);
}

if (want('proxy')) {
  out.proxy = await benchProxy(proxyOptions);
  printProxy(out.proxy);
}

if (asked('soak')) {
  out.soak = await benchSoak({ ...proxyOptions, ...(values.minutes ? { minutes: Number(values.minutes) } : {}) });
  printSoak(out.soak);
}

if (asked('profile')) {
  out.profile = await profileProxy({ ...proxyOptions, ...(values['profile-dir'] ? { profileDir: values['profile-dir'] } : {}) });
  printProfile(out.profile);
}

if (values.json) writeFileSync(values.json, JSON.stringify(out, null, 2) + '\n');

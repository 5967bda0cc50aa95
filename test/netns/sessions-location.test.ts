/**
 * Session locations from a test MaxMind database, with clients connecting from "public" source
 * addresses that exist only inside this private network namespace (81.2.69.160 — London in the
 * test database — and 89.160.20.120 — Linköping). Nothing leaves the namespace.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { basic } from '../helpers/clients.js';
import { startHarness, startOrigin, type Harness, type Origin } from '../helpers/harness.js';
import { buildMmdb, cityRecord } from '../helpers/mmdb-writer.js';
import { describeNetns, setupNetns } from '../helpers/netns.js';

const LONDON = '81.2.69.160';
const LINKOPING = '89.160.20.120';

/** One proxied GET from a given source address. */
function getFrom(localAddress: string, proxyPort: number, auth: string, url: string, ua: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: proxyPort, localAddress, path: url, headers: { host: new URL(url).host, 'proxy-authorization': auth, 'user-agent': ua } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

describeNetns('session locations and new_location', () => {
  let h: Harness;
  let origin: Origin;
  let dir: string;

  beforeAll(async () => {
    setupNetns([{ cidr: `${LONDON}/32` }, { cidr: `${LINKOPING}/32` }]);
    origin = await startOrigin();
    dir = mkdtempSync(path.join(tmpdir(), 'portcullis-geo-'));
    writeFileSync(
      path.join(dir, 'city.mmdb'),
      buildMmdb([
        { network: '81.2.69.0/24', data: cityRecord('GB', 'London') },
        { network: '89.160.20.112/28', data: cityRecord('SE', 'Linköping') },
      ]),
    );
    h = await startHarness({
      policy: `
version: 1
destinations:
  origin: { hosts: [origin.test], ports: [${origin.port}], allowPrivate: [127.0.0.1/32] }
accounts: [{ match: "*", allow: [origin] }]
`,
      dns: { 'origin.test': { A: ['127.0.0.1'] } },
      flags: ['--geoip', path.join(dir, 'city.mmdb')],
    });
  });

  afterAll(async () => {
    await h?.close();
    await origin?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('location and device come from the client address and user agent; a new country is flagged', async () => {
    const first = await h.createSession('traveller', 'chat');
    await new Promise((r) => setTimeout(r, 5));
    const second = await h.createSession('traveller', 'codex-cli');
    const url = `http://origin.test:${origin.port}/`;
    expect(await getFrom(LONDON, h.proxyPort, basic('traveller', first.token), url, 'Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0')).toBe(200);
    expect(await getFrom(LINKOPING, h.proxyPort, basic('traveller', second.token), url, 'curl/8.5.0')).toBe(200);
    await new Promise((r) => setTimeout(r, 400)); // last-seen batches are written every 200 ms here
    const { sessions } = (await h.admin('GET', '/v1/accounts/traveller/sessions')).json as { sessions: Record<string, unknown>[] };
    const byId = new Map(sessions.map((s) => [s['id'], s]));
    expect(byId.get(first.id)).toMatchObject({ clientIp: LONDON, location: { country: 'GB', city: 'London', label: 'London, GB' }, device: { client: 'Firefox 121.0', os: 'Linux' }, flags: [] });
    expect(byId.get(second.id)).toMatchObject({ clientIp: LINKOPING, location: { country: 'SE', label: 'Linköping, SE' }, device: { client: 'curl 8.5.0' }, flags: ['new_location'] });
    const warned = h.logs.lines().find((l) => l['msg'] === 'session seen from a new location' && l['sessionId'] === second.id);
    expect(warned).toMatchObject({ location: 'Linköping, SE', flags: ['new_location'], clientIp: LINKOPING });
  });
});

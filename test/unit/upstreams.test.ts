import { afterEach, describe, expect, test } from 'vitest';
import type { CanonicalAuthority } from '../../src/net/canonical.js';
import { Upstreams } from '../../src/proxy/upstreams.js';

const at = (host: string, port = 80): CanonicalAuthority => ({ host, hostKind: 'name', port });

describe('Upstreams pools', () => {
  let upstreams: Upstreams | undefined;
  afterEach(async () => {
    await upstreams?.destroy();
    upstreams = undefined;
  });

  test('one pool per origin and checked address, reused', () => {
    upstreams = new Upstreams({ idleTimeoutMs: 1000 });
    const a = upstreams.pool('http', at('a.test'), '192.0.2.1');
    expect(upstreams.pool('http', at('a.test'), '192.0.2.1')).toBe(a);
    // Another address, port or scheme for the same name never shares a connection.
    expect(upstreams.pool('http', at('a.test'), '192.0.2.2')).not.toBe(a);
    expect(upstreams.pool('http', at('a.test', 8080), '192.0.2.1')).not.toBe(a);
    expect(upstreams.pool('https', at('a.test', 80), '192.0.2.1')).not.toBe(a);
  });

  test('beyond maxPools the least recently used pool is closed, however often the newest is used', () => {
    upstreams = new Upstreams({ idleTimeoutMs: 1000, maxPools: 2 });
    const a = upstreams.pool('http', at('a.test'), '192.0.2.1');
    const b = upstreams.pool('http', at('b.test'), '192.0.2.1');
    // a used again (several times in a row): b is now the least recently used.
    expect(upstreams.pool('http', at('a.test'), '192.0.2.1')).toBe(a);
    expect(upstreams.pool('http', at('a.test'), '192.0.2.1')).toBe(a);
    const c = upstreams.pool('http', at('c.test'), '192.0.2.1');
    expect(b.closed).toBe(true);
    expect(a.closed).toBe(false);
    expect(upstreams.pool('http', at('a.test'), '192.0.2.1')).toBe(a);
    // b comes back as a new pool; c (used before a) goes.
    const b2 = upstreams.pool('http', at('b.test'), '192.0.2.1');
    expect(b2).not.toBe(b);
    expect(c.closed).toBe(true);
    expect(a.closed).toBe(false);
  });
});

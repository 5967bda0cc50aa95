import { describe, expect, test } from 'vitest';
import { boundedMemo } from '../../src/bounded-memo.js';

describe('boundedMemo', () => {
  const counting = (fail?: (key: string) => boolean): { calls: string[]; f: (key: string) => { key: string } } => {
    const calls: string[] = [];
    return {
      calls,
      f: (key) => {
        calls.push(key);
        if (fail?.(key)) throw new Error(`bad ${key}`);
        return { key };
      },
    };
  };

  test('computes each key once and hands back the same value', () => {
    const c = counting();
    const memo = boundedMemo(c.f, 10, 100);
    const a = memo('a');
    expect(memo('a')).toBe(a);
    expect(memo('b')).toEqual({ key: 'b' });
    expect(c.calls).toEqual(['a', 'b']);
  });

  test('failures are never kept: a bad key is computed (and throws) every time', () => {
    const c = counting((k) => k.startsWith('bad'));
    const memo = boundedMemo(c.f, 10, 100);
    expect(() => memo('bad1')).toThrow('bad bad1');
    expect(() => memo('bad1')).toThrow('bad bad1');
    expect(c.calls).toEqual(['bad1', 'bad1']);
  });

  test('holds at most maxEntries, starting over when full, and never keeps long keys', () => {
    const c = counting();
    const memo = boundedMemo(c.f, 3, 5);
    for (const k of ['a', 'b', 'c']) memo(k);
    memo('d'); // full: starts over with d alone
    memo('a');
    expect(c.calls).toEqual(['a', 'b', 'c', 'd', 'a']);
    memo('d');
    expect(c.calls).toHaveLength(5);
    memo('longer-than-five');
    memo('longer-than-five');
    expect(c.calls.filter((k) => k === 'longer-than-five')).toHaveLength(2);
  });
});

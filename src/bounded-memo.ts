/**
 * A bounded memo of a pure function of a string: the same few hosts, URLs and account names
 * arrive on every request of a keep-alive connection. Only results are kept (a call that throws
 * throws again each time, so hostile input cannot fill the memo); keys longer than
 * `maxKeyLength` are never kept; a full memo starts over.
 */
export function boundedMemo<T>(compute: (key: string) => T, maxEntries: number, maxKeyLength: number): (key: string) => T {
  const memo = new Map<string, T>();
  return (key) => {
    const hit = memo.get(key);
    if (hit !== undefined) return hit;
    const value = compute(key);
    if (key.length <= maxKeyLength) {
      if (memo.size >= maxEntries) memo.clear();
      memo.set(key, value);
    }
    return value;
  };
}

import { defineConfig } from 'vitest/config';

// The namespace suite: run only by scripts/run-tests.mjs, under `unshare -n` with PORTCULLIS_NETNS=1.
export default defineConfig({
  test: {
    include: ['test/netns/**/*.test.ts'],
    testTimeout: 20_000,
    hookTimeout: 30_000,
    pool: 'forks',
    // The files share one namespace and its interfaces; running them one after another keeps
    // each file's view of the namespace predictable.
    fileParallelism: false,
  },
});

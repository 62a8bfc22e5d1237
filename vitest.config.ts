// vitest.config.ts — two suites: unit (no root, parallel) and kernel (root, real kernel, serial).
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
        },
      },
      {
        test: {
          name: 'kernel',
          include: ['test/kernel/**/*.kernel.test.ts'],
          // One process runs the kernel files one after another (fileParallelism is not a project
          // option): they share the host's kernel, and the suite ends with a leftovers check.
          pool: 'forks',
          poolOptions: { forks: { singleFork: true } },
          sequence: { concurrent: false },
          testTimeout: 120_000,
          hookTimeout: 120_000,
          globalSetup: ['test/kernel/global-setup.ts'],
        },
      },
    ],
  },
});

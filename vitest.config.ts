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
          fileParallelism: false,
          sequence: { concurrent: false },
          testTimeout: 120_000,
          hookTimeout: 120_000,
          globalSetup: ['test/kernel/global-setup.ts'],
        },
      },
    ],
  },
});

import { defineConfig } from "vitest/config";

// Reliability tier: real worker processes, killed brokers, restarted servers. Serial, because
// some tests restart shared services. `CHICORY_RELIABILITY_FULL=1` selects the full tier.
export default defineConfig({
  test: {
    include: ["test/reliability/**/*.test.ts"],
    testTimeout: 300_000,
    hookTimeout: 120_000,
    pool: "forks",
    fileParallelism: false,
    maxWorkers: 1,
  },
});

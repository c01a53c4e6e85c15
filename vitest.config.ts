import { defineConfig } from "vitest/config";

// Main suite: unit, contract, integration. Files run in parallel (2 at a time).
// The reliability tier (fault injection, restarts) runs afterwards, one file at a time,
// with `vitest.reliability.config.ts`.
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    exclude: ["test/reliability/**", "node_modules/**"],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: "forks",
    maxWorkers: 2,
    // type tests: with exactOptionalPropertyTypes on, as in projects `tsc --init` creates
    typecheck: { enabled: true, include: ["test/types/**/*.test-d.ts"], tsconfig: "./tsconfig.types.json" },
  },
});

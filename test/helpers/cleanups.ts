/**
 * Per-test cleanup: steps a test registers (close this, delete that) run after it, last
 * registered first, even when the test failed.
 */
import { afterEach } from "vitest";

/** Cleanup steps of the running test. */
export type Cleanups = Array<() => Promise<void> | void>;

/**
 * Registers an `afterEach` in the calling suite that runs, in reverse order, every step pushed
 * onto the returned list during a test.
 */
export function useCleanups(): Cleanups {
  const cleanups: Cleanups = [];
  afterEach(() => runCleanups(cleanups));
  return cleanups;
}

/** Runs, in reverse order, and removes every step on `cleanups` now (before the test ends). */
export async function runCleanups(cleanups: Cleanups): Promise<void> {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
}

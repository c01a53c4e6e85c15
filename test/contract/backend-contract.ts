/**
 * The backend contract: every semantic of `src/backends/backend.ts` and SPEC §4/§7, run
 * against each implementation by `test/contract/<kind>.contract.test.ts`:
 *
 * ```ts
 * runBackendContract({ name: "postgres", create: () => new PostgresBackend({ url, tablePrefix }),
 *   destroy: async (backend) => { ... } });
 * ```
 */
import { afterEach, beforeEach, describe } from "vitest";
import type { Backend } from "../../src/backends/backend.js";
import { backendHeartbeatTests } from "./backend-contract-heartbeats.js";
import { backendResultTests } from "./backend-contract-results.js";
import { backendWaitTests } from "./backend-contract-wait.js";

/** How a backend implementation plugs into {@link runBackendContract}. */
export interface BackendContractTarget {
  /** Shown in the describe block: `backend contract: ${name}`. */
  name: string;
  /** A fresh, isolated backend (own key prefix / file / table prefix), NOT yet connected. */
  create(): Promise<Backend> | Backend;
  /** Removes everything the backend created; called after `disconnect`. */
  destroy?(backend: Backend): Promise<void>;
}

/** What the test groups get: the connected backend of the running test. */
export interface BackendHarness {
  /** The target under test. */
  readonly target: BackendContractTarget;
  /** The connected backend of the running test. */
  backend(): Backend;
}

/** Registers the backend contract suite for `target`. */
export function runBackendContract(target: BackendContractTarget): void {
  describe(`backend contract: ${target.name}`, () => {
    let running: Backend | undefined;
    const harness: BackendHarness = {
      target,
      backend: () => {
        if (!running) throw new Error("no backend: the harness is used outside a test");
        return running;
      },
    };

    beforeEach(async () => {
      const backend = await target.create();
      await backend.connect();
      running = backend;
    });

    afterEach(async () => {
      const backend = running;
      running = undefined;
      if (!backend) return;
      try {
        await backend.disconnect();
      } finally {
        await target.destroy?.(backend);
      }
    });

    backendResultTests(harness);
    backendWaitTests(harness);
    backendHeartbeatTests(harness);
  });
}

/**
 * Backend contract, waiting for results: notification, immediate resolution, timeout,
 * abort and many concurrent waiters.
 */
import { expect, it } from "vitest";
import { uniqueName } from "../helpers/services.js";
import type { BackendHarness } from "./backend-contract.js";
import { record } from "./backend-contract-results.js";
import { sleep } from "./contract-helpers.js";

/** Registers the waitForResult tests. */
export function backendWaitTests(h: BackendHarness): void {
  it("waitForResult resolves when a terminal result is stored later", { timeout: 10_000 }, async () => {
    const backend = h.backend();
    const id = uniqueName("task-");
    const waiting = backend.waitForResult(id, { timeoutMs: 8000, pollIntervalMs: 100 });
    await sleep(50);
    await backend.setState(id, "STARTED");
    await sleep(50);
    await backend.storeResult(record("SUCCESS", { taskId: id, result: { done: true } }));
    const got = await waiting;
    expect(got?.state).toBe("SUCCESS");
    expect(got?.result).toEqual({ done: true });
  });

  it("waitForResult resolves at once when the result is already terminal", { timeout: 5000 }, async () => {
    const backend = h.backend();
    const stored = record("FAILURE", { error: { type: "Error", message: "x" } });
    await backend.storeResult(stored);
    const got = await backend.waitForResult(stored.taskId, { timeoutMs: 60_000, pollIntervalMs: 10_000 });
    expect(got?.state).toBe("FAILURE");
    expect(got?.error).toMatchObject({ type: "Error", message: "x" });
  });

  it("waitForResult returns null when timeoutMs passes", async () => {
    const backend = h.backend();
    expect(await backend.waitForResult(uniqueName("missing-"), { timeoutMs: 200, pollIntervalMs: 50 })).toBeNull();
    const id = uniqueName("task-");
    await backend.setState(id, "STARTED");
    expect(await backend.waitForResult(id, { timeoutMs: 200, pollIntervalMs: 50 })).toBeNull();
  });

  it("waitForResult returns null when the signal aborts", { timeout: 5000 }, async () => {
    const backend = h.backend();
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), 100);
    try {
      expect(await backend.waitForResult(uniqueName("missing-"), { signal: controller.signal })).toBeNull();
    } finally {
      clearTimeout(timer);
    }
    expect(await backend.waitForResult(uniqueName("missing-"), { signal: AbortSignal.abort() })).toBeNull();
  });

  it("200 concurrent waiters on different ids all resolve", { timeout: 30_000 }, async () => {
    const backend = h.backend();
    const ids = Array.from({ length: 200 }, () => uniqueName("task-"));
    const waiters = ids.map((id) => backend.waitForResult(id, { timeoutMs: 25_000, pollIntervalMs: 200 }));
    for (let i = 0; i < ids.length; i += 20) {
      await Promise.all(
        ids.slice(i, i + 20).map((id, j) => backend.storeResult(record("SUCCESS", { taskId: id, result: i + j }))),
      );
    }
    const got = await Promise.all(waiters);
    expect(got.map((r) => r?.taskId)).toEqual(ids);
    expect(got.every((r) => r?.state === "SUCCESS")).toBe(true);
    expect(got.map((r) => r?.result)).toEqual(ids.map((_, i) => i));
  });
}

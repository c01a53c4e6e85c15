/**
 * Backend contract, results and states: round trips, precedence, concurrency, delete.
 */
import { expect, it } from "vitest";
import type { TaskRecord, TaskState } from "../../src/backends/backend.js";
import { isTerminalState } from "../../src/backends/backend.js";
import type { JsonValue } from "../../src/core/json.js";
import { uniqueName } from "../helpers/services.js";
import type { BackendHarness } from "./backend-contract.js";
import {
  expectClosedAfterOvertakenConnects,
  expectOpenAfterDisconnectUnderWay,
  TRICKY_STRINGS,
} from "./contract-helpers.js";

/** A record with a random id. */
export function record(state: TaskState, extra: Partial<TaskRecord> = {}): TaskRecord {
  return { taskId: uniqueName("task-"), state, updatedAt: new Date().toISOString(), ...extra };
}

const NESTED: JsonValue = {
  text: TRICKY_STRINGS[0] ?? "",
  tricky: [...TRICKY_STRINGS],
  nested: { deep: { deeper: [1, 2.5, -3, 1e21, 0, true, false, null, { empty: {} }, []] } },
  "key with spaces \u0000 and 🎉": "value",
  ["__proto__"]: { inert: true },
  constructor: "inert",
};

/** Registers the result and state tests. */
export function backendResultTests(h: BackendHarness): void {
  it("round-trips a SUCCESS record with a JSON value", async () => {
    const backend = h.backend();
    const stored = record("SUCCESS", { result: NESTED, retries: 2, taskName: "contract.task" });
    await backend.storeResult(stored);
    const got = await backend.getResult(stored.taskId);
    expect(got).not.toBeNull();
    expect(got?.taskId).toBe(stored.taskId);
    expect(got?.state).toBe("SUCCESS");
    expect(got?.result).toEqual(NESTED);
    expect(Object.getPrototypeOf(got?.result)?.inert).toBeUndefined();
    expect(got?.retries).toBe(2);
    expect(got?.taskName).toBe("contract.task");
    expect(Number.isNaN(Date.parse(got?.updatedAt ?? ""))).toBe(false);
  });

  it("round-trips scalar results and tricky strings exactly", async () => {
    const backend = h.backend();
    const values: JsonValue[] = [null, 0, -1.5, true, false, "", ...TRICKY_STRINGS, [], {}];
    for (const value of values) {
      const stored = record("SUCCESS", { result: value });
      await backend.storeResult(stored);
      expect((await backend.getResult(stored.taskId))?.result).toEqual(value);
    }
  });

  it("round-trips a 200 KiB string result", async () => {
    const backend = h.backend();
    const big = `${"é🎉x\u0000".repeat(25_000)}${"a".repeat(30_000)}`;
    expect(Buffer.byteLength(big)).toBeGreaterThan(200 * 1024);
    const stored = record("SUCCESS", { result: { big } });
    await backend.storeResult(stored);
    const got = await backend.getResult(stored.taskId);
    const value = (got?.result as { big?: string } | undefined)?.big;
    expect(value?.length).toBe(big.length);
    expect(value === big).toBe(true);
  });

  it("round-trips a FAILURE record with its error", async () => {
    const backend = h.backend();
    const error = {
      type: "TypeError",
      message: 'bad 🎉 "input" \u0000',
      stack: "TypeError: bad\n    at x (y.ts:1:2)",
      code: "ERR_BAD_INPUT",
    };
    const stored = record("FAILURE", { error, retries: 3 });
    await backend.storeResult(stored);
    const got = await backend.getResult(stored.taskId);
    expect(got?.state).toBe("FAILURE");
    expect(got?.error).toEqual(error);
    expect(got?.retries).toBe(3);
  });

  it("returns null for an unknown id", async () => {
    expect(await h.backend().getResult(uniqueName("missing-"))).toBeNull();
  });

  it("setState moves through STARTED, RETRY and SUCCESS", async () => {
    const backend = h.backend();
    const id = uniqueName("task-");
    await backend.setState(id, "STARTED", { taskName: "contract.task" });
    expect((await backend.getResult(id))?.state).toBe("STARTED");
    const error = { type: "Error", message: "transient" };
    await backend.setState(id, "RETRY", { error, retries: 1 });
    const retry = await backend.getResult(id);
    expect(retry?.state).toBe("RETRY");
    expect(retry?.error).toMatchObject(error);
    expect(retry?.retries).toBe(1);
    await backend.storeResult(record("SUCCESS", { taskId: id, result: 42, retries: 1 }));
    const done = await backend.getResult(id);
    expect(done?.state).toBe("SUCCESS");
    expect(done?.result).toBe(42);
  });

  for (const terminal of ["SUCCESS", "FAILURE"] as const) {
    it(`never overwrites ${terminal} with a non-terminal state`, async () => {
      const backend = h.backend();
      const stored = record(terminal, {
        result: terminal === "SUCCESS" ? { ok: 1 } : undefined,
        error: terminal === "FAILURE" ? { type: "Error", message: "x" } : undefined,
      });
      await backend.storeResult(stored);
      for (const state of ["STARTED", "RETRY", "PENDING"] as const) {
        await backend.setState(stored.taskId, state, { error: { type: "Error", message: "late" }, retries: 9 });
        await backend.storeResult(record(state, { taskId: stored.taskId }));
      }
      const got = await backend.getResult(stored.taskId);
      expect(got?.state).toBe(terminal);
      if (terminal === "SUCCESS") expect(got?.result).toEqual({ ok: 1 });
      else expect(got?.error).toMatchObject({ type: "Error", message: "x" });
    });
  }

  it("allows FAILURE then DEAD_LETTERED, and a duplicate SUCCESS to overwrite", async () => {
    const backend = h.backend();
    const failed = record("FAILURE", { error: { type: "Error", message: "x" } });
    await backend.storeResult(failed);
    await backend.setState(failed.taskId, "DEAD_LETTERED");
    expect((await backend.getResult(failed.taskId))?.state).toBe("DEAD_LETTERED");
    const done = record("SUCCESS", { result: 1 });
    await backend.storeResult(done);
    await backend.storeResult({ ...done, result: 2, updatedAt: new Date().toISOString() });
    const got = await backend.getResult(done.taskId);
    expect(got?.state).toBe("SUCCESS");
    expect(got?.result).toBe(2);
  });

  it("20 concurrent duplicate writes of one id never throw and end terminal", async () => {
    const backend = h.backend();
    const id = uniqueName("task-");
    const writes = Array.from({ length: 20 }, (_, i) => {
      if (i % 4 === 0) return backend.setState(id, "STARTED");
      if (i % 4 === 1) return backend.setState(id, "RETRY", { error: { type: "Error", message: "r" }, retries: 1 });
      if (i % 4 === 2) return backend.storeResult(record("SUCCESS", { taskId: id, result: i }));
      return backend.storeResult(record("FAILURE", { taskId: id, error: { type: "Error", message: `f${i}` } }));
    });
    await Promise.all(writes);
    const got = await backend.getResult(id);
    expect(got).not.toBeNull();
    expect(isTerminalState(got?.state ?? "PENDING")).toBe(true);
  });

  it("deleteResult removes a record, and deleting an unknown id is fine", async () => {
    const backend = h.backend();
    const stored = record("SUCCESS", { result: "x" });
    await backend.storeResult(stored);
    await backend.deleteResult(stored.taskId);
    expect(await backend.getResult(stored.taskId)).toBeNull();
    await backend.deleteResult(stored.taskId);
    await backend.deleteResult(uniqueName("missing-"));
  });

  it("deleteResultIf deletes the record read, and keeps one written after the read", async () => {
    const backend = h.backend();
    if (!backend.deleteResultIf) throw new Error(`${backend.kind} backend has no deleteResultIf`);
    const stored = record("DEAD_LETTERED", { error: { type: "Error", message: "first run" } });
    await backend.storeResult(stored);
    const seen = await backend.getResult(stored.taskId);
    if (seen === null) throw new Error("stored record not found");
    expect(await backend.deleteResultIf(stored.taskId, { ...seen, state: "FAILURE" })).toBe(false);
    expect(await backend.deleteResultIf(stored.taskId, seen)).toBe(true);
    expect(await backend.getResult(stored.taskId)).toBeNull();
    expect(await backend.deleteResultIf(stored.taskId, seen)).toBe(false);
    expect(await backend.deleteResultIf(uniqueName("missing-"), seen)).toBe(false);

    // A newer run's record, same state, written after the read (rewritten until its time differs).
    await backend.storeResult(stored);
    const first = await backend.getResult(stored.taskId);
    if (first === null) throw new Error("stored record not found");
    let newer = first;
    while (newer.updatedAt === first.updatedAt) {
      await backend.storeResult({ ...stored, updatedAt: new Date().toISOString() });
      newer = (await backend.getResult(stored.taskId)) ?? first;
    }
    expect(await backend.deleteResultIf(stored.taskId, first)).toBe(false);
    expect((await backend.getResult(stored.taskId))?.updatedAt).toBe(newer.updatedAt);
    await backend.deleteResult(stored.taskId);
  });

  it("healthcheck reports connected; connect and disconnect are idempotent", async () => {
    const backend = h.backend();
    const health = await backend.healthcheck();
    expect(health.connected).toBe(true);
    expect(health.error).toBeUndefined();
    await backend.connect();
    const stored = record("SUCCESS", { result: 1 });
    await backend.storeResult(stored);
    expect((await backend.getResult(stored.taskId))?.state).toBe("SUCCESS");
    await backend.disconnect();
    await backend.disconnect();
    expect(typeof (await backend.healthcheck()).connected).toBe("boolean");
  });

  it("a disconnect() after a connect() still waiting or opening leaves the backend closed (the connect may reject)", async () => {
    const backend = h.backend();
    await expectClosedAfterOvertakenConnects(backend);
  });

  it("a connect() called while a disconnect() is under way opens once that is done: the backend then stores and reads", async () => {
    const backend = h.backend();
    await expectOpenAfterDisconnectUnderWay(backend);
    const stored = record("SUCCESS", { result: 2 });
    await backend.storeResult(stored);
    expect((await backend.getResult(stored.taskId))?.result).toBe(2);
    await backend.deleteResult(stored.taskId);
  });
}

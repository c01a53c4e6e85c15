import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { Backend, TaskRecord, WaitOptions } from "../../src/backends/backend.js";
import { TimeoutError } from "../../src/errors.js";
import { Chicory } from "../../src/index.js";
import { AsyncResult } from "../../src/result.js";

/**
 * A backend in an outage: its wait ends at the timeout with nothing, and a read never answers.
 * Only the two calls `get()` makes exist.
 */
function unansweringBackend(): { backend: Backend; reads: () => number } {
  let reads = 0;
  const stub = {
    waitForResult(_taskId: string, options: WaitOptions): Promise<TaskRecord | null> {
      return new Promise((resolve) => setTimeout(() => resolve(null), options.timeoutMs));
    },
    getResult(): Promise<TaskRecord | null> {
      reads++;
      return new Promise(() => {});
    },
  };
  return { backend: stub as unknown as Backend, reads: () => reads };
}

describe("AsyncResult.get() when the backend does not answer", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it.each([
    { timeout: 5, lateMs: 500 }, // a tenth of the timeout
    { timeout: 0.5, lateMs: 250 }, // at least 250 ms for the last read
    { timeout: 60, lateMs: 1000 }, // at most 1 s
  ])("a $timeout s timeout throws at most $lateMs ms late", async ({ timeout, lateMs }) => {
    const { backend, reads } = unansweringBackend();
    let outcome: unknown;
    void new AsyncResult("t1", backend).get({ timeout }).then(
      () => (outcome = "resolved"),
      (error: unknown) => (outcome = error),
    );
    await vi.advanceTimersByTimeAsync(timeout * 1000 + lateMs - 1);
    expect(reads()).toBe(1); // the last read was made, and is still out
    expect(outcome).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1);
    expect(outcome).toBeInstanceOf(TimeoutError);
    expect((outcome as Error).message).toBe(
      `task t1: no result after ${timeout} s (the backend did not answer within ${lateMs / 1000} s: unreachable?)`,
    );
  });

  it("a timeout says so when the last read failed: the backend, not the task, is the likely reason", async () => {
    const backend = {
      waitForResult: (_taskId: string, options: WaitOptions) =>
        new Promise<null>((resolve) => setTimeout(() => resolve(null), options.timeoutMs)),
      getResult: () => Promise.reject(new Error("connect ECONNREFUSED 127.0.0.1:6399")),
    } as unknown as Backend;
    const waiting = new AsyncResult("t2", backend).get({ timeout: 2 }).catch((error: unknown) => error);
    await vi.advanceTimersByTimeAsync(2000);
    const error = await waiting;
    expect(error).toBeInstanceOf(TimeoutError);
    expect((error as Error).message).toBe(
      "task t2: no result after 2 s (the backend is unreachable: connect ECONNREFUSED 127.0.0.1:6399)",
    );
  });

  it("timeout 0 (no wait) throws TimeoutError 250 ms into a read that does not answer", async () => {
    const { backend } = unansweringBackend();
    let outcome: unknown;
    void new AsyncResult("t1", backend).get({ timeout: 0 }).then(
      () => (outcome = "resolved"),
      (error: unknown) => (outcome = error),
    );
    await vi.advanceTimersByTimeAsync(249);
    expect(outcome).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1);
    expect(outcome).toBeInstanceOf(TimeoutError);
    expect((outcome as Error).message).toContain("did not answer within 0.25 s");
  });

  it("a backend not connected yet connects within the timeout (or the abort), and the wait gets what is left", async () => {
    const waits: WaitOptions[] = [];
    let connect: () => void = () => undefined;
    const backend = {
      isReady: false,
      connect: () =>
        new Promise<void>((resolve) => {
          connect = resolve;
        }),
      async waitForResult(_id: string, options: WaitOptions) {
        waits.push(options);
        return { taskId: "t1", state: "SUCCESS", result: 3, updatedAt: "2024-01-01T00:00:00.000Z" } as TaskRecord;
      },
    } as unknown as Backend;
    // never connects: the timeout ends it (before: after the client's own connect limit, 10 s)
    let outcome: unknown;
    void new AsyncResult("t1", backend).get({ timeout: 1 }).then(
      () => (outcome = "resolved"),
      (error: unknown) => (outcome = error),
    );
    await vi.advanceTimersByTimeAsync(999);
    expect(outcome).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1);
    expect(outcome).toBeInstanceOf(TimeoutError);
    expect((outcome as Error).message).toBe("task t1: the backend did not connect within 1 s");
    // aborted while connecting
    const abort = new AbortController();
    const aborted = new AsyncResult("t1", backend).get({ signal: abort.signal }).catch((error: unknown) => error);
    const reason = new Error("the request was cancelled");
    abort.abort(reason);
    expect(((await aborted) as Error).message).toBe("task t1: the wait was aborted");
    expect(((await aborted) as Error).cause).toBe(reason);
    // connected 400 ms into a 1 s timeout: the wait has the 600 ms left
    const done = new AsyncResult("t1", backend).get({ timeout: 1 });
    await vi.advanceTimersByTimeAsync(400);
    connect();
    expect(await done).toBe(3);
    expect(waits.map((w) => w.timeoutMs)).toEqual([600]);
  });

  it("timeout Infinity waits as long as it takes, as null does", async () => {
    const waits: WaitOptions[] = [];
    const done: TaskRecord = { taskId: "t1", state: "SUCCESS", result: 7, updatedAt: "2024-01-01T00:00:00.000Z" };
    const backend = {
      async waitForResult(_id: string, options: WaitOptions) {
        waits.push(options);
        return done;
      },
    } as unknown as Backend;
    expect(await new AsyncResult("t1", backend).get({ timeout: Number.POSITIVE_INFINITY })).toBe(7);
    expect(waits[0]?.timeoutMs).toBeUndefined();
  });
});

describe("an AsyncResult built from an id", () => {
  it("refuses an empty, overlong or non-string id (it would read as PENDING forever)", () => {
    for (const [id, got] of [
      ["", "0 characters"],
      ["x".repeat(256), "256 characters"],
      [undefined, "undefined"],
    ] as const) {
      expect(() => new AsyncResult(id as string, null)).toThrow(
        `AsyncResult: taskId must be a string of 1-255 characters, got ${got}`,
      );
    }
    expect(new AsyncResult("x".repeat(255), null).taskId).toHaveLength(255);
  });

  it("takes the defaults of the app whose backend it is given (CHICORY_RESULT_DEFAULT_TIMEOUT)", async () => {
    const app = new Chicory({
      broker: "memory",
      backend: "memory",
      config: { env: { CHICORY_RESULT_DEFAULT_TIMEOUT: "0.05" } },
    });
    await app.connect();
    try {
      // no run, no result: get() without a timeout ends at the app's default, as delay()'s results do
      await expect(new AsyncResult("never-runs", app.backend).get()).rejects.toBeInstanceOf(TimeoutError);
      // defaults passed to the constructor win
      const own = new AsyncResult("never-runs", app.backend, { defaultTimeout: 0 });
      await expect(own.get()).rejects.toBeInstanceOf(TimeoutError);
    } finally {
      await app.disconnect();
    }
  });
});

describe("AsyncResult.get() timing out in numbers", () => {
  it("the get()s that time out together on an unconsumed queue ask the broker for its consumers once, and all say so", async () => {
    const app = new Chicory({ broker: "memory", backend: "memory", config: { env: {} } });
    const t = app.task({ name: "nobody_home", queue: "nobody" }, async () => 1);
    const count = vi.spyOn(app.broker, "getConsumerCount");
    const results = await Promise.all(Array.from({ length: 200 }, () => t.delay()));
    const errors = await Promise.all(results.map((r) => r.get({ timeout: 0.2 }).catch((e: unknown) => e)));
    // before: one count per get()
    expect(count.mock.calls.length).toBeLessThan(10);
    for (const error of errors) {
      expect(String((error as Error).message)).toMatch(/the broker at memory:\S* counts no consumer of queue "nobody"/);
    }
    await app.disconnect();
  });
});

import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { TaskRecord, TaskState } from "../../src/backends/backend.js";
import { ResultWaiter } from "../../src/backends/result-waiter.js";

function rec(taskId: string, state: TaskState): TaskRecord {
  return { taskId, state, updatedAt: "2024-01-01T00:00:00.000Z" };
}

/** A fake store whose batched read is recorded. */
function fakeStore() {
  const records = new Map<string, TaskRecord>();
  const calls: string[][] = [];
  const fetchMany = vi.fn(async (ids: string[]) => {
    calls.push([...ids]);
    const out = new Map<string, TaskRecord>();
    for (const id of ids) {
      const r = records.get(id);
      if (r) out.set(id, r);
    }
    return out;
  });
  return { records, calls, fetchMany };
}

describe("ResultWaiter", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("resolves at once, in one batched read, when results are already terminal", async () => {
    const store = fakeStore();
    store.records.set("a", rec("a", "SUCCESS"));
    store.records.set("b", rec("b", "FAILURE"));
    const waiter = new ResultWaiter({ fetchMany: store.fetchMany, pollIntervalMs: 1000 });
    const a = waiter.wait("a");
    const b = waiter.wait("b");
    await vi.advanceTimersByTimeAsync(0);
    expect(await a).toEqual(rec("a", "SUCCESS"));
    expect(await b).toEqual(rec("b", "FAILURE"));
    expect(store.calls).toEqual([["a", "b"]]);
    expect(waiter.size).toBe(0);
  });

  it("polls every waiting id in one call per interval, ignoring non-terminal records", async () => {
    const store = fakeStore();
    store.records.set("a", rec("a", "STARTED"));
    const waiter = new ResultWaiter({ fetchMany: store.fetchMany, pollIntervalMs: 100 });
    const results = ["a", "b", "c"].map((id) => waiter.wait(id));
    await vi.advanceTimersByTimeAsync(0);
    expect(store.calls).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(100);
    expect(store.calls).toHaveLength(2);
    expect(store.calls[1]).toEqual(["a", "b", "c"]);
    store.records.set("b", rec("b", "SUCCESS"));
    await vi.advanceTimersByTimeAsync(100);
    expect((await results[1])?.state).toBe("SUCCESS");
    await vi.advanceTimersByTimeAsync(100);
    expect(store.calls.at(-1)).toEqual(["a", "c"]);
    expect(waiter.size).toBe(2);
    waiter.close();
    expect(await results[0]).toBeNull();
  });

  it("notify resolves waiters at once and ignores non-terminal records", async () => {
    const store = fakeStore();
    const waiter = new ResultWaiter({ fetchMany: store.fetchMany, pollIntervalMs: 60_000 });
    const first = waiter.wait("x");
    const second = waiter.wait("x");
    waiter.notify(rec("x", "RETRY"));
    expect(waiter.size).toBe(1);
    waiter.notify(rec("x", "DEAD_LETTERED"));
    expect((await first)?.state).toBe("DEAD_LETTERED");
    expect((await second)?.state).toBe("DEAD_LETTERED");
    expect(waiter.size).toBe(0);
    waiter.notify(rec("unknown", "SUCCESS"));
  });

  it("resolves null on timeout, removes the waiter and stops polling", async () => {
    const store = fakeStore();
    const waiter = new ResultWaiter({ fetchMany: store.fetchMany, pollIntervalMs: 100 });
    const result = waiter.wait("a", { timeoutMs: 250 });
    await vi.advanceTimersByTimeAsync(250);
    expect(await result).toBeNull();
    expect(waiter.size).toBe(0);
    const calls = store.calls.length;
    await vi.advanceTimersByTimeAsync(1000);
    expect(store.calls.length).toBe(calls);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("a timeout past what a timer holds (30 days) ends after 30 days, not 24.8", async () => {
    const store = fakeStore();
    const days = 86_400_000;
    const waiter = new ResultWaiter({ fetchMany: store.fetchMany, pollIntervalMs: 10 * days });
    let settled = false;
    const result = waiter.wait("a", { timeoutMs: 30 * days }).finally(() => {
      settled = true;
    });
    await vi.advanceTimersByTimeAsync(29 * days);
    expect(settled).toBe(false);
    await vi.advanceTimersByTimeAsync(days);
    expect(await result).toBeNull();
    expect(waiter.size).toBe(0);
  });

  it("resolves null when the signal aborts, and at once for an aborted signal", async () => {
    const store = fakeStore();
    const waiter = new ResultWaiter({ fetchMany: store.fetchMany, pollIntervalMs: 100 });
    const controller = new AbortController();
    const result = waiter.wait("a", { signal: controller.signal });
    controller.abort();
    expect(await result).toBeNull();
    expect(waiter.size).toBe(0);
    expect(await waiter.wait("b", { signal: AbortSignal.abort() })).toBeNull();
    await vi.advanceTimersByTimeAsync(500);
    expect(store.calls).toEqual([]);
  });

  it("keeps waiting after a failed read and reports the error", async () => {
    const store = fakeStore();
    const errors: unknown[] = [];
    let fail = true;
    const waiter = new ResultWaiter({
      fetchMany: async (ids) => {
        if (fail) throw new Error("down");
        return store.fetchMany(ids);
      },
      pollIntervalMs: 100,
      onError: (error) => errors.push(error),
    });
    const result = waiter.wait("a");
    await vi.advanceTimersByTimeAsync(150);
    expect(errors.length).toBeGreaterThanOrEqual(1);
    fail = false;
    store.records.set("a", rec("a", "SUCCESS"));
    await vi.advanceTimersByTimeAsync(100);
    expect((await result)?.state).toBe("SUCCESS");
  });

  it("does not report a read that fails because the waiter closed while it was out (a clean disconnect)", async () => {
    const errors: unknown[] = [];
    let release!: () => void;
    const waiter = new ResultWaiter({
      fetchMany: () =>
        new Promise((_, reject) => {
          release = () => reject(new Error("Connection is closed."));
        }),
      pollIntervalMs: 100,
      onError: (error) => errors.push(error),
    });
    const result = waiter.wait("a");
    await vi.advanceTimersByTimeAsync(150); // the first read is out
    waiter.close();
    release();
    expect(await result).toBeNull();
    await vi.advanceTimersByTimeAsync(10);
    expect(errors).toEqual([]);
  });

  it("rejects the waiters of an id whose stored record cannot be read, and only those", async () => {
    const store = fakeStore();
    store.records.set("good", rec("good", "SUCCESS"));
    const unreadable = new Error("the stored result at p:result:bad cannot be read: not valid JSON");
    const fetchMany = async (ids: string[]) => {
      const out = new Map<string, TaskRecord | Error>(await store.fetchMany(ids));
      if (ids.includes("bad")) out.set("bad", unreadable);
      return out;
    };
    const waiter = new ResultWaiter({ fetchMany, pollIntervalMs: 1000 });
    const bad = [waiter.wait("bad"), waiter.wait("bad", { timeoutMs: 60_000 })];
    const good = waiter.wait("good");
    const settled = Promise.allSettled([...bad, good]);
    await vi.advanceTimersByTimeAsync(0);
    const [first, second, third] = await settled;
    expect(first).toEqual({ status: "rejected", reason: unreadable });
    expect(second).toEqual({ status: "rejected", reason: unreadable });
    expect(third).toEqual({ status: "fulfilled", value: rec("good", "SUCCESS") });
    expect(waiter.size).toBe(0);
  });

  it("reads in chunks of maxBatch", async () => {
    const store = fakeStore();
    const waiter = new ResultWaiter({ fetchMany: store.fetchMany, pollIntervalMs: 100, maxBatch: 2 });
    for (const id of ["a", "b", "c", "d", "e"]) void waiter.wait(id);
    await vi.advanceTimersByTimeAsync(0);
    expect(store.calls).toEqual([["a", "b"], ["c", "d"], ["e"]]);
    waiter.close();
  });

  it("uses a smaller per-wait poll interval", async () => {
    const store = fakeStore();
    const waiter = new ResultWaiter({ fetchMany: store.fetchMany, pollIntervalMs: 10_000 });
    const result = waiter.wait("a", { pollIntervalMs: 50 });
    await vi.advanceTimersByTimeAsync(0);
    store.records.set("a", rec("a", "SUCCESS"));
    await vi.advanceTimersByTimeAsync(50);
    expect((await result)?.state).toBe("SUCCESS");
  });

  it("a poll interval past what a timer holds (weeks) polls rarely, not every millisecond", async () => {
    const store = fakeStore();
    const waiter = new ResultWaiter({ fetchMany: store.fetchMany, pollIntervalMs: 500 });
    void waiter.wait("a", { pollIntervalMs: 30 * 86_400_000 });
    await vi.advanceTimersByTimeAsync(1000);
    expect(store.calls.length).toBe(1); // the first read only
    waiter.close();
  });

  it("never overlaps its periodic polls when a read is slow (a new wait's first read may run beside one)", async () => {
    let active = 0;
    let maxActive = 0;
    let reads = 0;
    const waiter = new ResultWaiter({
      fetchMany: async () => {
        reads++;
        active++;
        maxActive = Math.max(maxActive, active);
        await new Promise((resolve) => setTimeout(resolve, 350));
        active--;
        return new Map();
      },
      pollIntervalMs: 100,
    });
    void waiter.wait("a");
    await vi.advanceTimersByTimeAsync(1000);
    expect(maxActive).toBe(2); // the first read, and one periodic poll beside it
    expect(reads).toBeLessThanOrEqual(4); // not one per 100 ms tick
    waiter.close();
  });

  it("new waits arriving without pause, each with its first read, do not keep the periodic poll from running", async () => {
    const store = fakeStore();
    const slowFetch = async (ids: string[]) => {
      await new Promise((resolve) => setTimeout(resolve, 30)); // a round trip
      return store.fetchMany(ids);
    };
    const waiter = new ResultWaiter({ fetchMany: slowFetch, pollIntervalMs: 100 });
    // its record is written with no notification (lost): only the periodic poll finds it
    let resolvedAt: number | undefined;
    const start = Date.now();
    void waiter.wait("victim").then(() => {
      resolvedAt = Date.now() - start;
    });
    await vi.advanceTimersByTimeAsync(50);
    store.records.set("victim", rec("victim", "SUCCESS"));
    // a new wait every 10 ms, each with its own first read (30 ms): those reads always overlap
    for (let i = 0; i < 60 && resolvedAt === undefined; i++) {
      void waiter.wait(`other-${i}`, { timeoutMs: 5 });
      await vi.advanceTimersByTimeAsync(10);
    }
    expect(resolvedAt).toBeDefined(); // before: never, while the other waits kept coming
    expect(resolvedAt).toBeLessThanOrEqual(50 + 100 + 30 + 10);
    waiter.close();
  });

  it("close resolves every waiter with null and later waits at once", async () => {
    const store = fakeStore();
    const waiter = new ResultWaiter({ fetchMany: store.fetchMany, pollIntervalMs: 100 });
    const a = waiter.wait("a");
    const b = waiter.wait("b", { timeoutMs: 10_000 });
    waiter.close();
    expect(await a).toBeNull();
    expect(await b).toBeNull();
    expect(await waiter.wait("c")).toBeNull();
    expect(vi.getTimerCount()).toBe(0);
  });
});

describe("ResultWaiter with push notifications", () => {
  it("polls only as a safety net while push is active, and reads everything once when push returns", async () => {
    vi.useFakeTimers();
    try {
      const reads: string[][] = [];
      const waiter = new ResultWaiter({
        fetchMany: async (ids) => {
          reads.push(ids);
          return new Map();
        },
        pollIntervalMs: 100,
      });
      waiter.setPushActive(true);
      void waiter.wait("a");
      await vi.advanceTimersByTimeAsync(10); // the fresh check
      reads.length = 0;
      await vi.advanceTimersByTimeAsync(2000);
      expect(reads).toEqual([]);
      await vi.advanceTimersByTimeAsync(3100);
      expect(reads.length).toBe(1);
      waiter.setPushActive(false);
      reads.length = 0;
      await vi.advanceTimersByTimeAsync(1000);
      expect(reads.length).toBeGreaterThanOrEqual(9);
      reads.length = 0;
      waiter.setPushActive(true);
      await vi.advanceTimersByTimeAsync(1);
      expect(reads).toEqual([["a"]]);
      waiter.close();
    } finally {
      vi.useRealTimers();
    }
  });
});

/**
 * The outage notice of the shared result waiter: waits whose reads fail, or get no answer, for
 * OUTAGE_NOTICE_MS give one warning (whatever their number), once per outage, and one info line
 * when a read succeeds again; the waits themselves go on and resolve as before.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { TaskRecord } from "../../src/backends/backend.js";
import { OUTAGE_NOTICE_MS, ResultWaiter } from "../../src/backends/result-waiter.js";
import { textLogger } from "../helpers/capturing-logger.js";

function success(taskId: string): TaskRecord {
  return { taskId, state: "SUCCESS", result: taskId, updatedAt: "2024-01-01T00:00:00.000Z" };
}

/** A store whose reads can be made to hang (`hang`) or fail (`fail`), and released. */
function flakyStore() {
  const records = new Map<string, TaskRecord>();
  const held: Array<() => void> = [];
  const state = { mode: "up" as "up" | "hang" | "fail", reads: 0 };
  const read = (ids: string[]) => {
    const out = new Map<string, TaskRecord>();
    for (const id of ids) {
      const record = records.get(id);
      if (record) out.set(id, record);
    }
    return out;
  };
  const fetchMany = (ids: string[]): Promise<Map<string, TaskRecord>> => {
    state.reads++;
    if (state.mode === "fail") return Promise.reject(new Error("connect ECONNREFUSED 127.0.0.1:6379"));
    if (state.mode === "up") return Promise.resolve(read(ids));
    // held as a Redis client holds its commands while it reconnects: answered once it is back
    return new Promise((resolve) => held.push(() => resolve(read(ids))));
  };
  const up = () => {
    state.mode = "up";
    for (const release of held.splice(0)) release();
  };
  return { records, state, fetchMany, up };
}

describe("ResultWaiter outage notice", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("a backend that stops answering between polls is told of OUTAGE_NOTICE_MS after the first unanswered read was sent", async () => {
    const store = flakyStore();
    const { logger, lines } = textLogger();
    const waiter = new ResultWaiter({
      fetchMany: store.fetchMany,
      pollIntervalMs: 5000, // the Redis hub's safety-net poll
      outage: { logger, backend: "redis backend redis://h:6379/0", lastError: () => "" },
    });
    const wait = waiter.wait("t");
    await vi.advanceTimersByTimeAsync(1000); // read at once: not there yet
    store.state.mode = "hang"; // frozen: the next read (at 5 s) gets no answer
    await vi.advanceTimersByTimeAsync(OUTAGE_NOTICE_MS + 4000 - 1);
    expect(lines).toEqual([]);
    await vi.advanceTimersByTimeAsync(2);
    // counted from the unanswered read's send (was: from when the next poll noticed it, 5 s later)
    expect(lines).toEqual([expect.stringMatching(/no answer for 5\.0 s\)$/)]);
    store.records.set("t", success("t"));
    store.up();
    await vi.advanceTimersByTimeAsync(5000);
    expect(await wait).toEqual(success("t"));
    waiter.close();
  });

  it("reads that overlap without pause, each answered in 30 ms, are no outage", async () => {
    const store = flakyStore();
    const { logger, lines } = textLogger();
    const waiter = new ResultWaiter({
      fetchMany: async (ids) => {
        await new Promise((resolve) => setTimeout(resolve, 30));
        return store.fetchMany(ids);
      },
      pollIntervalMs: 5000, // the Redis hub's safety-net poll
      outage: { logger, backend: "redis backend redis://h:6379/0", lastError: () => "" },
    });
    void waiter.wait("never", { timeoutMs: 60_000 });
    for (let i = 0; i < (2 * OUTAGE_NOTICE_MS) / 10; i++) {
      void waiter.wait(`w-${i}`, { timeoutMs: 5 });
      await vi.advanceTimersByTimeAsync(10);
    }
    expect(lines).toEqual([]); // before: "results cannot be read … no answer for 5.0 s", then "can be read again", over and over
    waiter.close();
  });

  it("one warning for a thousand waits whose reads get no answer, after OUTAGE_NOTICE_MS; one info line when they are answered", async () => {
    const store = flakyStore();
    const { logger, lines } = textLogger();
    const waiter = new ResultWaiter({
      fetchMany: store.fetchMany,
      pollIntervalMs: 500,
      outage: { logger, backend: "redis backend redis://:***@h:6379/0", lastError: () => "; last error: ECONNREFUSED" },
    });
    store.state.mode = "hang";
    const waits = Array.from({ length: 1000 }, (_, i) => waiter.wait(`t${i}`));
    await vi.advanceTimersByTimeAsync(OUTAGE_NOTICE_MS - 1);
    expect(lines).toEqual([]); // not before the read has gone unanswered that long (counted from its send)
    await vi.advanceTimersByTimeAsync(600);
    expect(lines).toEqual([
      expect.stringMatching(
        /^warn: redis backend redis:\/\/:\*\*\*@h:6379\/0: results cannot be read \(backend unreachable\?\); waits go on \(until their timeout, if any\) and resolve once it answers \(no answer for 5\.\d s; last error: ECONNREFUSED\)$/,
      ),
    ]);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(lines).toHaveLength(1); // once per outage, not per poll or per wait
    for (let i = 0; i < 1000; i++) store.records.set(`t${i}`, success(`t${i}`));
    store.up();
    await vi.advanceTimersByTimeAsync(600);
    expect(await Promise.all(waits)).toEqual(Array.from({ length: 1000 }, (_, i) => success(`t${i}`)));
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatch(
      /^info: redis backend redis:\/\/:\*\*\*@h:6379\/0: results can be read again \(after \d+\.\d s\)$/,
    );
    waiter.close();
  });

  it("failing reads: onError once per run of failures, the warning gives the error, and each outage is told", async () => {
    const store = flakyStore();
    const { logger, lines } = textLogger();
    const errors: unknown[] = [];
    const waiter = new ResultWaiter({
      fetchMany: store.fetchMany,
      pollIntervalMs: 100,
      onError: (error) => errors.push(error),
      outage: { logger, backend: "sql backend" },
    });
    store.state.mode = "fail";
    const first = waiter.wait("a");
    await vi.advanceTimersByTimeAsync(OUTAGE_NOTICE_MS + 200);
    expect(store.state.reads).toBeGreaterThan(40);
    expect(errors).toHaveLength(1);
    expect(lines).toEqual([
      "warn: sql backend: results cannot be read (backend unreachable?); waits go on (until their timeout, if any) and resolve once it answers (connect ECONNREFUSED 127.0.0.1:6379)",
    ]);
    store.records.set("a", success("a"));
    store.up();
    await vi.advanceTimersByTimeAsync(100);
    expect(await first).toEqual(success("a"));
    expect(lines[1]).toMatch(/^info: sql backend: results can be read again/);

    // a second outage is told again
    store.state.mode = "fail";
    const second = waiter.wait("b", { timeoutMs: 60_000 });
    await vi.advanceTimersByTimeAsync(OUTAGE_NOTICE_MS + 200);
    expect(errors).toHaveLength(2);
    expect(lines).toHaveLength(3);
    expect(lines[2]).toMatch(/^warn: sql backend: results cannot be read/);
    store.records.set("b", success("b"));
    store.up();
    await vi.advanceTimersByTimeAsync(100);
    expect(await second).toEqual(success("b"));
    expect(lines).toHaveLength(4);
    waiter.close();
  });

  it("says nothing of an outage nobody waits through, nor of reads slower than the poll interval", async () => {
    const store = flakyStore();
    const { logger, lines } = textLogger();
    const waiter = new ResultWaiter({
      fetchMany: store.fetchMany,
      pollIntervalMs: 100,
      outage: { logger, backend: "b" },
    });
    store.state.mode = "fail";
    const timedOut = waiter.wait("a", { timeoutMs: OUTAGE_NOTICE_MS / 2 });
    await vi.advanceTimersByTimeAsync(OUTAGE_NOTICE_MS / 2);
    expect(await timedOut).toBeNull();
    await vi.advanceTimersByTimeAsync(OUTAGE_NOTICE_MS * 2);
    expect(lines).toEqual([]);

    // reads answered, late (each after 300 ms, the poll interval 100 ms): no outage
    let slowMs = 300;
    const slow = new ResultWaiter({
      fetchMany: (ids) =>
        new Promise((resolve) =>
          setTimeout(
            () => resolve(new Map(ids.map((id) => [id, { ...success(id), state: "STARTED" as const }]))),
            slowMs,
          ),
        ),
      pollIntervalMs: 100,
      outage: { logger, backend: "b" },
    });
    const waiting = slow.wait("x");
    await vi.advanceTimersByTimeAsync(OUTAGE_NOTICE_MS * 3);
    expect(lines).toEqual([]);
    slowMs = 0;
    slow.close();
    expect(await waiting).toBeNull();
    waiter.close();
  });
});

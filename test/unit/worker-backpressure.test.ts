import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { TaskRecord } from "../../src/backends/backend.js";
import { Chicory, MemoryBackend, MemoryBroker, Worker } from "../../src/index.js";
import { capturingLogger } from "../helpers/capturing-logger.js";

beforeEach(() => {
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval"] });
});
afterEach(() => {
  vi.useRealTimers();
});

/**
 * A worker on the memory broker whose backend refuses every write and fails its healthcheck
 * while `outage.down` (its healthcheck passes all the same with `answers`: a backend that
 * answers and refuses records); its consumer's fetches while the worker says it is paused, and
 * its give-backs, are counted. Job `i` records its start; job 0 ends after `firstMs` (fake
 * time), the others when `unblock()` is called.
 */
function rig(concurrency: number, firstMs = 0, answers = false) {
  const backend = new MemoryBackend();
  const outage = { down: true };
  const store = backend.storeResult.bind(backend);
  backend.storeResult = async (record: TaskRecord) => {
    if (outage.down) throw Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), { code: "ECONNREFUSED" });
    await store(record);
  };
  const healthcheck = backend.healthcheck.bind(backend);
  backend.healthcheck = async () =>
    outage.down && !answers ? { connected: false, error: "connect ECONNREFUSED 127.0.0.1:5432" } : healthcheck();
  const { logger, lines } = capturingLogger();
  const messages = () => lines.map((line) => line.message);
  // paused: the last pause or resumption logged is a pause
  const watch = {
    get paused() {
      return (
        messages()
          .findLast((m) => /fetching (paused|resumes)/.test(m))
          ?.includes("paused") === true
      );
    },
    fetchesWhilePaused: 0,
    stopFetching: 0,
  };
  const broker = new MemoryBroker();
  const consumer = broker.consumer.bind(broker);
  broker.consumer = (options) => {
    const c = consumer(options);
    const fetch = c.fetch.bind(c);
    c.fetch = (max, signal) => {
      if (watch.paused) watch.fetchesWhilePaused++;
      return fetch(max, signal);
    };
    const stopFetching = c.stopFetching?.bind(c);
    c.stopFetching = () => {
      watch.stopFetching++;
      stopFetching?.();
    };
    return c;
  };
  const app = new Chicory({ broker, backend, config: { env: {} } });
  const started = new Map<number, number>();
  let unblock: () => void = () => undefined;
  const blocked = new Promise<void>((resolve) => {
    unblock = resolve;
  });
  const job = app.task({ name: "bp_job" }, async (i: number) => {
    started.set(i, (started.get(i) ?? 0) + 1);
    if (i > 0) await blocked;
    else if (firstMs > 0) await new Promise((resolve) => setTimeout(resolve, firstMs));
    return i;
  });
  const worker = new Worker(app, { logger, concurrency, shutdownTimeout: 2 });
  return {
    backend,
    outage,
    watch,
    app,
    job,
    started,
    unblock: () => unblock(),
    messages,
    worker,
    ranOnce: () => [...started.values()].every((n) => n === 1),
    /** Connects, enqueues jobs 0 … n - 1, starts the worker and lets it begin; their task ids. */
    async startWith(n: number): Promise<string[]> {
      await app.connect();
      const ids = [];
      for (let i = 0; i < n; i++) ids.push((await job.delay(i)).taskId);
      await worker.start();
      await vi.advanceTimersByTimeAsync(0);
      return ids;
    },
    states: (ids: readonly string[]) => Promise.all(ids.map(async (id) => (await backend.getResult(id))?.state)),
    async close() {
      const stopping = worker.stop(1);
      await vi.advanceTimersByTimeAsync(10_000); // (its timers are fake too)
      await stopping;
      await app.disconnect();
    },
  };
}

describe("Worker: backpressure while the result backend does not answer", () => {
  it("fetches nothing once the backend is found not answering, runs no job twice, and resumes on its own", async () => {
    const concurrency = 4;
    const r = rig(concurrency);
    try {
      const ids = await r.startWith(20);
      expect(r.watch.paused).toBe(true); // job 0's record failed, the probe found the backend away
      const startedAtPause = r.started.size;
      expect(startedAtPause).toBeLessThanOrEqual(concurrency + 1);
      r.unblock(); // the running jobs end, their records fail too: their slots free up
      await vi.advanceTimersByTimeAsync(5 * 60_000); // ten times the settle backoff
      expect(r.started.size).toBe(startedAtPause); // nothing fetched into the free slots
      expect(r.watch.fetchesWhilePaused).toBe(0);
      expect(r.watch.stopFetching).toBe(1); // its read-ahead given back once
      expect(r.ranOnce()).toBe(true);
      expect(r.messages()).not.toContain("settling step failed; giving up");

      r.outage.down = false;
      await vi.advanceTimersByTimeAsync(60_000);
      expect(await r.states(ids)).toEqual(ids.map(() => "SUCCESS"));
      expect(r.started.size).toBe(20);
      expect(r.ranOnce()).toBe(true);
      expect(r.messages().filter((m) => m.includes("fetching paused"))).toHaveLength(1);
      expect(r.messages().filter((m) => m.includes("fetching resumes"))).toHaveLength(1);
    } finally {
      await r.close();
    }
  });

  it("ends a fetch under way when a record fails: a job enqueued during the outage waits for the backend", async () => {
    const r = rig(2, 100);
    try {
      await r.app.connect();
      const first = (await r.job.delay(0)).taskId;
      await r.worker.start();
      // job 0 runs 100 ms while the next fetch waits on the empty queue; then its record fails
      await vi.advanceTimersByTimeAsync(100);
      expect(r.watch.paused).toBe(true);
      const later = (await r.job.delay(1)).taskId;
      await vi.advanceTimersByTimeAsync(60_000);
      expect([...r.started.keys()]).toEqual([0]);
      r.unblock();
      r.outage.down = false;
      await vi.advanceTimersByTimeAsync(30_000);
      expect(await r.states([first, later])).toEqual(["SUCCESS", "SUCCESS"]);
      expect(r.ranOnce()).toBe(true);
    } finally {
      await r.close();
    }
  });

  it("a backend that answers but refuses every record: only the jobs the worker holds run again, once per backoff", async () => {
    const concurrency = 4;
    const r = rig(concurrency, 0, true);
    try {
      const ids = await r.startWith(20);
      r.unblock(); // the running jobs end, their records are refused too
      await vi.advanceTimersByTimeAsync(5 * 60_000); // ten times the settle backoff
      // running and settling jobs share 2 × concurrency slots: a job whose record is refused
      // keeps its slot through the backoff (~31 s), then is given back and runs again
      expect(r.started.size).toBeLessThanOrEqual(2 * concurrency);
      const runs = [...r.started.values()];
      expect(Math.max(...runs)).toBeGreaterThan(1);
      expect(Math.max(...runs)).toBeLessThanOrEqual(Math.ceil((5 * 60_000) / 30_000));
      expect(r.watch.stopFetching).toBe(0); // the backend answers: no outage, nothing given back early
      expect(r.messages()).toContain("settling step failed; giving up");
      expect(r.messages().filter((m) => m.includes("fetching paused"))).toHaveLength(0);

      r.outage.down = false;
      await vi.advanceTimersByTimeAsync(60_000);
      expect(await r.states(ids)).toEqual(ids.map(() => "SUCCESS"));
      expect(r.started.size).toBe(20);
    } finally {
      await r.close();
    }
  });
});

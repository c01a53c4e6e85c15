import { afterEach, describe, expect, it, vi } from "vitest";
import type { TaskRecord } from "../../src/backends/backend.js";
import { Chicory, type Logger, MemoryBackend, MemoryBroker, silentLogger, Worker } from "../../src/index.js";

afterEach(() => {
  vi.useRealTimers();
});

describe("Worker: backpressure while the result backend does not answer", () => {
  it("fetches nothing once the backend is found not answering, runs no job twice, and resumes on its own", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval"] });
    const backend = new MemoryBackend();
    const outage = { down: true };
    const store = backend.storeResult.bind(backend);
    backend.storeResult = async (record: TaskRecord) => {
      if (outage.down) throw Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), { code: "ECONNREFUSED" });
      await store(record);
    };
    const healthcheck = backend.healthcheck.bind(backend);
    backend.healthcheck = async () =>
      outage.down ? { connected: false, error: "connect ECONNREFUSED 127.0.0.1:5432" } : healthcheck();
    // the consumer's fetches and give-backs while the worker says it is paused
    const watch = { paused: false, fetchesWhilePaused: 0, stopFetching: 0 };
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
      if (i > 0) await blocked; // job 0 ends at once, the others when let go
      return i;
    });
    const messages: string[] = [];
    const keep = (_: unknown, msg?: string) => {
      messages.push(msg ?? "");
      if (msg?.includes("fetching paused")) watch.paused = true;
      if (msg?.includes("fetching resumes")) watch.paused = false;
    };
    const logger: Logger = { ...silentLogger, info: keep, warn: keep, error: keep, child: () => logger };
    const concurrency = 4;
    const worker = new Worker(app, { logger, concurrency, shutdownTimeout: 2 });
    try {
      await app.connect();
      const ids = [];
      for (let i = 0; i < 20; i++) ids.push((await job.delay(i)).taskId);
      await worker.start();
      await vi.advanceTimersByTimeAsync(0);
      expect(watch.paused).toBe(true); // job 0's record failed, the probe found the backend away
      const startedAtPause = started.size;
      expect(startedAtPause).toBeLessThanOrEqual(concurrency + 1);
      unblock(); // the running jobs end, their records fail too: their slots free up
      await vi.advanceTimersByTimeAsync(5 * 60_000); // ten times the settle backoff
      expect(started.size).toBe(startedAtPause); // nothing fetched into the free slots
      expect(watch.fetchesWhilePaused).toBe(0);
      expect(watch.stopFetching).toBe(1); // its read-ahead given back once
      expect([...started.values()].every((n) => n === 1)).toBe(true);
      expect(messages).not.toContain("settling step failed; giving up");

      outage.down = false;
      await vi.advanceTimersByTimeAsync(60_000);
      const states = await Promise.all(ids.map(async (id) => (await backend.getResult(id))?.state));
      expect(states).toEqual(ids.map(() => "SUCCESS"));
      expect(started.size).toBe(20);
      expect([...started.values()].every((n) => n === 1)).toBe(true);
      expect(messages.filter((m) => m.includes("fetching paused"))).toHaveLength(1);
      expect(messages.filter((m) => m.includes("fetching resumes"))).toHaveLength(1);
    } finally {
      const stopping = worker.stop(1);
      await vi.advanceTimersByTimeAsync(10_000); // (its timers are fake too)
      await stopping;
      await app.disconnect();
    }
  });
});

import { afterEach, describe, expect, it, vi } from "vitest";
import type { TaskRecord } from "../../src/backends/backend.js";
import { Chicory, type Logger, MemoryBackend, MemoryBroker, silentLogger, Worker } from "../../src/index.js";

afterEach(() => {
  vi.useRealTimers();
});

describe("Worker: backpressure while the result backend does not answer", () => {
  it("takes no job past those it holds, runs none twice, and resumes on its own", async () => {
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
    const app = new Chicory({ broker: new MemoryBroker(), backend, config: { env: {} } });
    const runs = new Map<number, number>();
    const job = app.task({ name: "bp_job" }, async (i: number) => {
      runs.set(i, (runs.get(i) ?? 0) + 1);
      return i;
    });
    const messages: string[] = [];
    const keep = (_: unknown, msg?: string) => void messages.push(msg ?? "");
    const logger: Logger = { ...silentLogger, info: keep, warn: keep, error: keep, child: () => logger };
    const worker = new Worker(app, { logger, concurrency: 2, shutdownTimeout: 2 });
    try {
      await app.connect();
      const ids = [];
      for (let i = 0; i < 20; i++) ids.push((await job.delay(i)).taskId);
      await worker.start();
      await vi.advanceTimersByTimeAsync(5 * 60_000); // ten times the settle backoff
      const total = () => [...runs.values()].reduce((a, b) => a + b, 0);
      expect(total()).toBeLessThanOrEqual(4); // 2 × concurrency: running and settling when it began
      expect([...runs.values()].every((n) => n === 1)).toBe(true);
      expect(messages.filter((m) => m.includes("fetching paused"))).toHaveLength(1);
      expect(messages).not.toContain("settling step failed; giving up");

      outage.down = false;
      await vi.advanceTimersByTimeAsync(60_000);
      const states = await Promise.all(ids.map(async (id) => (await backend.getResult(id))?.state));
      expect(states).toEqual(ids.map(() => "SUCCESS"));
      expect(runs.size).toBe(20);
      expect([...runs.values()].every((n) => n === 1)).toBe(true);
      expect(messages.filter((m) => m.includes("fetching resumes"))).toHaveLength(1);
    } finally {
      await worker.stop(1);
      await app.disconnect();
    }
  });
});

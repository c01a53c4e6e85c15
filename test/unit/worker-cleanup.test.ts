/**
 * The worker's stale-worker cleanup: a first round about a minute after the start, then every
 * `cleanupInterval` (±15 %), so that workers living shorter than the interval still run one.
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import { Chicory, MemoryBackend, MemoryBroker, silentLogger, Worker } from "../../src/index.js";
import { capturingLogger } from "../helpers/capturing-logger.js";

class CountingBroker extends MemoryBroker {
  cleanups = 0;
  override async cleanupStaleClients(queue?: string, staleSeconds?: number): Promise<number> {
    this.cleanups++;
    return super.cleanupStaleClients(queue, staleSeconds);
  }
}

/** A started worker (on fake timers) whose broker counts its cleanup rounds. */
async function countingWorker(cleanupInterval: string): Promise<{ broker: CountingBroker; worker: Worker }> {
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval"] });
  const broker = new CountingBroker();
  const app = new Chicory({ broker, backend: new MemoryBackend() });
  const worker = new Worker(app, { logger: silentLogger, cleanupInterval });
  await worker.start();
  return { broker, worker };
}

describe("worker cleanup loop", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("runs a first round within 60 s (±15 %) of the start, then every cleanupInterval", async () => {
    const { broker, worker } = await countingWorker("900s");
    try {
      await vi.advanceTimersByTimeAsync(50_000); // before the earliest first round (51 s)
      expect(broker.cleanups).toBe(0);
      await vi.advanceTimersByTimeAsync(20_000); // past the latest (69 s)
      expect(broker.cleanups).toBe(1);
      await vi.advanceTimersByTimeAsync(700_000); // the next comes 765-1,035 s after the first
      expect(broker.cleanups).toBe(1);
      await vi.advanceTimersByTimeAsync(400_000);
      expect(broker.cleanups).toBe(2);
    } finally {
      await worker.stop();
    }
  });

  it("with a cleanupInterval under a minute, the first round comes after that interval", async () => {
    const { broker, worker } = await countingWorker("30s");
    try {
      await vi.advanceTimersByTimeAsync(25_000); // before 30 s - 15 %
      expect(broker.cleanups).toBe(0);
      await vi.advanceTimersByTimeAsync(10_000); // past 30 s + 15 %
      expect(broker.cleanups).toBe(1);
    } finally {
      await worker.stop();
    }
  });

  it("a step that fails (the backend, a queue) does not keep the others from their cleanup; the failures are logged", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval"] });
    const cleaned: string[] = [];
    class FailingOnA extends MemoryBroker {
      override async cleanupStaleClients(queue?: string, staleSeconds?: number): Promise<number> {
        cleaned.push(queue ?? "");
        if (queue === "a") throw new Error("refused");
        return super.cleanupStaleClients(queue, staleSeconds);
      }
    }
    class FailingBackend extends MemoryBackend {
      override async cleanupStaleClients(): Promise<number> {
        throw new Error("backend away");
      }
    }
    const { logger, lines } = capturingLogger();
    const app = new Chicory({ broker: new FailingOnA(), backend: new FailingBackend() });
    const worker = new Worker(app, { logger, cleanupInterval: "900s", queue: ["a", "b"] });
    await worker.start();
    try {
      await vi.advanceTimersByTimeAsync(70_000); // past the first round
      // before, the backend's failure ended the round: no queue was cleaned
      expect(cleaned).toEqual(["a", "b"]);
      expect(lines.map((l) => l.fields.err)).toContainEqual("result backend: backend away; queue a: refused");
    } finally {
      await worker.stop();
    }
  });
});

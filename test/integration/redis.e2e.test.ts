import { describe, expect, it } from "vitest";
import { Chicory, type Logger, silentLogger, Worker } from "../../src/index.js";
import { SERVICES, skipUnless, uniqueName } from "../helpers/services.js";
import { deletePrefix, otherDatabase } from "./redis/redis-test-keys.js";
import { runWorkerE2E } from "./worker-e2e.js";

const skip = await skipUnless("redis");
const prefixes = new WeakMap<Chicory, string>();

/** An app on the test Redis with a fresh key prefix; the backend on `backendUrl` (default: the broker's). */
function makeApp(backendUrl?: string, extraEnv: Record<string, string> = {}): Chicory {
  const prefix = uniqueName("e2e");
  const app = new Chicory({
    broker: SERVICES.redis,
    ...(backendUrl === undefined ? {} : { backend: backendUrl }),
    config: {
      env: {
        CHICORY_BROKER_REDIS_KEY_PREFIX: prefix,
        CHICORY_BROKER_REDIS_CLAIM_MIN_IDLE_MS: "1000",
        CHICORY_BACKEND_REDIS_KEY_PREFIX: prefix,
        ...extraEnv,
      },
    },
  });
  prefixes.set(app, prefix);
  return app;
}

if (!skip) {
  runWorkerE2E({
    name: "redis broker + redis backend",
    createApp: () => makeApp(),
    destroy: async (app) => deletePrefix(prefixes.get(app) ?? "none"),
  });
  // The backend on another database: results and acks are two calls (store, then ack).
  runWorkerE2E({
    name: "redis broker + redis backend on another database",
    createApp: () => makeApp(otherDatabase()),
    destroy: async (app) => {
      await deletePrefix(prefixes.get(app) ?? "none");
      await deletePrefix(prefixes.get(app) ?? "none", otherDatabase());
    },
  });
  // Read-ahead on (entries buffered beyond the free slots, released when the worker stops).
  runWorkerE2E({
    name: "redis broker with prefetch 8 + redis backend",
    createApp: () => makeApp(undefined, { CHICORY_BROKER_REDIS_PREFETCH: "8" }),
    destroy: async (app) => deletePrefix(prefixes.get(app) ?? "none"),
  });
}

describe.skipIf(skip)("a worker on redis whose app is disconnected under it", () => {
  it("stops itself, saying why, instead of fetching from its closed consumer in a loop", async () => {
    const app = makeApp();
    const errors: string[] = [];
    const logger: Logger = { ...silentLogger, error: (m: unknown) => void errors.push(String(m)), child: () => logger };
    const worker = new Worker(app, { logger, concurrency: 2 });
    try {
      await worker.start();
      await app.disconnect();
      // a timer still fires (the event loop is not starved), and the worker has stopped by then
      for (let i = 0; i < 100 && worker.isRunning; i++) await new Promise((r) => setTimeout(r, 50));
      expect(worker.isRunning).toBe(false);
      expect(errors.some((e) => e.includes("closed this worker's consumer"))).toBe(true);
    } finally {
      await worker.stop(1);
      await deletePrefix(prefixes.get(app) ?? "none");
    }
  });

  it("does not retry the settles of jobs that end after it (its connections are closed for good): stop() ends at once", async () => {
    const app = makeApp();
    const logs: string[] = [];
    const log = (_fields: unknown, m?: string) => void logs.push(String(m));
    const logger: Logger = { ...silentLogger, warn: log, error: log, child: () => logger };
    let release!: () => void;
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    let started!: () => void;
    const running = new Promise<void>((resolve) => {
      started = resolve;
    });
    const slow = app.task(async function held() {
      started();
      await released;
      return 1;
    });
    const worker = new Worker(app, { logger, concurrency: 2 });
    try {
      await worker.start();
      await slow.delay();
      await running;
      await app.disconnect();
      release(); // its ack fails: the connection is closed
      // before, the ack was tried again with backoff for about 30 s, and stop() waited for it
      await worker.stop(1);
      expect(logs).toContain("settling step failed; giving up");
      expect(logs).not.toContain("settling step failed");
    } finally {
      await worker.stop(1);
      await deletePrefix(prefixes.get(app) ?? "none");
    }
  }, 10_000);
});

describe.skipIf(skip)("a worker on redis whose DLQ is full (CHICORY_BROKER_REDIS_DLQ_MAX_LENGTH)", () => {
  it("leaves a message it cannot dead-letter to its lease, and keeps serving other jobs at once", async () => {
    const app = makeApp(undefined, {
      CHICORY_BROKER_REDIS_DLQ_MAX_LENGTH: "1",
      CHICORY_BROKER_REDIS_CLAIM_MIN_IDLE_MS: "60000",
    });
    const logs: string[] = [];
    const log = (_fields: unknown, m?: string) => void logs.push(String(m));
    const logger: Logger = { ...silentLogger, warn: log, error: log, child: () => logger };
    const runs = new Map<string, number>();
    const fails = app.task({ name: "fails", queue: "full" }, async (label: string) => {
      runs.set(label, (runs.get(label) ?? 0) + 1);
      throw new Error(`boom ${label}`);
    });
    const fine = app.task({ name: "fine", queue: "healthy" }, async (n: number) => n + 1);
    const worker = new Worker(app, { logger, concurrency: 2, queue: ["full", "healthy"], useDeadLetterQueue: true });
    try {
      await worker.start();
      await Promise.all(["a", "b", "c"].map((label) => fails.delay(label)));
      // one fits in the DLQ; the other two stay in their queue
      for (let i = 0; i < 400 && logs.filter((l) => l.startsWith("the DLQ is full")).length < 2; i++) {
        await new Promise((r) => setTimeout(r, 25));
      }
      expect(logs.filter((l) => l.startsWith("the DLQ is full: the message stays in its queue"))).toHaveLength(2);
      // before: the move was retried for ~30 s, holding the worker's slots (other queues waited)
      // and running the stuck jobs again as their leases ran out meanwhile
      expect(await (await fine.delay(1)).get({ timeout: 5 })).toBe(2);
      expect([...runs.values()]).toEqual([1, 1, 1]);
      expect(logs).not.toContain("settling step failed");
      expect(await app.broker.getDlqCount("full")).toBe(1);
      expect(await app.broker.getPendingCount("full")).toBe(2); // kept, to come back after the lease
    } finally {
      await worker.stop(1);
      await deletePrefix(prefixes.get(app) ?? "none");
    }
  });

  it("an at_most_once job whose dead letter does not fit ends FAILURE, not DEAD_LETTERED", async () => {
    const app = makeApp(undefined, { CHICORY_BROKER_REDIS_DLQ_MAX_LENGTH: "1" });
    const fails = app.task({ name: "amo_fails", deliveryMode: "at_most_once" }, async (label: string) => {
      throw new Error(`boom ${label}`);
    });
    const worker = new Worker(app, { logger: silentLogger, concurrency: 1, useDeadLetterQueue: true });
    try {
      await worker.start();
      const first = await fails.delay("a");
      await expect(first.get({ timeout: 10 })).rejects.toMatchObject({ errorType: "Error" });
      const second = await fails.delay("b");
      await expect(second.get({ timeout: 10 })).rejects.toMatchObject({ errorType: "Error" });
      expect(await first.state()).toBe("DEAD_LETTERED");
      expect(await second.state()).toBe("FAILURE"); // before: DEAD_LETTERED, though in no DLQ
      expect(await app.broker.getDlqCount("default")).toBe(1);
    } finally {
      await worker.stop(1);
      await deletePrefix(prefixes.get(app) ?? "none");
    }
  });
});

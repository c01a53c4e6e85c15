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

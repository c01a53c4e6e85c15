/**
 * A result Redis refuses for its size (an argument over `proto-max-bulk-len`, set here below
 * `maxResultBytes` on a redis-server of the test's own): its task fails at once with a
 * `ValidationError` and runs once, instead of being stored again and again, released and run
 * again until it is poison. The jobs whose records went in the same script call as the refused
 * one are written one by one and succeed, each run once: with the broker's acks carrying the
 * records, and with the backend's own batch of terminal records (another broker).
 */
import { Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import { RedisBackend } from "../../../src/backends/redis/index.js";
import { RedisBroker } from "../../../src/brokers/redis/index.js";
import { Chicory, MemoryBroker, silentLogger, TaskFailedError, Worker } from "../../../src/index.js";
import { useCleanups } from "../../helpers/cleanups.js";
import { skipUnless } from "../../helpers/services.js";
import { useOwnRedis } from "./own-redis.js";

const skip = await skipUnless("redis");

/** Bigger than the server's 1 MiB bulk limit, smaller than the default `maxResultBytes` (4 MiB). */
const BIG = 1536 * 1024;

describe.skipIf(skip)("redis: a result the server refuses for its size", () => {
  const cleanups = useCleanups();
  const own = useOwnRedis("refused-result");

  for (const broker of ["redis", "memory"] as const) {
    it(`fails its task after one run; the others of its batch succeed (${broker} broker)`, {
      timeout: 60_000,
    }, async () => {
      const { server } = own;
      const admin = new Redis(server.url);
      cleanups.push(() => admin.disconnect());
      await admin.config("SET", "proto-max-bulk-len", String(1024 * 1024));
      const prefix = `refused-${broker}`;
      const app = new Chicory({
        broker:
          broker === "redis" ? new RedisBroker({ url: server.url, keyPrefix: prefix, env: {} }) : new MemoryBroker(),
        backend: new RedisBackend({ url: server.url, keyPrefix: prefix, env: {} }),
      });
      cleanups.push(() => app.disconnect());
      const runs = new Map<number, number>();
      let release: () => void = () => undefined;
      const gate = new Promise<void>((resolve) => {
        release = resolve;
      });
      const make = app.task({ name: "make", retryPolicy: { maxRetries: 0 } }, async (n: number) => {
        runs.set(n, (runs.get(n) ?? 0) + 1);
        await gate; // every job ends in the same turn: their records share one call
        return n === 0 ? "x".repeat(BIG) : `small ${n}`;
      });
      const results = await Promise.all(Array.from({ length: 16 }, (_, n) => make.delay(n)));
      const worker = new Worker(app, { concurrency: 16, logger: silentLogger, heartbeatInterval: 0.2 });
      await worker.start();
      cleanups.push(() => worker.stop(5));
      while (runs.size < 16) await new Promise((resolve) => setImmediate(resolve));
      release();

      const refused = await (results[0] as (typeof results)[number]).get({ timeout: 30 }).catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(TaskFailedError);
      expect((refused as TaskFailedError).errorType).toBe("ValidationError");
      expect((refused as TaskFailedError).remoteMessage).toMatch(
        /task "make": the result backend refused to store its result \(.*invalid bulk length.*maxResultBytes/,
      );
      const others = await Promise.all(results.slice(1).map((r) => r.get({ timeout: 30 })));
      expect(others).toEqual(Array.from({ length: 15 }, (_, i) => `small ${i + 1}`));
      expect(await results[0]?.state()).toBe("FAILURE");
      // nothing left to run: every message acknowledged (with its record, on Redis)
      expect(await app.broker.getPendingCount()).toBe(0);
      expect(await app.broker.getQueueSize()).toBe(0);
      await worker.stop(5);
      expect([...runs.values()]).toEqual(Array.from({ length: 16 }, () => 1));
    });
  }
});

/**
 * The eviction check against a redis-server this test starts itself (never the shared :6379,
 * whose settings other tests rely on): with a memory limit and an allkeys-* policy, connecting
 * the broker and the backend emits one process warning each, and a second connect to the same
 * server does not repeat them; on a server that starts without a limit and gets one later,
 * the adapters warn after their next reconnect; a client given to the adapters keeps no
 * listener of theirs once they disconnect.
 */
import { Redis } from "ioredis";
import { beforeAll, describe, expect, it } from "vitest";
import { RedisBackend } from "../../../src/backends/redis/index.js";
import { RedisBroker } from "../../../src/brokers/redis/index.js";
import { useCleanups } from "../../helpers/cleanups.js";
import { skipUnless } from "../../helpers/services.js";
import { freePort, OwnRedis } from "../../reliability/infra/redis-server.js";
import { useOwnRedis } from "./own-redis.js";

const skip = await skipUnless("redis");

/** Resolves with the next `count` process warnings of `code`, in order. */
function nextWarnings(code: string, count: number): Promise<Error[]> {
  return new Promise((resolve) => {
    const seen: Error[] = [];
    const onWarning = (warning: Error & { code?: string }) => {
      if (warning.code !== code) return;
      seen.push(warning);
      if (seen.length === count) {
        process.off("warning", onWarning);
        resolve(seen);
      }
    };
    process.on("warning", onWarning);
  });
}

describe.skipIf(skip)("redis adapters: eviction policy check", () => {
  const cleanups = useCleanups();
  const own = useOwnRedis("eviction");

  beforeAll(async () => {
    const admin = new Redis(own.server.url);
    await admin.config("SET", "maxmemory", "64mb");
    await admin.config("SET", "maxmemory-policy", "allkeys-lru");
    admin.disconnect();
  });

  it("warns once per adapter and server that Redis may evict its keys", async () => {
    const warnings = nextWarnings("CHICORY_REDIS_EVICTION", 2);
    const broker = new RedisBroker({ url: own.server.url });
    const backend = new RedisBackend({ url: own.server.url });
    cleanups.push(
      () => broker.disconnect(),
      () => backend.disconnect(),
    );
    await Promise.all([broker.connect(), backend.connect()]);
    const messages = (await warnings).map((w) => w.message).sort();
    expect(messages[0]).toMatch(/^Redis backend \(redis:\/\/127\.0\.0\.1:\d+\/0\): maxmemory-policy allkeys-lru/);
    expect(messages[0]).toContain("results, task states and worker heartbeats");
    expect(messages[1]).toMatch(/^Redis broker \(redis:\/\/127\.0\.0\.1:\d+\/0\): maxmemory-policy allkeys-lru/);
    expect(messages[1]).toContain("queued messages, delayed jobs and DLQ entries would be lost");

    // Reconnecting to the same server checks again but does not repeat the warnings: the
    // healthcheck below runs after the check's INFO on the same connection (replies in order).
    const repeated: Error[] = [];
    const onWarning = (warning: Error & { code?: string }) => {
      if (warning.code === "CHICORY_REDIS_EVICTION") repeated.push(warning);
    };
    process.on("warning", onWarning);
    cleanups.push(() => void process.off("warning", onWarning));
    const again = new RedisBroker({ url: own.server.url });
    cleanups.push(() => again.disconnect());
    await again.connect();
    expect((await again.healthcheck()).connected).toBe(true);
    await new Promise((resolve) => setImmediate(resolve));
    expect(repeated).toEqual([]);
  });

  it("checks again after a reconnect: a policy set later is reported", async () => {
    const later = new OwnRedis(await freePort(), own.dir, "none");
    cleanups.push(() => later.kill());
    await later.start();
    const broker = new RedisBroker({ url: later.url });
    const backend = new RedisBackend({ url: later.url });
    cleanups.push(
      () => broker.disconnect(),
      () => backend.disconnect(),
    );
    const seen: Error[] = [];
    const onWarning = (warning: Error & { code?: string }) => {
      if (warning.code === "CHICORY_REDIS_EVICTION") seen.push(warning);
    };
    process.on("warning", onWarning);
    cleanups.push(() => void process.off("warning", onWarning));
    await Promise.all([broker.connect(), backend.connect()]);
    // The connect-time checks' INFO replies come before these round trips' (same connections).
    expect((await broker.healthcheck()).connected).toBe(true);
    expect((await backend.healthcheck()).connected).toBe(true);
    await new Promise((resolve) => setImmediate(resolve));
    expect(seen).toEqual([]);

    const warnings = nextWarnings("CHICORY_REDIS_EVICTION", 2);
    const admin = new Redis(later.url);
    cleanups.push(() => void admin.disconnect());
    await admin.config("SET", "maxmemory", "64mb");
    await admin.config("SET", "maxmemory-policy", "allkeys-lru");
    // Drops every other normal connection (not this one): both adapters reconnect.
    await admin.call("CLIENT", "KILL", "TYPE", "normal");
    const messages = (await warnings).map((w) => w.message).sort();
    expect(messages[0]).toMatch(/^Redis backend \(redis:\/\/127\.0\.0\.1:\d+\/0\): maxmemory-policy allkeys-lru/);
    expect(messages[1]).toMatch(/^Redis broker \(redis:\/\/127\.0\.0\.1:\d+\/0\): maxmemory-policy allkeys-lru/);
  });

  it("leaves no listener on a client it was given once disconnected", async () => {
    const client = new Redis(own.server.url);
    cleanups.push(() => void client.disconnect());
    await new Promise((resolve) => client.once("ready", resolve));
    const before = client.listenerCount("ready");
    for (let i = 0; i < 3; i++) {
      const broker = new RedisBroker({ client });
      const backend = new RedisBackend({ client });
      await Promise.all([broker.connect(), backend.connect()]);
      // the broker's eviction check and reconnect watch, the backend's eviction check and
      // restart watch
      expect(client.listenerCount("ready")).toBe(before + 4);
      await Promise.all([broker.disconnect(), backend.disconnect()]);
    }
    expect(client.listenerCount("ready")).toBe(before);
    expect(client.status).toBe("ready"); // the adapters do not close a client they were given
  });
});

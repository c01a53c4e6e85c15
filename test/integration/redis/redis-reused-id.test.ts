/**
 * Enqueueing a caller-chosen task id again on Redis: the id's old record is read by its two
 * ends only, and a record that cannot be read never stops the publish.
 */
import { describe, expect, it } from "vitest";
import { RedisBackend } from "../../../src/backends/redis/index.js";
import { RedisBroker } from "../../../src/brokers/redis/index.js";
import { Chicory } from "../../../src/index.js";
import { useCleanups } from "../../helpers/cleanups.js";
import { SERVICES, skipUnless } from "../../helpers/services.js";
import { deletePrefix, rawRedis, testPrefix } from "./redis-test-keys.js";

const skip = await skipUnless("redis");

describe.skipIf(skip)("redis: enqueueing a caller-chosen id again", () => {
  const cleanups = useCleanups();

  async function setup() {
    const prefix = testPrefix();
    const raw = rawRedis();
    const app = new Chicory({
      broker: new RedisBroker({ url: SERVICES.redis, keyPrefix: prefix, env: {} }),
      backend: new RedisBackend({ url: SERVICES.redis, keyPrefix: prefix, env: {} }),
      config: { env: {} },
    });
    await app.connect();
    cleanups.push(async () => {
      await app.disconnect();
      await deletePrefix(prefix);
      raw.disconnect();
    });
    return { prefix, raw, app, backend: app.backend as RedisBackend };
  }

  it("reads a record's state and time from its two ends, whatever its size", async () => {
    const { backend, raw, prefix } = await setup();
    const updatedAt = new Date().toISOString();
    const big = "x".repeat(1_000_000);
    await backend.storeResult({ taskId: "big", state: "SUCCESS", result: big, updatedAt });
    expect(await backend.getResultStamp("big")).toEqual({ state: "SUCCESS", updatedAt });
    expect(await backend.getResultStamp("none")).toBeNull();
    await raw.set(`${prefix}:result:foreign`, "hello");
    await expect(backend.getResultStamp("foreign")).rejects.toThrow(/cannot be read/);
  });

  it("publishes though the old record cannot be read (foreign data at its key), and leaves that key alone", async () => {
    const { app, raw, prefix } = await setup();
    const t = app.task(async function job() {
      return 1;
    });
    await raw.rpush(`${prefix}:result:order-7`, "not a record");
    await t.applyAsync([], { taskId: "order-7" });
    expect(await app.broker.getQueueSize("default")).toBe(1);
    expect(await raw.type(`${prefix}:result:order-7`)).toBe("list");
  });
});

/**
 * Redis full (`maxmemory` reached, `noeviction`), on a redis-server this test starts itself:
 * producers get an error naming OOM, while workers keep draining the queue. Acks with their
 * results, dead letters (at-most-once jobs' too) and due delayed jobs still go through (each script's first write is
 * one that frees memory: Redis checks only a script's first write against the limit), and a
 * worker started meanwhile joins the existing group (a queue without a group fails its fetch:
 * the group cannot be created). Lease renewals and reclaims go on too (the queue's pulse, an
 * HSET, is not their first write).
 */
import { Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import { RedisBackend } from "../../../src/backends/redis/index.js";
import { RedisBroker } from "../../../src/brokers/redis/index.js";
import { RELEASED_CONSUMER } from "../../../src/brokers/redis/redis-keys.js";
import { defineBrokerScripts } from "../../../src/brokers/redis/redis-scripts.js";
import { BrokerConnectionError, Chicory, silentLogger, TaskFailedError, Worker } from "../../../src/index.js";
import { type RedisClientLike, runScript } from "../../../src/redis/redis-client.js";
import { eventually } from "../../contract/contract-helpers.js";
import { capturingLogger } from "../../helpers/capturing-logger.js";
import { useCleanups } from "../../helpers/cleanups.js";
import { deferred } from "../../helpers/deferred.js";
import { skipUnless } from "../../helpers/services.js";
import { useOwnRedis } from "./own-redis.js";

const skip = await skipUnless("redis");

describe.skipIf(skip)("redis broker and backend: Redis full", () => {
  const cleanups = useCleanups();
  const own = useOwnRedis("full");

  /** An app on the test's own server under `prefix`, and an admin connection (its maxmemory reset after). */
  function fullApp(prefix: string): { admin: Redis; app: Chicory } {
    const { server } = own;
    const admin = new Redis(server.url);
    cleanups.push(async () => {
      await admin.config("SET", "maxmemory", "0").catch(() => undefined);
      admin.disconnect();
    });
    const app = new Chicory({
      broker: new RedisBroker({ url: server.url, keyPrefix: prefix, env: {}, claimMinIdleMs: 60_000 }),
      backend: new RedisBackend({ url: server.url, keyPrefix: prefix, env: {} }),
    });
    return { admin, app };
  }

  it("workers keep draining while producers are refused", { timeout: 30_000 }, async () => {
    const { admin, app } = fullApp("full");
    let open: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    const work = app.task(async function work(n: number) {
      await gate;
      return n;
    });
    const broken = app.task({ name: "broken", retryPolicy: { maxRetries: 0 } }, async () => {
      throw new Error("always");
    });
    const brokenOnce = app.task(
      { name: "broken_once", deliveryMode: "at_most_once", retryPolicy: { maxRetries: 0 } },
      async () => {
        await gate;
        throw new Error("always, at most once");
      },
    );
    let flakyRuns = 0;
    const flaky = app.task({ name: "flaky", retryPolicy: { maxRetries: 2, retryDelay: 0.1 } }, async () => {
      flakyRuns++;
      if (flakyRuns === 1) throw new Error("first attempt fails");
      return "second attempt";
    });
    const options = { logger: silentLogger, useDeadLetterQueue: true, heartbeatInterval: 0.2 };
    const first = new Worker(app, { ...options, concurrency: 2 });
    await first.start();
    cleanups.push(() => first.stop(5));
    const ready = await Promise.all(Array.from({ length: 40 }, (_, i) => work.delay(i)));
    const delayed = await Promise.all([1, 2, 3].map((i) => work.applyAsync([100 + i], { countdown: 0.5 })));
    const failing = await broken.delay();
    const retried = await flaky.delay();
    const failingOnce = await brokenOnce.delay();

    // Redis is full now: nothing new fits.
    await admin.config("SET", "maxmemory-policy", "noeviction");
    await admin.config("SET", "maxmemory", "1");
    const refused = await work.delay(-1).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(BrokerConnectionError);
    expect(String(refused)).toMatch(/OOM .*at its maxmemory limit; free memory or raise maxmemory/);
    expect((refused as BrokerConnectionError).isRefused).toBe(true); // Redis answered: not enqueued

    // A worker started now joins the group, and every job still runs and stores its result.
    const second = new Worker(app, { ...options, concurrency: 4 });
    await second.start();
    cleanups.push(() => second.stop(5));
    open();
    const results = await Promise.all([...ready, ...delayed].map((r) => r.get({ timeout: 20 })));
    expect(results).toEqual([...Array.from({ length: 40 }, (_, i) => i), 101, 102, 103]);
    // a retry goes through although its RETRY state cannot be stored: one retry, not a re-run
    expect(await retried.get({ timeout: 20 })).toBe("second attempt");
    expect(flakyRuns).toBe(2);
    await expect(failing.get({ timeout: 20 })).rejects.toBeInstanceOf(TaskFailedError);
    expect(await failing.state()).toBe("DEAD_LETTERED");
    // an at-most-once job's dead letter (its message acknowledged before it ran) is written too
    await expect(failingOnce.get({ timeout: 20 })).rejects.toBeInstanceOf(TaskFailedError);
    expect(await failingOnce.state()).toBe("DEAD_LETTERED");
    await eventually(async () => (await app.broker.getDlqCount("default")) === 2);
    expect(await app.broker.getQueueSize("default")).toBe(0);
    expect(await admin.xlen("full:stream:{default}")).toBe(0);
    expect(second.getStats().tasksProcessed).toBeGreaterThan(0);
    // Lease renewals and reclaims go on: their first write is not the pulse's HSET.
    const client = admin as unknown as RedisClientLike;
    defineBrokerScripts(client);
    const keys = ["full:stream:{default}", "full:pulse:{default}"];
    const group = (app.broker as RedisBroker).settings.consumerGroup;
    const renewed = (await runScript(client, "chicoryRenew", keys, [group, "x", 30_000, 60_000])) as unknown[];
    expect(renewed.slice(0, 3)).toEqual([[], [], 0]);
    const reclaimed = (await runScript(client, "chicoryReclaim", keys, [
      group,
      "x",
      60_000,
      "0-0",
      1,
      20_000,
      2000,
      0,
      30_000,
      0,
      RELEASED_CONSUMER,
    ])) as unknown[];
    expect(reclaimed.slice(0, 2)).toEqual(["0-0", []]);
    // A queue filled before any worker existed gets its group on a full Redis too, and is read.
    await admin.config("SET", "maxmemory", "0");
    await work.applyAsync([7], { queue: "early" });
    await admin.config("SET", "maxmemory", "1");
    const fresh = app.broker.consumer({ queues: ["early"], consumerId: "fresh" });
    const [early] = await fresh.fetch(1, AbortSignal.timeout(5000));
    expect(early?.queue).toBe("early");
    await early?.ack();
    await fresh.close();
  });

  it("an at-most-once job's retry refused while Redis is full is tried again, not lost", {
    timeout: 30_000,
  }, async () => {
    const { admin, app } = fullApp("full-once");
    const entered = deferred();
    const gate = deferred();
    let runs = 0;
    const onceFlaky = app.task(
      { name: "once_flaky", deliveryMode: "at_most_once", retryPolicy: { maxRetries: 2, retryDelay: 0.1 } },
      async () => {
        runs++;
        if (runs > 1) return "second attempt";
        entered.resolve();
        await gate.promise;
        throw new Error("first attempt fails");
      },
    );
    const { logger, until } = capturingLogger();
    const worker = new Worker(app, { logger, concurrency: 2 });
    await worker.start();
    cleanups.push(() => worker.stop(5));
    const result = await onceFlaky.delay();
    await entered.promise; // its message acknowledged: its retry is the only copy to come
    await admin.config("SET", "maxmemory-policy", "noeviction");
    await admin.config("SET", "maxmemory", "1");
    gate.resolve();
    // before, the refused retry was not tried again: the job was lost, its state RETRY for good
    const refusal = await until(/^settling step failed$/);
    expect(refusal.fields).toMatchObject({ step: "republish", err: expect.stringMatching(/OOM/) });
    await admin.config("SET", "maxmemory", "0");
    expect(await result.get({ timeout: 20 })).toBe("second attempt");
    expect(runs).toBe(2);
  });
  it("an at-most-once job's result refused while Redis is full is held, fetching paused, and stored once it fits", {
    timeout: 30_000,
  }, async () => {
    const { admin, app } = fullApp("full-result");
    const entered = deferred();
    const gate = deferred();
    let runs = 0;
    const once = app.task({ name: "once_result", deliveryMode: "at_most_once" }, async () => {
      runs++;
      entered.resolve();
      await gate.promise;
      return "done once";
    });
    const { logger, until } = capturingLogger();
    const worker = new Worker(app, { logger, concurrency: 2 });
    await worker.start();
    cleanups.push(() => worker.stop(5));
    const result = await once.delay();
    await entered.promise; // its message acknowledged: its record is all that is left of it
    await admin.config("SET", "maxmemory-policy", "noeviction");
    await admin.config("SET", "maxmemory", "1");
    gate.resolve();
    // before, its store gave up after the steps' schedule (~31 s: Redis answers PING), and the
    // job stayed PENDING for good
    const paused = await until(/refuses writes for now: fetching paused/);
    expect(paused.level).toBe("error");
    expect(String(paused.fields.err)).toMatch(/OOM .*at its maxmemory limit; free memory or raise maxmemory/);
    await admin.config("SET", "maxmemory", "0");
    expect(await result.get({ timeout: 20 })).toBe("done once");
    expect(runs).toBe(1);
    expect((await until(/takes writes again: fetching resumes/)).level).toBe("info");
  });
});

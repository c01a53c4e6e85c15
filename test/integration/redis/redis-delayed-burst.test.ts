/**
 * A burst of delayed jobs due at one moment (Redis broker): the publishes go as one script call
 * per batch (one Redis clock reading each) instead of one per job, and the publishing process's
 * due mover moves the whole burst in one wake-up, batch after batch, instead of one batch and
 * the rest at the workers' next recheck. Observed through the script calls made (counts and
 * what each moved), not through wall-clock thresholds; never early is checked on Redis's clock.
 */
import type { Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import { RedisBroker } from "../../../src/brokers/redis/index.js";
import { DueMover, MOVE_BATCH } from "../../../src/brokers/redis/redis-due-mover.js";
import { queueKeys } from "../../../src/brokers/redis/redis-keys.js";
import { defineBrokerScripts } from "../../../src/brokers/redis/redis-scripts.js";
import { silentLogger } from "../../../src/core/logger.js";
import { MessageCodec } from "../../../src/core/message.js";
import type { RedisClientLike } from "../../../src/redis/redis-client.js";
import { encodeTask, eventually } from "../../contract/contract-helpers.js";
import { useCleanups } from "../../helpers/cleanups.js";
import { skipUnless, uniqueName } from "../../helpers/services.js";
import { deletePrefix, rawRedis, testPrefix } from "./redis-test-keys.js";

const skip = await skipUnless("redis");
const codec = new MessageCodec();
/** More than two batches: the third is partial. */
const BURST = 2 * MOVE_BATCH + 200;

type Reply = [number, string, number, number];

/** Wraps script `name` on `client` to record each call's reply (after the scripts were defined). */
function recordCalls(client: Redis, name: string): unknown[] {
  const replies: unknown[] = [];
  const target = client as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
  const original = target[name];
  if (original === undefined) return replies; // not defined: no call is recorded
  target[name] = function (this: unknown, ...args: unknown[]) {
    return original.apply(this, args).then((reply) => {
      replies.push(reply);
      return reply;
    });
  };
  return replies;
}

/** Redis's clock, ms. */
async function redisNowMs(raw: Redis): Promise<number> {
  const [s, us] = await raw.time();
  return Number(s) * 1000 + Math.floor(Number(us) / 1000);
}

describe.skipIf(skip)("redis broker: a burst of delayed jobs due at one moment", () => {
  const cleanups = useCleanups();

  /** Fresh keys, a raw client and a client with the broker's scripts (closed, keys deleted after). */
  function setup() {
    const prefix = testPrefix();
    const keys = queueKeys(prefix, uniqueName("q"));
    const raw = rawRedis();
    const client = rawRedis();
    defineBrokerScripts(client as unknown as RedisClientLike);
    cleanups.push(async () => {
      await deletePrefix(prefix);
      raw.disconnect();
      client.disconnect();
    });
    return { prefix, keys, raw, client };
  }

  it("one wake-up of the due mover moves the whole burst, a bounded batch per call", async () => {
    const { keys, raw, client } = setup();
    const moves = recordCalls(client, "chicoryMoveDelayed") as Reply[];
    const mover = new DueMover(client as unknown as RedisClientLike, silentLogger);
    cleanups.push(() => mover.close());
    // The burst is in the delayed set, due (as published a moment ago for now)...
    const due = (await redisNowMs(raw)) - 1;
    const pipeline = raw.pipeline();
    for (let i = 0; i < BURST; i++) {
      pipeline.zadd(keys.delayed, due, `id-${i}`);
      pipeline.hset(keys.delayedData, `id-${i}`, `body-${i}`);
    }
    await pipeline.exec();
    // ...and this process noted each job (in one turn, as its publishes are answered together).
    for (let i = 0; i < BURST; i++) mover.schedule(keys, 1);
    // No worker runs: what is not moved by that one wake-up stays in the set.
    await eventually(() => moves.some(([moved]) => moved < MOVE_BATCH));
    expect(moves.map(([moved]) => moved)).toEqual([MOVE_BATCH, MOVE_BATCH, BURST - 2 * MOVE_BATCH]);
    expect(await raw.zcard(keys.delayed)).toBe(0);
    expect(await raw.xlen(keys.stream)).toBe(BURST);
  });

  it("a wake-up that served a due time ahead of Redis's clock wakes again for it", async () => {
    const { keys, raw, client } = setup();
    const moves = recordCalls(client, "chicoryMoveDelayed") as Reply[];
    const mover = new DueMover(client as unknown as RedisClientLike, silentLogger);
    cleanups.push(() => mover.close());
    await raw.hset(keys.delayedData, "now", "body-now", "soon", "body-soon");
    const now = await redisNowMs(raw);
    await raw.zadd(keys.delayed, now - 1, "now", now + 6, "soon");
    // Noted 1 ms and 6 ms ahead: one wake-up serves both (their due times are less than 5 ms
    // apart); when it runs, "soon" is not due yet by Redis's clock (unless it runs late).
    mover.schedule(keys, 1);
    mover.schedule(keys, 6);
    await eventually(async () => (await raw.xlen(keys.stream)) === 2, 3000);
    expect(await raw.zcard(keys.delayed)).toBe(0);
    // never early: each entry was added (its id's time) no earlier than it was due
    const entries = await raw.xrange(keys.stream, "-", "+");
    const dueOf = new Map([
      ["now", now - 1],
      ["soon", now + 6],
    ]);
    for (const [id, fields] of entries) {
      expect(Number(id.split("-")[0])).toBeGreaterThanOrEqual(dueOf.get(fields[3] ?? "") ?? Number.NaN);
    }
    expect(moves.reduce((sum, [moved]) => sum + moved, 0)).toBe(2);
  });

  it("a wake-up that served a burst ahead of Redis's clock moves all of it when it wakes again", async () => {
    const { keys, raw, client } = setup();
    const moves = recordCalls(client, "chicoryMoveDelayed") as Reply[];
    const mover = new DueMover(client as unknown as RedisClientLike, silentLogger);
    cleanups.push(() => mover.close());
    const bodies: string[] = ["now", "body-now"];
    for (let i = 0; i < BURST; i++) bodies.push(`id-${i}`, `body-${i}`);
    await raw.hset(keys.delayedData, ...bodies);
    const now = await redisNowMs(raw);
    const members: (string | number)[] = [now - 1, "now"];
    for (let i = 0; i < BURST; i++) members.push(now + 8, `id-${i}`);
    await raw.zadd(keys.delayed, ...members);
    // One wake-up serves all of it (noted 1 ms and 6 ms ahead); when it runs, the burst is not
    // due yet by Redis's clock (unless it runs late), so it wakes again for the burst, which is
    // more than one batch: that wake-up moves all of it, not one batch.
    for (let i = 0; i < BURST; i++) mover.schedule(keys, 6);
    mover.schedule(keys, 1);
    await eventually(async () => (await raw.zcard(keys.delayed)) === 0, 3000).catch(async (error: unknown) => {
      throw new Error(`${error instanceof Error ? error.message : String(error)}: moves ${JSON.stringify(moves)}`);
    });
    expect(await raw.xlen(keys.stream)).toBe(BURST + 1);
    const entries = await raw.xrange(keys.stream, "-", "+");
    for (const [id, fields] of entries) {
      expect(Number(id.split("-")[0])).toBeGreaterThanOrEqual(fields[3] === "now" ? now - 1 : now + 8);
    }
    expect(moves.reduce((sum, [moved]) => sum + moved, 0)).toBe(BURST + 1);
  });

  it("the burst is published in one call per batch and moved by the publishing process, never early", async () => {
    const prefix = testPrefix();
    const queue = uniqueName("q");
    const keys = queueKeys(prefix, queue);
    const raw = rawRedis();
    const main = rawRedis();
    const broker = new RedisBroker({ client: main, keyPrefix: prefix, env: {}, claimMinIdleMs: 60_000 });
    broker.bind({ codec });
    cleanups.push(async () => {
      await broker.disconnect();
      main.disconnect();
      await deletePrefix(prefix);
      raw.disconnect();
    });
    await broker.connect();
    const delayedCalls = recordCalls(main, "chicoryPublishDelayed");
    const singleCalls = recordCalls(main, "chicoryPublish");
    const moves = recordCalls(main, "chicoryMoveDelayed") as Reply[];
    const delayMs = 300;
    const before = await redisNowMs(raw);
    const tasks = Array.from({ length: BURST }, () => encodeTask(codec));
    const results = await Promise.all(tasks.map((t) => broker.publish(queue, { id: t.id, body: t.body, delayMs })));
    expect(results.every((r) => r.published)).toBe(true);
    expect(singleCalls).toHaveLength(0);
    expect(delayedCalls).toHaveLength(Math.ceil(BURST / MOVE_BATCH));
    const scores = await raw.zrange(keys.delayed, "0", "-1", "WITHSCORES");
    const dueOf = new Map<string, number>();
    for (let i = 0; i < scores.length; i += 2) dueOf.set(scores[i] as string, Number(scores[i + 1]));
    expect(dueOf.size).toBe(BURST);
    // never early, by Redis's clock: due no sooner than the delay after the publishes were made
    for (const due of dueOf.values()) expect(due).toBeGreaterThanOrEqual(before + delayMs);
    // No worker runs: the publishing process's mover moves all of it.
    await eventually(async () => (await raw.zcard(keys.delayed)) === 0, 5000).catch(async (error: unknown) => {
      // (what the mover did: the failure this once showed, a burst served ahead of Redis's clock
      // and then moved one batch, is the case of the test above)
      const left = await raw.zrange(keys.delayed, "0", "2", "WITHSCORES");
      const state = `moves ${JSON.stringify(moves)}, ${await raw.zcard(keys.delayed)} left, first ${JSON.stringify(left)}, Redis time ${await redisNowMs(raw)}, published at ${before}`;
      throw new Error(`${error instanceof Error ? error.message : String(error)}: ${state}`);
    });
    const entries = await raw.xrange(keys.stream, "-", "+");
    expect(entries).toHaveLength(BURST);
    for (const [id, fields] of entries) {
      expect(Number(id.split("-")[0])).toBeGreaterThanOrEqual(dueOf.get(fields[3] ?? "") ?? Number.NaN);
    }
    expect(moves.reduce((sum, [moved]) => sum + moved, 0)).toBe(BURST);
  });
});

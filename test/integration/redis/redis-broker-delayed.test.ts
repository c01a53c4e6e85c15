/**
 * Delayed messages on Redis: the mover moves due entries in bounded batches, by the Redis
 * clock, never early and never twice; a wall clock stepped back holds off neither the mover
 * nor the reclaim of a dead consumer's entries.
 */
import { describe, expect, it, vi } from "vitest";
import { RedisBroker } from "../../../src/brokers/redis/index.js";
import type { RedisBrokerOptions } from "../../../src/brokers/redis/redis-broker-options.js";
import { MOVE_BATCH, MOVE_BYTES } from "../../../src/brokers/redis/redis-due-mover.js";
import { defineBrokerScripts } from "../../../src/brokers/redis/redis-scripts.js";
import { MessageCodec } from "../../../src/core/message.js";
import type { RedisClientLike } from "../../../src/redis/redis-client.js";
import { runScript } from "../../../src/redis/redis-client.js";
import { encodeTask, eventually, fetchOne } from "../../contract/contract-helpers.js";
import { capturingLogger } from "../../helpers/capturing-logger.js";
import { useCleanups } from "../../helpers/cleanups.js";
import { SERVICES, skipUnless, uniqueName } from "../../helpers/services.js";
import { openBrokerSandbox } from "./redis-broker-sandbox.js";
import { deletePrefix, rawRedis, testPrefix } from "./redis-test-keys.js";

const skip = await skipUnless("redis");
const codec = new MessageCodec();

describe.skipIf(skip)("redis broker: delayed messages", () => {
  const cleanups = useCleanups();

  function names() {
    const prefix = testPrefix();
    const queue = uniqueName("q");
    const tag = `{${queue}}`;
    return {
      prefix,
      queue,
      stream: `${prefix}:stream:${tag}`,
      delayed: `${prefix}:delayed:${tag}`,
      delayedData: `${prefix}:delayed-data:${tag}`,
      unique: `${prefix}:unique:${tag}`,
    };
  }

  /** Fresh key names, and a raw client with the broker's scripts (closed and keys deleted after the test). */
  function scriptsOnRawClient() {
    const n = names();
    const raw = rawRedis();
    cleanups.push(async () => {
      await deletePrefix(n.prefix);
      raw.disconnect();
    });
    const client = raw as unknown as RedisClientLike;
    defineBrokerScripts(client);
    return { n, raw, client };
  }

  /** Adds to `pipeline` `count` delayed entries `id-0`… due from `past` on, 1 ms apart, with `bodyOf(i)`. */
  function addDue(
    pipeline: ReturnType<ReturnType<typeof rawRedis>["pipeline"]>,
    n: ReturnType<typeof names>,
    count: number,
    past: number,
    bodyOf: (i: number) => string,
  ) {
    for (let i = 0; i < count; i++) {
      pipeline.zadd(n.delayed, past + i, `id-${i}`);
      pipeline.hset(n.delayedData, `id-${i}`, bodyOf(i));
    }
  }

  it("moves due entries in batches of 500, atomically, leaving future ones", async () => {
    const { n, raw, client } = scriptsOnRawClient();
    const past = Date.now() - 60_000;
    const pipeline = raw.pipeline();
    addDue(pipeline, n, 1200, past, (i) => `body-${i}`);
    pipeline.zadd(n.delayed, Date.now() + 3_600_000, "future");
    pipeline.hset(n.delayedData, "future", "later");
    await pipeline.exec();
    const move = () => runScript(client, "chicoryMoveDelayed", [n.delayed, n.delayedData, n.stream, n.unique], [500]);
    const [moved1, next1] = (await move()) as [number, string, number];
    expect(moved1).toBe(500);
    expect(Number(next1)).toBe(past + 500);
    // two movers at once never move an entry twice
    const [a, b] = (await Promise.all([move(), move()])) as Array<[number, string, number]>;
    expect((a?.[0] ?? 0) + (b?.[0] ?? 0)).toBe(700);
    const [moved4, next4] = (await move()) as [number, string, number];
    expect(moved4).toBe(0);
    expect(Number(next4)).toBeGreaterThan(Date.now());
    expect(await raw.xlen(n.stream)).toBe(1200);
    expect(await raw.zcard(n.delayed)).toBe(1);
    expect(await raw.hlen(n.delayedData)).toBe(1);
    const first = (await raw.xrange(n.stream, "-", "+", "COUNT", 1)) as Array<[string, string[]]>;
    const firstFields = first[0]?.[1];
    expect(firstFields).toEqual(["data", "body-0", "id", "id-0"]);
  });

  it("a batch stops once it has moved 2 MiB of bodies (at least one entry), the rest left due", async () => {
    const { n, raw, client } = scriptsOnRawClient();
    const past = Date.now() - 60_000;
    const pipeline = raw.pipeline();
    addDue(pipeline, n, 12, past, (i) => `${i}`.padEnd(400_000, "x"));
    pipeline.zadd(n.delayed, past + 12, "huge");
    pipeline.hset(n.delayedData, "huge", "h".repeat(3 * MOVE_BYTES));
    await pipeline.exec();
    const move = async () => {
      const [moved, next, nowMs] = (await runScript(
        client,
        "chicoryMoveDelayed",
        [n.delayed, n.delayedData, n.stream, n.unique],
        [MOVE_BATCH, MOVE_BYTES],
      )) as [number, string, number];
      return { moved, nextIsDue: Number(next) >= 0 && Number(next) <= Number(nowMs) };
    };
    // 400,000 bytes a body: the sixth brings the batch past 2 MiB
    expect(await move()).toEqual({ moved: 6, nextIsDue: true });
    expect(await move()).toEqual({ moved: 6, nextIsDue: true });
    expect(await move()).toEqual({ moved: 1, nextIsDue: false }); // one body over the budget moves alone
    expect(await move()).toEqual({ moved: 0, nextIsDue: false });
    const entries = (await raw.xrange(n.stream, "-", "+")) as Array<[string, string[]]>;
    expect(entries.map(([, fields]) => fields[3])).toEqual([
      ...Array.from({ length: 12 }, (_, i) => `id-${i}`),
      "huge",
    ]);
    expect(await raw.hlen(n.delayedData)).toBe(0);
  });

  it("the due mover goes on past a batch its byte budget cut short", async () => {
    const { n, raw, broker } = await brokerAndRaw();
    const bodies = Array.from({ length: 12 }, (_, i) => `${i}`.padEnd(400_000, "x"));
    await Promise.all(bodies.map((body, i) => broker.publish(n.queue, { id: `big-${i}`, body, delayMs: 200 })));
    const scores = (await raw.zrange(n.delayed, "0", "-1", "WITHSCORES")).filter((_, i) => i % 2 === 1);
    expect(scores).toHaveLength(12);
    await movedOnTime(n, raw, Math.min(...scores.map(Number)), 12);
  });

  it("a due delayed id without a stored body is dropped, counted, and frees its unique id", async () => {
    const { n, raw, client } = scriptsOnRawClient();
    // as after a partial restore or an evicted hash: the id is due, its body is gone
    await raw.zadd(n.delayed, Date.now() - 1000, "orphan");
    await raw.sadd(n.unique, "orphan");
    const [taken, , , lost] = (await runScript(
      client,
      "chicoryMoveDelayed",
      [n.delayed, n.delayedData, n.stream, n.unique],
      [500],
    )) as [number, string, number, number];
    expect([taken, lost]).toEqual([1, 1]);
    expect(await raw.zcard(n.delayed)).toBe(0);
    expect(await raw.sismember(n.unique, "orphan")).toBe(0);
    expect(await raw.xlen(n.stream)).toBe(0);
  });

  it("a due member that is a whole message (another producer's ZADD of the JSON) is delivered, not dropped", async () => {
    const { n, raw, broker } = await brokerAndRaw();
    const task = encodeTask(codec);
    await raw.zadd(n.delayed, Date.now() - 10, task.body);
    // JSON with whitespace before it (a pretty-printer's) too: before, read as a task id without
    // a stored body and dropped
    const spaced = encodeTask(codec);
    await raw.zadd(n.delayed, Date.now() - 5, `\n  ${spaced.body}`);
    const consumer = broker.consumer({ queues: [n.queue], consumerId: uniqueName("c-") });
    cleanups.push(() => consumer.close());
    const delivery = await fetchOne(consumer);
    expect(delivery.body).toBe(task.body);
    await delivery.ack();
    const second = await fetchOne(consumer);
    expect(second.body).toBe(`\n  ${spaced.body}`);
    const decoded = codec.decode(second.body);
    expect(decoded.ok && decoded.message.id).toBe(spaced.id);
    await second.ack();
    expect(await raw.zcard(n.delayed)).toBe(0);
    expect(await raw.xlen(n.stream)).toBe(0);
  });

  it("a second delayed message of one task id is kept beside the first and moves under that task id", async () => {
    const { n, raw, broker } = await brokerAndRaw();
    const first = encodeTask(codec);
    const second = encodeTask(codec, { id: first.id, retries: 1 });
    const third = encodeTask(codec, { id: first.id, retries: 2 });
    for (const t of [first, second, third]) {
      await broker.publish(n.queue, { id: t.id, body: t.body, delayMs: 3_600_000 });
    }
    const members = await raw.zrangeBuffer(n.delayed, "0", "-1");
    const suffixed = (k: number) => Buffer.concat([Buffer.from(first.id), Buffer.from([255]), Buffer.from(String(k))]);
    expect(members.map((m) => m.toString("hex")).sort()).toEqual(
      [Buffer.from(first.id), suffixed(2), suffixed(3)].map((m) => m.toString("hex")).sort(),
    );
    for (const m of members) await raw.zadd(n.delayed, "XX", String(Date.now() - 1000), m);
    const client = raw as unknown as RedisClientLike;
    defineBrokerScripts(client);
    const [taken] = (await runScript(
      client,
      "chicoryMoveDelayed",
      [n.delayed, n.delayedData, n.stream, n.unique],
      [500],
    )) as [number];
    expect(taken).toBe(3);
    const entries = (await raw.xrange(n.stream, "-", "+")) as Array<[string, string[]]>;
    expect(entries.map(([, f]) => f[1]).sort()).toEqual([first.body, second.body, third.body].sort());
    expect(entries.map(([, f]) => f.slice(2))).toEqual([
      ["id", first.id],
      ["id", first.id],
      ["id", first.id],
    ]);
    expect(await raw.hlen(n.delayedData)).toBe(0);
  });

  it("purging a second delayed message of one task id frees that id's unique marker", async () => {
    const { n, raw, broker } = await brokerAndRaw();
    const first = encodeTask(codec);
    const second = encodeTask(codec, { id: first.id, retries: 1 });
    await broker.publish(n.queue, { id: first.id, body: first.body, delayMs: 3_600_000 });
    // unique: no marker yet (the first was not unique), so it is taken, beside the first
    const sent = await broker.publish(n.queue, { id: second.id, body: second.body, delayMs: 3_600_000, unique: true });
    expect(sent.published).toBe(true);
    expect(await raw.zcard(n.delayed)).toBe(2);
    expect(await raw.sismember(n.unique, first.id)).toBe(1);
    expect(await broker.purgeQueue(n.queue)).toBe(2);
    expect(await raw.sismember(n.unique, first.id)).toBe(0);
    expect(await raw.exists(n.delayed, n.delayedData)).toBe(0);
  });

  it("a member scored +inf (never due) neither stops the consumer nor holds back other jobs", async () => {
    const { n, raw, broker } = await brokerAndRaw();
    await raw.zadd(n.delayed, "+inf", "never-due");
    const consumer = broker.consumer({ queues: [n.queue], consumerId: uniqueName("c-") });
    cleanups.push(() => consumer.close());
    const now = encodeTask(codec);
    await broker.publish(n.queue, { id: now.id, body: now.body });
    const first = await fetchOne(consumer); // the mover ran: its next due time is "inf"
    expect(first.body).toBe(now.body);
    await first.ack();
    const soon = encodeTask(codec);
    await broker.publish(n.queue, { id: soon.id, body: soon.body, delayMs: 50 });
    const second = await fetchOne(consumer); // before: every fetch failed (XREADGROUP … BLOCK NaN)
    expect(second.body).toBe(soon.body);
    await second.ack();
    expect(await raw.zscore(n.delayed, "never-due")).toBe("inf");
  });

  it("a producer whose due mover drops jobs without a stored body says so", async () => {
    const { logger, until } = capturingLogger();
    const { n, raw, broker } = await brokerAndRaw({ logger });
    const task = encodeTask(codec);
    await broker.publish(n.queue, { id: task.id, body: task.body, delayMs: 300 });
    await raw.hdel(n.delayedData, task.id); // as a hand edit or a partial restore would
    const line = await until(/no stored body .* dropped/);
    expect(line).toMatchObject({ level: "warn", fields: { queue: n.queue, dropped: 1 } });
    expect(await raw.zcard(n.delayed)).toBe(0);
  });

  it("never delivers before the due time measured by the Redis clock", async () => {
    const n = names();
    const raw = rawRedis();
    const broker = new RedisBroker({ url: SERVICES.redis, keyPrefix: n.prefix, env: {}, claimMinIdleMs: 1000 });
    broker.bind({ codec });
    await broker.connect();
    const consumer = broker.consumer({ queues: [n.queue], consumerId: uniqueName("c-") });
    cleanups.push(async () => {
      await consumer.close();
      await broker.disconnect();
      await deletePrefix(n.prefix);
      raw.disconnect();
    });
    const tasks = Array.from({ length: 5 }, () => encodeTask(codec));
    for (const [i, t] of tasks.entries()) {
      await broker.publish(n.queue, { id: t.id, body: t.body, delayMs: 300 + i * 100 });
    }
    // A delay under a millisecond is a delay too (rounded up, never down to none).
    const tiny = encodeTask(codec);
    const before = Number((await raw.time())[0]) * 1000;
    await broker.publish(n.queue, { id: tiny.id, body: tiny.body, delayMs: 0.4 });
    expect(Number(await raw.zscore(n.delayed, tiny.id))).toBeGreaterThan(before);
    tasks.push(tiny);
    const due = new Map<string, number>();
    for (const t of tasks) due.set(t.body, Number(await raw.zscore(n.delayed, t.id)));
    const seen: string[] = [];
    await eventually(
      async () => {
        for (const d of await consumer.fetch(6, AbortSignal.timeout(300))) {
          // stream entry ids carry the Redis time (ms) the mover added them at
          const addedAtMs = Number(d.deliveryId.split("-")[0]);
          expect(addedAtMs).toBeGreaterThanOrEqual(due.get(d.body) ?? Number.POSITIVE_INFINITY);
          seen.push(d.body);
          await d.ack();
        }
        expect(seen).toHaveLength(6);
      },
      5000,
      0,
    );
    expect(new Set(seen).size).toBe(6);
    expect(await raw.zcard(n.delayed)).toBe(0);
    expect(await raw.xlen(n.stream)).toBe(0);
  });

  /**
   * A connected broker on fresh keys (with `extra` options), and a raw client (both closed, keys
   * deleted after the test).
   */
  async function brokerAndRaw(extra: RedisBrokerOptions = {}) {
    const n = names();
    const raw = rawRedis();
    const broker = new RedisBroker({
      url: SERVICES.redis,
      keyPrefix: n.prefix,
      env: {},
      claimMinIdleMs: 60_000,
      ...extra,
    });
    broker.bind({ codec });
    await broker.connect();
    cleanups.push(async () => {
      await broker.disconnect();
      await deletePrefix(n.prefix);
      raw.disconnect();
    });
    return { n, raw, broker };
  }

  /** Waits until the delayed set is empty and the stream holds `count` entries, none added before its due time. */
  async function movedOnTime(
    n: ReturnType<typeof names>,
    raw: ReturnType<typeof rawRedis>,
    due: number,
    count: number,
  ) {
    await eventually(async () => {
      expect(await raw.zcard(n.delayed)).toBe(0);
      const entries = await raw.xrange(n.stream, "-", "+");
      expect(entries).toHaveLength(count);
      // stream entry ids carry the Redis time (ms) the mover added them at
      for (const [id] of entries) expect(Number(id.split("-")[0])).toBeGreaterThanOrEqual(due);
    }, 5000);
  }

  it("the process that publishes a short countdown moves it when due, though no worker runs", async () => {
    const { n, raw, broker } = await brokerAndRaw();
    const t = encodeTask(codec);
    await broker.publish(n.queue, { id: t.id, body: t.body, delayMs: 400 });
    const due = Number(await raw.zscore(n.delayed, t.id));
    expect(due).toBeGreaterThan(0);
    await movedOnTime(n, raw, due, 1);
  });

  it("a retry a consumer schedules is moved when due by its own process, not at a worker's next recheck", async () => {
    const { n, raw, broker } = await brokerAndRaw();
    const t = encodeTask(codec);
    await broker.publish(n.queue, { id: t.id, body: t.body });
    const consumer = broker.consumer({ queues: [n.queue], consumerId: uniqueName("c-") });
    const delivery = await fetchOne(consumer);
    await delivery.retry(t.body, 400);
    const due = Number(await raw.zscore(n.delayed, t.id));
    expect(due).toBeGreaterThan(0);
    await consumer.close(); // no consumer left to move it
    await movedOnTime(n, raw, due, 1);
  });

  it("a wall clock stepped back does not hold off the mover or the reclaim (monotonic schedule)", async () => {
    const sb = await openBrokerSandbox({ claimMinIdleMs: 300, blockMs: 100 }, codec, cleanups);
    const consumer = sb.consumer();
    const dead = sb.consumer();
    const signal = new AbortController().signal;
    await consumer.fetch(1, signal); // group created, mover and reclaim scheduled
    const abandoned = encodeTask(codec);
    await sb.broker.publish(sb.queue, { id: abandoned.id, body: abandoned.body });
    expect(await dead.fetch(1, signal)).toHaveLength(1);
    await dead.close(); // its entry is never renewed again: reclaimable after the lease
    const realNow = Date.now;
    // The host clock steps back an hour (NTP correction, a VM resumed).
    const stepped = vi.spyOn(Date, "now").mockImplementation(() => realNow() - 3_600_000);
    cleanups.push(() => stepped.mockRestore());
    const delayed = encodeTask(codec);
    await sb.broker.publish(sb.queue, { id: delayed.id, body: delayed.body, delayMs: 200 });
    const bodies = new Set<string>();
    const started = performance.now();
    while (bodies.size < 2 && performance.now() - started < 5000) {
      for (const d of await consumer.fetch(2, signal)) {
        bodies.add(d.body);
        await d.ack();
      }
    }
    expect([...bodies].sort()).toEqual([abandoned.body, delayed.body].sort());
  });
});

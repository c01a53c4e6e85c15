/**
 * Redis-specific broker behaviour: no trimming, acked entries deleted, group at 0, leases,
 * reclaim counts, fencing, DLQ limits and fields, key names. Shared test Redis, random prefix.
 */
import { execFile, execFileSync } from "node:child_process";
import { promisify } from "node:util";
import { describe, expect, it, vi } from "vitest";
import type { TaskRecord } from "../../../src/backends/backend.js";
import type { Consumer, Delivery } from "../../../src/brokers/broker.js";
import { RedisBroker } from "../../../src/brokers/redis/index.js";
import type { RedisBrokerOptions } from "../../../src/brokers/redis/redis-broker-options.js";
import type { RedisDelivery } from "../../../src/brokers/redis/redis-delivery.js";
import { queueKeys, RELEASED_CONSUMER } from "../../../src/brokers/redis/redis-keys.js";
import { defineBrokerScripts } from "../../../src/brokers/redis/redis-scripts.js";
import type { Logger } from "../../../src/core/logger.js";
import { MessageCodec } from "../../../src/core/message.js";
import { BackendConnectionError, BrokerConnectionError, QueueFullError, ValidationError } from "../../../src/errors.js";
import { Chicory, MemoryBackend } from "../../../src/index.js";
import { type RedisClientLike, runScript } from "../../../src/redis/redis-client.js";
import { encodeTask, eventually, sleep } from "../../contract/contract-helpers.js";
import { capturingLogger } from "../../helpers/capturing-logger.js";
import { useCleanups } from "../../helpers/cleanups.js";
import { SERVICES, skipUnless, uniqueName } from "../../helpers/services.js";
import { openBrokerSandbox } from "./redis-broker-sandbox.js";
import {
  deletePrefix,
  dropConnection,
  keysUnder,
  monitorCommands,
  rawRedis,
  settleByHand,
  testPrefix,
} from "./redis-test-keys.js";

const skip = await skipUnless("redis");
const codec = new MessageCodec();
const run = promisify(execFile);
const tsx = import.meta.resolve("tsx");

describe.skipIf(skip)("redis broker: streams", () => {
  const cleanups = useCleanups();

  const setup = (options: RedisBrokerOptions = {}) => openBrokerSandbox(options, codec, cleanups);

  async function fetchOne(c: Consumer, timeoutMs = 3000): Promise<Delivery> {
    return eventually(
      async () => {
        const [d] = await c.fetch(1, AbortSignal.timeout(200));
        if (!d) throw new Error("nothing yet");
        return d;
      },
      timeoutMs,
      0,
    );
  }

  /**
   * A consumer of the sandbox's queue whose fetch is blocked in its read (seen in CLIENT LIST):
   * the reply of that read is then this process's to handle.
   */
  async function blockedRead(s: Awaited<ReturnType<typeof setup>>, logger: Logger) {
    const consumerId = uniqueName("c-");
    const c = s.broker.consumer({ queues: [s.queue], consumerId, logger });
    cleanups.push(() => c.close());
    expect(await c.fetch(1, AbortSignal.timeout(50))).toEqual([]); // the group exists now
    const reading = c.fetch(1, AbortSignal.timeout(20_000));
    const name = `name=chicory-consumer-${consumerId}`;
    await eventually(async () => {
      const clients = (await s.raw.call("CLIENT", "LIST")) as string;
      const line = clients.split("\n").find((l) => l.includes(name));
      if (!line?.includes("cmd=xreadgroup") || !/ flags=\S*b/.test(line)) throw new Error("not blocked yet");
    });
    return { consumerId, reading };
  }

  /** Blocks this thread (as a stopped process, or a suspended host) for `ms`. */
  const pause = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
  /** redis-cli, for work done outside this process while it is blocked. */
  const cli = (...args: string[]) =>
    execFileSync("redis-cli", ["-u", SERVICES.redis, ...args], { encoding: "utf8", timeout: 5000 });

  async function publish(b: RedisBroker, queue: string, extra: { delayMs?: number; unique?: boolean } = {}) {
    const task = encodeTask(codec);
    const result = await b.publish(queue, { id: task.id, body: task.body, ...extra });
    return { ...task, published: result.published };
  }

  it("never trims the work stream; a backlog limit makes publish fail instead", async () => {
    const s = await setup();
    for (let i = 0; i < 300; i++) await publish(s.broker, s.queue);
    expect(await s.raw.xlen(s.stream)).toBe(300);
    const limited = await s.newBroker({ maxStreamLength: 300 });
    await expect(publish(limited, s.queue)).rejects.toThrow(/full.*MAX_STREAM_LENGTH/);
    // its own class (a caller retrying connection errors can tell), still a BrokerConnectionError
    await expect(publish(limited, s.queue)).rejects.toBeInstanceOf(QueueFullError);
    await expect(publish(limited, s.queue, { delayMs: 1000 })).rejects.toBeInstanceOf(BrokerConnectionError);
    await expect(publish(limited, s.queue, { delayMs: 1000 })).rejects.toBeInstanceOf(QueueFullError);
    // nothing was written: refused, as an OOM is (a caller may send it again once drained)
    for (const delayMs of [0, 1000]) {
      await expect(publish(limited, s.queue, { delayMs })).rejects.toMatchObject({ isRefused: true });
    }
    expect(await s.raw.xlen(s.stream)).toBe(300);
  });

  it.each([
    ["now (publish.lua)", 0],
    ["delayed (publish-delayed.lua)", 60_000],
  ])(
    "a unique publish %s that fails on a key of another type leaves no marker: the id publishes once the key is mended",
    async (_name, delayMs) => {
      const s = await setup();
      const { delayed, unique } = queueKeys(s.prefix, s.queue);
      const broken = delayMs === 0 ? s.stream : delayed;
      await s.raw.set(broken, "not a stream or a sorted set"); // (an operator's SET at the key)
      const task = encodeTask(codec);
      const send = () => s.broker.publish(s.queue, { id: task.id, body: task.body, unique: true, delayMs });
      await expect(send()).rejects.toThrow(/WRONGTYPE/);
      expect(await s.raw.smembers(unique)).toEqual([]); // before, the marker stayed: the id refused for good
      await s.raw.del(broken);
      expect((await send()).published).toBe(true);
      expect(await s.raw.smembers(unique)).toEqual([task.id]);
    },
  );

  it("a publish call's receipt lasts 60 s; a dead letter's and a DLQ purge's an hour (a copy resent after a longer outage finds them)", async () => {
    const s = await setup();
    const receiptTtls = async () => {
      const keys = await s.raw.keys(`${s.prefix}:sent:*`);
      const ttls = await Promise.all(keys.map((key) => s.raw.pttl(key)));
      await Promise.all(keys.map((key) => s.raw.del(key)));
      return ttls;
    };
    await publish(s.broker, s.queue);
    const [published] = await receiptTtls();
    expect(published).toBeGreaterThan(50_000);
    expect(published).toBeLessThanOrEqual(60_000);
    await s.broker.writeDeadLetter(s.queue, encodeTask(codec).body, "Error: boom");
    await s.broker.purgeDlq(s.queue);
    const rare = await receiptTtls();
    expect(rare).toHaveLength(2);
    // before, 60 s: a copy resent after a network cut of a few minutes wrote the dead letter
    // again, or purged the dead letters written since
    for (const ttl of rare) expect(ttl).toBeGreaterThan(3_500_000);
  });

  it("plain publishes of one turn, batched in script calls, land in publish order and each settles", async () => {
    const s = await setup();
    await publish(s.broker, s.queue); // one entry before the batches
    const tasks = Array.from({ length: 1234 }, () => encodeTask(codec));
    const results = await Promise.all(tasks.map((t) => s.broker.publish(s.queue, { id: t.id, body: t.body })));
    expect(results.every((r) => r.published)).toBe(true);
    const entries = (await s.raw.xrange(s.stream, "-", "+")) as Array<[string, string[]]>;
    expect(entries).toHaveLength(1235);
    // a plain entry carries only its body (the task id is in it)
    expect(entries.slice(1).map(([, fields]) => fields)).toEqual(tasks.map((t) => ["data", t.body]));
  });

  it("plain and unique publishes of one turn land in publish order (a unique one is a call of its own)", async () => {
    const s = await setup();
    await publish(s.broker, s.queue);
    const tasks = Array.from({ length: 6 }, () => encodeTask(codec));
    // plain, unique, plain, plain, unique, plain (before: the unique ones landed last)
    const uniques = new Set([1, 4]);
    const results = await Promise.all(
      tasks.map((t, i) => s.broker.publish(s.queue, { id: t.id, body: t.body, unique: uniques.has(i) })),
    );
    expect(results.every((r) => r.published)).toBe(true);
    const entries = (await s.raw.xrange(s.stream, "-", "+")) as Array<[string, string[]]>;
    expect(entries.slice(1).map(([, fields]) => fields[1])).toEqual(tasks.map((t) => t.body));
  });

  it("a lone publish stays ahead of a full batch published after it in a later tick", async () => {
    const s = await setup();
    await publish(s.broker, s.queue);
    const lone = encodeTask(codec);
    const batch = Array.from({ length: 500 }, () => encodeTask(codec));
    const pending = [s.broker.publish(s.queue, { id: lone.id, body: lone.body })];
    // runs after the broker sent the lone message, within the same turn: 500 make a full batch
    process.nextTick(() => {
      for (const t of batch) pending.push(s.broker.publish(s.queue, { id: t.id, body: t.body }));
    });
    await new Promise<void>((resolve) => setImmediate(resolve));
    await Promise.all(pending);
    const entries = (await s.raw.xrange(s.stream, "-", "+")) as Array<[string, string[]]>;
    expect(entries.slice(1).map(([, fields]) => fields[1])).toEqual([lone.body, ...batch.map((t) => t.body)]);
  });

  it("a batch that Redis refuses rejects each of its publishes with a clear error and adds nothing", async () => {
    const s = await setup();
    await publish(s.broker, s.queue);
    await s.raw.del(s.stream);
    await s.raw.set(s.stream, "not a stream");
    const many = Array.from({ length: 3 }, () => publish(s.broker, s.queue));
    const settled = await Promise.allSettled(many);
    for (const outcome of settled) {
      expect(outcome.status).toBe("rejected");
      expect(String((outcome as PromiseRejectedResult).reason)).toMatch(/BrokerConnectionError.*publish.*WRONGTYPE/);
    }
    await expect(publish(s.broker, s.queue)).rejects.toThrow(/publish failed.*WRONGTYPE/); // a lone one: one XADD
    expect(await s.raw.get(s.stream)).toBe("not a stream");
  });

  it("deletes acked entries (XLEN 0, nothing pending) and creates the group at 0", async () => {
    const s = await setup();
    await publish(s.broker, s.queue);
    await publish(s.broker, s.queue);
    const c = s.consumer();
    const got = await c.fetch(10, AbortSignal.timeout(1000));
    expect(got).toHaveLength(2);
    const [groupInfo] = (await s.raw.xinfo("GROUPS", s.stream)) as unknown[][];
    expect(groupInfo).toContain(s.group);
    await Promise.all(got.map((d) => d.ack()));
    expect(await s.raw.xlen(s.stream)).toBe(0);
    expect(await s.broker.getPendingCount(s.queue)).toBe(0);
    expect(c.inFlight).toBe(0);
  });

  it("acks still waiting when the consumer reads go in the read's script call, which hands out the next entries", async () => {
    const s = await setup();
    const bodies: string[] = [];
    for (let i = 0; i < 4; i++) bodies.push((await publish(s.broker, s.queue)).body);
    const c = s.consumer();
    const first = await c.fetch(2, AbortSignal.timeout(1000));
    expect(first.map((d) => d.body)).toEqual(bodies.slice(0, 2));
    const seen = await monitorCommands(cleanups);
    // The acks wait for the event loop's check phase; the fetch right after them takes them along.
    const acked = first.map((d) => d.ack());
    const next = await c.fetch(2, AbortSignal.timeout(1000));
    await Promise.all(acked);
    expect(next.map((d) => d.body)).toEqual(bodies.slice(2));
    expect(await s.raw.xlen(s.stream)).toBe(2);
    const pending = (await s.raw.xpending(s.stream, s.group, "-", "+", 10)) as Array<[string, string]>;
    expect(pending.map(([id]) => id)).toEqual(next.map((d) => d.deliveryId));
    const marker = uniqueName("marker");
    await s.raw.echo(marker);
    await eventually(async () => {
      if (!seen.some(({ args }) => args.includes(marker))) throw new Error("monitor behind");
    }, 3000);
    // One read of new entries, and it ran inside the script (after the acks' XACK and XDEL).
    const commands = seen.filter(({ args }) => args.includes(s.stream)).map(({ args }) => args[0]?.toUpperCase());
    // (this stream's only: the other test files' consumers share the server)
    const reads = seen.filter(
      ({ args }) => args[0]?.toUpperCase() === "XREADGROUP" && args.includes(s.stream) && args.at(-1) === ">",
    );
    expect(reads.map(({ source }) => source)).toEqual(["lua"]);
    expect(commands.indexOf("XREADGROUP")).toBeGreaterThan(commands.indexOf("XDEL"));
  });

  it("a consumer warns when its queue's stream has another consumer group (every job would run once per group)", async () => {
    const s = await setup();
    await s.raw.xgroup("CREATE", s.stream, "staging-workers", "0", "MKSTREAM");
    const { logger, lines } = capturingLogger();
    const c = s.broker.consumer({ queues: [s.queue], consumerId: uniqueName("c-"), logger });
    cleanups.push(() => c.close());
    expect(await c.fetch(1, AbortSignal.timeout(50))).toEqual([]);
    const warnings = lines.filter((line) => line.level === "warn");
    expect(warnings.map((line) => line.message)).toEqual([
      expect.stringMatching(
        /^redis: the queue's stream has other consumer groups: each group reads the queue's jobs, and an ack deletes a job for every group/,
      ),
    ]);
    expect(warnings[0]?.fields).toMatchObject({ queue: s.queue, otherGroups: ["staging-workers"] });
    // none when the group is the only one
    const lone = await setup();
    const quiet = capturingLogger();
    const d = lone.broker.consumer({ queues: [lone.queue], consumerId: uniqueName("c-"), logger: quiet.logger });
    cleanups.push(() => d.close());
    expect(await d.fetch(1, AbortSignal.timeout(50))).toEqual([]);
    expect(quiet.lines.filter((line) => line.level === "warn")).toEqual([]);
  });

  it("a consumer of several queues blocks on all of them in one read: a job on any of them wakes it", async () => {
    const s = await setup({ claimMinIdleMs: 60_000 });
    const other = uniqueName("q");
    const otherStream = `${s.prefix}:stream:{${other}}`;
    const c = s.consumer(s.broker, [s.queue, other]);
    expect(await c.fetch(1, AbortSignal.timeout(50))).toEqual([]); // both groups exist now
    const seen = await monitorCommands(cleanups);
    const blockedOnBoth = () =>
      seen.filter(({ args }) => {
        const isRead = args[0]?.toUpperCase() === "XREADGROUP" && args.some((a) => a.toUpperCase() === "BLOCK");
        return isRead && args.includes(s.stream) && args.includes(otherStream);
      });
    // (a blocked read ends within about a second for the consumer's housekeeping: read again)
    const reading = (async () => {
      for (;;) {
        const got = await c.fetch(1, AbortSignal.timeout(30_000));
        if (got.length > 0) return got;
      }
    })();
    await eventually(async () => expect(blockedOnBoth().length).toBeGreaterThan(0));
    const task = await publish(s.broker, other); // the second queue: the read blocked on it too
    const [d] = await reading;
    expect(d?.queue).toBe(other);
    expect(d?.body).toBe(task.body);
    await d?.ack();
    expect(await s.raw.xlen(otherStream)).toBe(0);
  });

  it("a read that goes with waiting acks and finds the group gone applies the acks and re-creates the group", async () => {
    const s = await setup();
    await publish(s.broker, s.queue);
    const c = s.consumer();
    const held = await fetchOne(c);
    await s.raw.del(s.stream); // the read in the acks' call fails with NOGROUP
    const acked = held.ack();
    expect(await c.fetch(1, AbortSignal.timeout(1000))).toEqual([]);
    await expect(acked).resolves.toBeUndefined();
    const task = await publish(s.broker, s.queue);
    const got = await fetchOne(c);
    expect(got.body).toBe(task.body);
    await got.ack();
    expect(await s.raw.xlen(s.stream)).toBe(0);
  });

  it("lease renewal keeps a long delivery from being reclaimed, without counting deliveries", async () => {
    const s = await setup({ claimMinIdleMs: 600 });
    await publish(s.broker, s.queue);
    const a = s.consumer();
    const held = await fetchOne(a);
    const b = s.consumer();
    const deadline = Date.now() + 2000;
    while (Date.now() < deadline) expect(await b.fetch(1, AbortSignal.timeout(150))).toEqual([]);
    const [pending] = (await s.raw.xpending(s.stream, s.group, "-", "+", 10)) as Array<
      [string, string, number, number]
    >;
    expect(pending?.[3]).toBe(1);
    await held.ack();
    expect(await s.raw.xlen(s.stream)).toBe(0);
  });

  it("reclaims a dead consumer's entry with the real deliveryCount; release does not burn one", async () => {
    const s = await setup({ claimMinIdleMs: 500 });
    const task = await publish(s.broker, s.queue);
    const a = s.consumer();
    expect((await fetchOne(a)).deliveryCount).toBe(1);
    await a.close(); // dies: stops renewing
    const b = s.consumer();
    const second = await fetchOne(b);
    expect(second.body).toBe(task.body);
    expect(second.deliveryCount).toBe(2);
    await b.close();
    const c = s.consumer();
    const third = await fetchOne(c);
    expect(third.deliveryCount).toBe(3);
    await third.release();
    const d = s.consumer();
    const started = Date.now();
    const fourth = await fetchOne(d);
    // Handed back at once; a reclaim would come within the 0.5 s claim time as well, so the
    // bound only catches a stall: the delivery count is what tells a release from a reclaim.
    expect(Date.now() - started).toBeLessThan(5000);
    expect(fourth.deliveryCount).toBe(3);
    await fourth.ack();
  });

  it("a delivery count forged past 2^63 by hand (XCLAIM RETRYCOUNT) reads as spent, not as a first delivery", async () => {
    const s = await setup({ claimMinIdleMs: 500 });
    await publish(s.broker, s.queue);
    const a = s.consumer();
    const first = await fetchOne(a);
    await a.close();
    await s.raw.call("XCLAIM", s.stream, s.group, "dead", 0, first.deliveryId, "RETRYCOUNT", "9223372036854775806");
    const reclaimed = await fetchOne(s.consumer());
    expect(reclaimed.deliveryId).toBe(first.deliveryId);
    expect(reclaimed.deliveryCount).toBe(Number.MAX_SAFE_INTEGER); // before: negative, so it ran
    await reclaimed.ack();
  });

  it("an entry whose count was forged past 2^53 is still taken back after a lost read and given back, its count left as it is", async () => {
    const s = await setup({ claimMinIdleMs: 60_000, blockMs: 20 });
    const task = await publish(s.broker, s.queue);
    await s.raw.call("XGROUP", "CREATE", s.stream, s.group, "0", "MKSTREAM");
    const forged = "9223372036854775806";
    await s.raw.call("XREADGROUP", "GROUP", s.group, "me", "COUNT", 1, "STREAMS", s.stream, ">");
    const [[id = ""] = []] = await s.raw.xrange(s.stream, "-", "+");
    await s.raw.call("XCLAIM", s.stream, s.group, "me", 0, id, "RETRYCOUNT", forged, "JUSTID");
    const client = s.raw as unknown as RedisClientLike;
    defineBrokerScripts(client);
    const pendingCount = async () =>
      ((await s.raw.call("XPENDING", s.stream, s.group, "-", "+", 1)) as [string, string, number, number][])[0];
    // recover-own (a read whose reply was lost): the entry comes back with its fields, its count kept
    const [more, out] = (await runScript(client, "chicoryRecoverOwn", [s.stream], [s.group, "me", 10, 60_000])) as [
      number,
      unknown[],
    ];
    expect(more).toBe(0);
    expect(out[0]).toBe(id);
    expect(out[1]).toContain(task.body);
    expect(String(out[2])).not.toBe("1"); // not read as a first delivery (before: "Invalid RETRYCOUNT")
    expect(await pendingCount()).toEqual([id, "me", expect.any(Number), Number(forged)]);
    // release (a consumer giving back what it read ahead): done, owned by the released holder
    const released = await runScript(
      client,
      "chicoryRelease",
      [s.stream],
      [s.group, "me", id, 60_000, "0", 1, RELEASED_CONSUMER],
    );
    expect(released).toBe(1);
    const [, owner] = (await pendingCount()) ?? [];
    expect(owner).toBe(RELEASED_CONSUMER);
    // and the next consumer takes it at once, as spent
    const again = await fetchOne(s.consumer());
    expect(again.deliveryId).toBe(id);
    expect(again.deliveryCount).toBe(Number.MAX_SAFE_INTEGER);
    await again.ack();
  });

  it("dead-lettering a plain entry of a task id leaves the unique marker of that id's unique copy", async () => {
    const s = await setup({ claimMinIdleMs: 60_000, blockMs: 20 });
    const unique = await publish(s.broker, s.queue, { unique: true });
    // another producer's plain entry (only `data`) naming the same task id
    await s.raw.xadd(s.stream, "*", "data", unique.body);
    const uniqueKey = `${s.prefix}:unique:{${s.queue}}`;
    expect(await s.raw.smembers(uniqueKey)).toEqual([unique.id]);
    const [first, plain] = await s.consumer().fetch(2, AbortSignal.timeout(3000));
    if (!first || !plain) throw new Error("two deliveries expected");
    await plain.deadLetter("boom");
    // the unique copy is still queued: its id still refuses a second unique publish
    expect(await s.raw.smembers(uniqueKey)).toEqual([unique.id]);
    expect((await s.broker.publish(s.queue, { id: unique.id, body: unique.body, unique: true })).published).toBe(false);
    await first.deadLetter("boom"); // the copy that holds the marker drops it
    expect(await s.raw.smembers(uniqueKey)).toEqual([]);
  });

  it("a stream that has used its last possible id (a hand XADD of the largest id): a retry, a dead-letter and a replay fail before any write, losing nothing", async () => {
    const s = await setup({ claimMinIdleMs: 60_000, blockMs: 20 });
    const MAX = "18446744073709551615-18446744073709551615";
    const exhaust = async (key: string) => {
      await s.raw.xadd(key, MAX, "data", "by hand");
      await s.raw.xdel(key, MAX);
    };
    const kept = await publish(s.broker, s.queue);
    const dead = await publish(s.broker, s.queue);
    const c = s.consumer();
    const [a, b] = await c.fetch(2, AbortSignal.timeout(3000));
    if (!a || !b) throw new Error("two deliveries expected");
    await b.deadLetter("for the replay below");
    const [entry] = await s.broker.getDlqMessages(s.queue);
    expect(entry?.originalMessage?.id).toBe(dead.id);
    await exhaust(s.stream);
    // retry to the same stream: refused, the entry still pending for this consumer
    await expect(a.retry(kept.body, 0)).rejects.toThrow(/last possible entry id/);
    expect(await s.raw.xlen(s.stream)).toBe(1);
    expect(await s.broker.getPendingCount(s.queue)).toBe(1);
    // replay into it: refused, the dead letter still in the DLQ, no unique marker left behind
    await expect(s.broker.replayFromDlq(entry?.messageId ?? "", s.queue)).rejects.toThrow(/last possible entry id/);
    expect(await s.broker.getDlqCount(s.queue)).toBe(1);
    expect(await s.raw.exists(`${s.prefix}:unique:{${s.queue}}`)).toBe(0);
    // dead-letter into a DLQ with no id left: refused, the entry still pending
    await exhaust(s.dlq);
    await expect(a.deadLetter("boom")).rejects.toThrow(/last possible entry id/);
    await expect(s.broker.writeDeadLetter(s.queue, kept.body, "boom")).rejects.toThrow(/last possible entry id/);
    expect(await s.broker.getDlqCount(s.queue)).toBe(1);
    expect(await s.raw.xlen(s.stream)).toBe(1);
    expect(await s.broker.getPendingCount(s.queue)).toBe(1);
    await a.ack();
  });

  it("a reclaim that takes the entry with the last possible id (added by hand) starts the next scan over, rather than after it", async () => {
    const s = await setup({ claimMinIdleMs: 60_000, blockMs: 20 });
    const MAX = "18446744073709551615-18446744073709551615";
    await s.raw.call("XGROUP", "CREATE", s.stream, s.group, "0", "MKSTREAM");
    await s.raw.xadd(s.stream, MAX, "data", "by hand");
    await s.raw.call("XREADGROUP", "GROUP", s.group, "dead", "COUNT", 1, "STREAMS", s.stream, ">");
    await s.raw.call("XCLAIM", s.stream, s.group, "dead", 0, MAX, "IDLE", 3_600_000, "JUSTID");
    const client = s.raw as unknown as RedisClientLike;
    defineBrokerScripts(client);
    const nowMs = Number((await s.raw.time())[0]) * 1000;
    const reclaim = (cursor: string) =>
      runScript(
        client,
        "chicoryReclaim",
        [s.stream, s.pulse],
        [s.group, "me", 60_000, cursor, 1, 20, 10, nowMs, 30_000, 0, RELEASED_CONSUMER],
      ) as Promise<[string, unknown[]]>;
    const [cursor, out] = await reclaim("0-0");
    expect(out[0]).toBe(MAX);
    expect(cursor).toBe("0-0"); // before: "(18446744073709551615-…", which every later call's XPENDING refused
    const [, none] = await reclaim(cursor);
    expect(none).toEqual([]);
  });

  /** A queue of `live` entries held by a live consumer, then one held by a dead one, idle for an hour. */
  async function behindLiveEntries(s: Awaited<ReturnType<typeof setup>>, live: number) {
    const tasks = await Promise.all(Array.from({ length: live + 1 }, () => encodeTask(codec)));
    await Promise.all(tasks.map((t) => s.broker.publish(s.queue, { id: t.id, body: t.body })));
    await s.raw.call("XGROUP", "CREATE", s.stream, s.group, "0", "MKSTREAM");
    await s.raw.call("XREADGROUP", "GROUP", s.group, "live", "COUNT", live, "STREAMS", s.stream, ">");
    await s.raw.call("XREADGROUP", "GROUP", s.group, "dead", "COUNT", 1, "STREAMS", s.stream, ">");
    const [[deadId = ""] = []] = await s.raw.xrevrange(s.stream, "+", "-", "COUNT", 1);
    await s.raw.call("XCLAIM", s.stream, s.group, "dead", 0, deadId, "IDLE", 3_600_000, "JUSTID");
    return { deadId, body: tasks[live]?.body };
  }

  /** The live consumer's renewal of `liveId` (renew.lua, a lease of 60 s): the ids it lost, and those gone. */
  async function renewLive(s: Awaited<ReturnType<typeof setup>>, client: RedisClientLike, liveId: string) {
    return (await runScript(
      client,
      "chicoryRenew",
      [s.stream, s.pulse],
      [s.group, "live", 30_000, 60_000, liveId],
    )) as [string[], string[]];
  }

  /**
   * A group with one live entry and one idle for an hour (behindLiveEntries), the broker's
   * scripts defined on the raw client, and Redis's time (ms).
   */
  async function withDeadEntry() {
    const s = await setup({ claimMinIdleMs: 60_000, blockMs: 20 });
    const { deadId } = await behindLiveEntries(s, 1);
    const client = s.raw as unknown as RedisClientLike;
    defineBrokerScripts(client);
    const nowMs = Number((await s.raw.time())[0]) * 1000;
    return { s, deadId, client, nowMs };
  }

  it("finds an expired entry behind many live ones in one step, with a single free slot", async () => {
    const s = await setup({ claimMinIdleMs: 60_000, blockMs: 20 });
    const { deadId, body } = await behindLiveEntries(s, 400);
    const [reclaimed, ...rest] = await s.consumer().fetch(1, AbortSignal.timeout(5000));
    expect(rest).toEqual([]);
    expect(reclaimed?.deliveryId).toBe(deadId);
    expect(reclaimed?.body).toBe(body);
    expect(reclaimed?.deliveryCount).toBe(2);
    await reclaimed?.ack();
    expect(await s.raw.xpending(s.stream, s.group, "-", "+", 1000)).toHaveLength(400);
  });

  it("a pulse key of another type (an operator's SET) stops neither reclaims nor renewals, and is left as it is", async () => {
    const s = await setup({ claimMinIdleMs: 60_000, blockMs: 20 });
    const { deadId, body } = await behindLiveEntries(s, 1);
    await s.raw.set(s.pulse, "not a hash");
    // before: both scripts failed with WRONGTYPE (nothing reclaimed, no lease renewed)
    const [reclaimed] = await s.consumer().fetch(1, AbortSignal.timeout(5000));
    expect(reclaimed?.deliveryId).toBe(deadId);
    expect(reclaimed?.body).toBe(body);
    const client = s.raw as unknown as RedisClientLike;
    defineBrokerScripts(client);
    const [[liveId = ""] = []] = (await s.raw.xpending(s.stream, s.group, "-", "+", 10, "live")) as string[][];
    await s.raw.call("XCLAIM", s.stream, s.group, "live", 0, liveId, "IDLE", 50_000, "JUSTID");
    const [lost, gone] = await renewLive(s, client, liveId);
    expect([lost, gone]).toEqual([[], []]);
    const [[, , idle = 0] = []] = (await s.raw.xpending(s.stream, s.group, "-", "+", 10, "live")) as number[][];
    expect(idle).toBeLessThan(10_000); // renewed (it was 50 s)
    expect(await s.raw.get(s.pulse)).toBe("not a hash");
    await reclaimed?.ack();
  });

  it("a long pending list is looked at one bounded page per step, following the cursor", async () => {
    const s = await setup({ claimMinIdleMs: 60_000, blockMs: 20 });
    const { deadId } = await behindLiveEntries(s, 30);
    const client = s.raw as unknown as RedisClientLike;
    defineBrokerScripts(client);
    const steps: Array<[string, unknown[]]> = [];
    let cursor = "0-0";
    do {
      // 31 pending entries, past an IDLE-filter limit of 20: pages of 10, one free slot
      const [next, flat] = (await runScript(
        client,
        "chicoryReclaim",
        [s.stream, s.pulse],
        [s.group, "me", 60_000, cursor, 1, 20, 10, 0, 0, 0, RELEASED_CONSUMER],
      )) as [string, unknown[]];
      steps.push([next, flat]);
      cursor = next;
    } while (cursor !== "0-0" && steps.length < 10);
    const found = steps.flatMap(([, flat]) => flat);
    expect(found[0]).toBe(deadId);
    expect(found[2]).toBe(2); // its delivery count
    expect(found).toHaveLength(3);
    // pages of 10 live entries three times, the dead one (the free slot is filled), the end
    expect(steps.map(([next, flat]) => [next === "0-0", flat.length])).toEqual([
      [false, 0],
      [false, 0],
      [false, 0],
      [false, 3],
      [true, 0],
    ]);
  });

  it("a reclaim step that runs after a stall longer than the threshold waits for the lease plus the stall", async () => {
    const { s, deadId, client, nowMs } = await withDeadEntry();
    const reclaim = (lastReplyMs: number, extraMs: number) =>
      runScript(
        client,
        "chicoryReclaim",
        [s.stream, s.pulse],
        [s.group, "me", 60_000, "0-0", 1, 20, 10, lastReplyMs, 30_000, extraMs, RELEASED_CONSUMER],
      );
    // the consumer's last reply was 2 hours ago (Redis was frozen since): 1 h idle is not enough
    await s.raw.del(s.pulse); // (no pulse recorded yet)
    const [, none, , applied, streamExtra, opened] = (await reclaim(nowMs - 7_200_000, 0)) as [
      string,
      unknown[],
      number,
      number,
      number,
      number,
    ];
    expect(none).toEqual([]);
    expect(applied).toBeGreaterThanOrEqual(7_200_000);
    // nobody called on the stream during that stall: it opened the stream's window for all
    expect([streamExtra, opened]).toEqual([applied, 1]);
    // but with no pulse recorded before, nothing proves that nobody called meanwhile
    expect(await s.raw.hget(s.pulse, "sure")).toBe("0");
    await s.raw.del(s.pulse);
    // an open window asks for its extra too
    const [, stillNone] = (await reclaim(0, 3_600_000)) as [string, unknown[]];
    expect(stillNone).toEqual([]);
    await s.raw.del(s.pulse); // (that window opened the stream's too: nobody had called)
    // a stall of its own while another consumer called (this process stalled, not Redis): the
    // stream's window stays shut
    await s.raw.hset(s.pulse, "at", nowMs - 1000);
    const [, , , ownOnly, noStreamExtra] = (await reclaim(nowMs - 7_200_000, 0)) as [
      string,
      unknown[],
      number,
      number,
      number,
    ];
    expect(ownOnly).toBeGreaterThanOrEqual(7_200_000);
    expect(noStreamExtra).toBe(0);
    // a recent last reply and no window: taken
    const [, flat, , noExtra] = (await reclaim(nowMs, 0)) as [string, unknown[], number, number];
    expect(flat[0]).toBe(deadId);
    expect(noExtra).toBe(0);
  });

  it("after no consumer called on the stream for longer than the threshold, every consumer's reclaim waits for the lease plus that time, for one lease", async () => {
    const { s, deadId, client, nowMs } = await withDeadEntry();
    // consumers that never saw a stall of their own (no last reply known, no window)
    const reclaim = (consumer: string, stallMs = 30_000) =>
      runScript(
        client,
        "chicoryReclaim",
        [s.stream, s.pulse],
        [s.group, consumer, 60_000, "0-0", 1, 20, 10, 0, stallMs, 0, RELEASED_CONSUMER],
      ) as Promise<[string, unknown[], number, number, number, number]>;
    // the last call on the stream was 2 hours ago (Redis frozen since, or no worker running)
    await s.raw.hset(s.pulse, "at", nowMs - 7_200_000);
    const [, none, , own, streamExtra, opened] = await reclaim("started-during-the-stall");
    expect([none, own, opened]).toEqual([[], 0, 1]);
    expect(streamExtra).toBeGreaterThanOrEqual(7_200_000);
    // proven: the pulse shows no call in that time
    expect(await s.raw.hget(s.pulse, "sure")).toBe(String(streamExtra));
    expect(await s.raw.pttl(s.pulse)).toBe(-1); // no TTL: an eviction policy must not pick it
    // the window is the stream's: another consumer waits too, and it was not opened again
    const [, stillNone, , , sameExtra, openedAgain] = await reclaim("another");
    expect([stillNone, openedAgain, sameExtra]).toEqual([[], 0, streamExtra]);
    const until = Number(await s.raw.hget(s.pulse, "until"));
    expect(until - nowMs).toBeGreaterThanOrEqual(60_000);
    expect(until - nowMs).toBeLessThan(70_000);
    // the window over (one lease later), the dead one's entry is taken
    await s.raw.hset(s.pulse, "until", nowMs - 1);
    const [, flat, , , noExtra] = await reclaim("another");
    expect(flat[0]).toBe(deadId);
    expect(noExtra).toBe(0);
  });

  it("a renewal that is the first call on the stream after a long quiet opens the stream's window too; a threshold of 0 checks nothing", async () => {
    const { s, deadId, client, nowMs } = await withDeadEntry();
    const [[liveId = ""] = []] = (await s.raw.xpending(s.stream, s.group, "-", "+", 10, "live")) as Array<[string]>;
    await s.raw.hset(s.pulse, "at", nowMs - 7_200_000);
    const [lost, gone] = await renewLive(s, client, liveId);
    expect([lost, gone]).toEqual([[], []]);
    expect(Number(await s.raw.hget(s.pulse, "extra"))).toBeGreaterThanOrEqual(7_200_000);
    const reclaim = (stallMs: number) =>
      runScript(
        client,
        "chicoryReclaim",
        [s.stream, s.pulse],
        [s.group, "me", 60_000, "0-0", 1, 20, 10, 0, stallMs, 0, RELEASED_CONSUMER],
      ) as Promise<[string, unknown[], number, number, number, number]>;
    const [, none, , , streamExtra, opened] = await reclaim(30_000);
    expect([none, opened]).toEqual([[], 0]);
    expect(streamExtra).toBeGreaterThanOrEqual(7_200_000);
    // no window, a quiet of 2 hours again, but the check is off: taken
    await s.raw.hset(s.pulse, "at", nowMs - 7_200_000, "until", 0);
    const [, flat, , , noExtra, notOpened] = await reclaim(0);
    expect([flat[0], noExtra, notOpened]).toEqual([deadId, 0, 0]);
  });

  it("drops an expired pending entry that is gone from the stream instead of handing it out", async () => {
    const s = await setup({ claimMinIdleMs: 60_000, blockMs: 20 });
    const { deadId } = await behindLiveEntries(s, 3);
    await s.raw.xdel(s.stream, deadId); // e.g. a purge while it was held
    expect(await s.consumer().fetch(1, AbortSignal.timeout(5000))).toEqual([]);
    const pending = (await s.raw.xpending(s.stream, s.group, "-", "+", 10)) as Array<[string]>;
    expect(pending.map(([id]) => id)).not.toContain(deadId);
    expect(pending).toHaveLength(3);
  });

  it("a release applied twice (the client sends it again after a lost reply) takes one delivery off once", async () => {
    const s = await setup({ claimMinIdleMs: 500 });
    await publish(s.broker, s.queue);
    const a = s.consumer();
    await fetchOne(a);
    await a.close(); // dies: stops renewing
    const reclaimed = await fetchOne(s.consumer());
    expect(reclaimed.deliveryCount).toBe(2);
    const [id, owner] = ((await s.raw.xpending(s.stream, s.group, "-", "+", 1)) as Array<[string, string]>)[0] ?? [
      "",
      "",
    ];
    const client = s.raw as unknown as RedisClientLike;
    defineBrokerScripts(client);
    // The call `reclaimed.release()` sends, applied twice: the copy finds the entry given back
    // (owned by RELEASED_CONSUMER) and changes nothing.
    const args = [s.group, owner, id, 500, "0", reclaimed.deliveryCount, RELEASED_CONSUMER];
    expect(await runScript(client, "chicoryRelease", [s.stream], args)).toBe(1);
    expect(await runScript(client, "chicoryRelease", [s.stream], args)).toBe(0);
    const pending = (await s.raw.xpending(s.stream, s.group, "-", "+", 1)) as Array<[string, string, number, number]>;
    expect(pending[0]?.[1]).toBe(RELEASED_CONSUMER);
    expect(pending[0]?.[3]).toBe(1); // the next claim makes it 2 again: no delivery burnt, none lost
  });

  it("while the stream's window is open, an entry given back is taken at the lease alone; an expired one of a dead owner still waits", async () => {
    const s = await setup({ claimMinIdleMs: 1000, blockMs: 20 });
    await publish(s.broker, s.queue);
    await publish(s.broker, s.queue);
    const a = s.consumer();
    const [given, dead] = await a.fetch(2, AbortSignal.timeout(5000));
    await a.close(); // stops renewing `dead` (its lease runs out); `given` is given back:
    await given?.release();
    // idle past the lease, as an owner's entry is after a stall of a few seconds
    await s.raw.call("XCLAIM", s.stream, s.group, "dead-owner", 0, dead?.deliveryId ?? "", "IDLE", 5000, "JUSTID");
    // nobody called on the stream for 2 hours (Redis frozen, or no worker ran)
    const nowMs = Number((await s.raw.time())[0]) * 1000;
    await s.raw.hset(s.pulse, "at", nowMs - 7_200_000);
    const { logger, lines } = capturingLogger();
    const b = s.broker.consumer({ queues: [s.queue], consumerId: uniqueName("c-"), logger });
    cleanups.push(() => b.close());
    const taken = await b.fetch(2, AbortSignal.timeout(5000));
    expect(taken.map((d) => d.deliveryId)).toEqual([given?.deliveryId]);
    expect(taken[0]?.deliveryCount).toBe(1); // a give-back burns no delivery
    expect(Number(await s.raw.hget(s.pulse, "extra"))).toBeGreaterThanOrEqual(7_200_000); // the window is open
    const pending = (await s.raw.xpending(s.stream, s.group, "-", "+", 10)) as Array<[string, string]>;
    expect(pending.find(([id]) => id === dead?.deliveryId)?.[1]).toBe("dead-owner");
    // one entry held (the dead owner's, which now waits): a warning, with the numbers
    const opened = lines.filter((line) => /no consumer was in touch/.test(line.message));
    expect(opened.map((line) => [line.level, line.fields.held])).toEqual([["warn", 1]]);
    expect(opened[0]?.message).toMatch(
      /^redis: no consumer was in touch with queue \S+ for 720\d\.\d s .*: for the next 1\.0 s \(the lease, claimMinIdle\) every consumer reclaims only entries idle longer than 720\d\.\d s .*; 1 entry is held now$/,
    );
    await taken[0]?.ack();
  });

  it("a window opened while no consumer held an entry (a start after every worker was gone a while) is said at debug level", async () => {
    const s = await setup({ claimMinIdleMs: 60_000, blockMs: 20 });
    await publish(s.broker, s.queue); // waiting, held by nobody
    await s
      .consumer()
      .fetch(0, AbortSignal.timeout(1000))
      .catch(() => []); // (group and pulse written)
    const nowMs = Number((await s.raw.time())[0]) * 1000;
    await s.raw.hset(s.pulse, "at", nowMs - 120_000); // the last worker was gone 2 minutes ago
    const { logger, lines } = capturingLogger();
    const c = s.broker.consumer({ queues: [s.queue], consumerId: uniqueName("c-"), logger });
    cleanups.push(() => c.close());
    const [d] = await c.fetch(1, AbortSignal.timeout(5000));
    const opened = lines.filter((line) => /no consumer was in touch/.test(line.message));
    expect(opened.map((line) => [line.level, line.fields.held])).toEqual([["debug", 0]]);
    expect(opened[0]?.message).toMatch(/; no entry is held now$/);
    await d?.ack();
  });

  it("a window's reclaim takes given-back entries first on a long pending list too, and comes back for the scan", async () => {
    const s = await setup({ claimMinIdleMs: 60_000, blockMs: 20 });
    const { deadId } = await behindLiveEntries(s, 30);
    const client = s.raw as unknown as RedisClientLike;
    defineBrokerScripts(client);
    await publish(s.broker, s.queue);
    await s.raw.call("XREADGROUP", "GROUP", s.group, "x", "COUNT", 1, "STREAMS", s.stream, ">");
    const [[givenId = ""] = []] = (await s.raw.xpending(s.stream, s.group, "-", "+", 1, "x")) as Array<[string]>;
    await runScript(client, "chicoryRelease", [s.stream], [s.group, "x", givenId, 60_000, "0", 1, RELEASED_CONSUMER]);
    const nowMs = Number((await s.raw.time())[0]) * 1000;
    await s.raw.hset(s.pulse, "at", nowMs - 7_200_000); // a window of 2 hours opens
    const reclaim = (cursor: string) =>
      runScript(
        client,
        "chicoryReclaim",
        [s.stream, s.pulse],
        // 32 pending entries, past an IDLE-filter limit of 20: pages of 10, one free slot
        [s.group, "me", 60_000, cursor, 1, 20, 10, 0, 30_000, 0, RELEASED_CONSUMER],
      ) as Promise<[string, unknown[]]>;
    const [next, flat] = await reclaim("0-0");
    expect(flat.slice(0, 1).concat(flat.slice(2))).toEqual([givenId, 1]);
    expect(next).toBe("-"); // the slot is full: the scan starts soon, not after a reclaim interval
    const found: unknown[] = [];
    let cursor = next;
    for (let i = 0; i < 10 && cursor !== "0-0"; i++) {
      const [after, more] = await reclaim(cursor);
      found.push(...more);
      cursor = after;
    }
    expect(cursor).toBe("0-0");
    expect(found).toEqual([]); // the dead owner's entry (1 hour idle) waits for the window
    expect(deadId).not.toBe("");
  });

  it("a window's reclaim that lists a given-back entry twice still fills its free slots from the scan", async () => {
    const { s, deadId, client, nowMs } = await withDeadEntry(); // a dead owner's entry, idle 1 hour
    const [[liveId = ""] = []] = (await s.raw.xpending(s.stream, s.group, "-", "+", 10, "live")) as Array<[string]>;
    // the live entry (older than the dead one) given back 2 hours ago
    await runScript(
      client,
      "chicoryRelease",
      [s.stream],
      [s.group, "live", liveId, 7_200_000, "0", 1, RELEASED_CONSUMER],
    );
    await s.raw.hset(s.pulse, "at", nowMs - 1_800_000); // a window of 30 minutes: both are older
    const [next, flat] = (await runScript(
      client,
      "chicoryReclaim",
      [s.stream, s.pulse],
      [s.group, "me", 60_000, "0-0", 2, 20, 10, 0, 30_000, 0, RELEASED_CONSUMER],
    )) as [string, unknown[]];
    expect([flat[0], flat[3]]).toEqual([liveId, deadId]);
    expect(next).toBe(`(${deadId}`);
  });

  it("a dead letter or retry onto a key of another type fails before any write: the message stays pending", async () => {
    const s = await setup();
    await publish(s.broker, s.queue);
    const d = await fetchOne(s.consumer());
    const pending = async () => Number(((await s.raw.xpending(s.stream, s.group)) as [number])[0]);
    await s.raw.set(s.dlq, "not a stream");
    await expect(d.deadLetter("poison")).rejects.toThrow(/WRONGTYPE key .*:dlq:.* holds a string, not a stream/);
    await expect(s.broker.writeDeadLetter(s.queue, d.body, "poison")).rejects.toThrow(/WRONGTYPE/);
    // Redis's own WRONGTYPE names no key: the error names the command's
    await expect(s.broker.getDlqCount(s.queue)).rejects.toThrow(/WRONGTYPE .*\(key .*:dlq:\{.*\}; TYPE <key> tells/);
    // (a command whose key follows a subcommand: XINFO CONSUMERS <key>)
    await s.raw.rename(s.stream, `${s.stream}:kept`);
    await s.raw.set(s.stream, "not a stream");
    await expect(s.broker.getConsumerCount(s.queue)).rejects.toThrow(/\(key .*:stream:\{.*\}; TYPE <key> tells/);
    await s.raw.rename(`${s.stream}:kept`, s.stream);
    const delayed = `${s.prefix}:delayed:{${s.queue}}`;
    await s.raw.set(delayed, "not a zset");
    await expect(d.retry(d.body, 60_000)).rejects.toThrow(/WRONGTYPE key .*:delayed:.* holds a string, not a zset/);
    expect(await pending()).toBe(1);
    expect(await s.raw.xlen(s.stream)).toBe(1);
    await s.raw.del(s.dlq, delayed);
    await d.deadLetter("poison");
    expect(await s.raw.xlen(s.dlq)).toBe(1);
    expect(await pending()).toBe(0);
  });

  it("an ack or dead letter is not held up by a unique set of another type: the entry is settled", async () => {
    const s = await setup();
    await publish(s.broker, s.queue, { unique: true }); // its entry names its task id
    const d = await fetchOne(s.consumer());
    const unique = `${s.prefix}:unique:{${s.queue}}`;
    expect(await s.raw.type(unique)).toBe("set");
    await s.raw.set(unique, "not a set"); // an operator's SET at the key, say
    await d.ack();
    expect(Number(((await s.raw.xpending(s.stream, s.group)) as [number])[0])).toBe(0);
    expect(await s.raw.xlen(s.stream)).toBe(0);
    // nor a dead letter
    await publish(s.broker, s.queue);
    await fetchOne(s.consumer()).then((poison) => poison.deadLetter("poison"));
    expect(await s.raw.xlen(s.dlq)).toBe(1);
    expect(await s.raw.get(unique)).toBe("not a set"); // left as it was
  });

  it("a purge or DLQ replay with a key of another type: the purge goes on, the replay fails before any write", async () => {
    const s = await setup();
    const unique = `${s.prefix}:unique:{${s.queue}}`;
    await publish(s.broker, s.queue);
    await fetchOne(s.consumer()).then((poison) => poison.deadLetter("poison"));
    const [entry] = await s.broker.getDlqMessages(s.queue);
    const messageId = entry?.messageId ?? "";
    await s.raw.set(unique, "not a set"); // an operator's SET at the key, say
    await expect(s.broker.replayFromDlq(messageId, s.queue)).rejects.toThrow(
      /WRONGTYPE key .*:unique:.* holds a string, not a set \(nothing was changed\)/,
    );
    await s.raw.del(unique);
    // a work stream of another type: the DLQ entry must not be deleted before the XADD fails
    await s.raw.rename(s.stream, `${s.stream}:kept`);
    await s.raw.set(s.stream, "not a stream");
    await expect(s.broker.replayFromDlq(messageId, s.queue)).rejects.toThrow(
      /WRONGTYPE key .*:stream:.* holds a string, not a stream/,
    );
    await s.raw.del(s.stream);
    await s.raw.rename(`${s.stream}:kept`, s.stream);
    expect(await s.raw.xlen(s.dlq)).toBe(1); // still there
    expect(await s.broker.replayFromDlq(messageId, s.queue)).toBe(true);
    expect(await s.raw.xlen(s.dlq)).toBe(0);
    // the purge: the waiting and delayed messages go, the key of another type stays as it was
    await publish(s.broker, s.queue, { unique: true });
    await publish(s.broker, s.queue, { delayMs: 60_000, unique: true });
    await s.raw.del(unique);
    await s.raw.set(unique, "not a set");
    expect(await s.broker.purgeQueue(s.queue)).toBe(3);
    expect(await s.broker.getQueueSize(s.queue)).toBe(0);
    expect(await s.raw.get(unique)).toBe("not a set");
  });

  it("a settle from a consumer that lost its lease adds nothing (fencing)", async () => {
    const s = await setup({ claimMinIdleMs: 500 });
    await publish(s.broker, s.queue);
    const a = s.consumer();
    const stale = await fetchOne(a);
    await a.close();
    const b = s.consumer();
    const fresh = await fetchOne(b);
    await fresh.retry(fresh.body, 0); // the new owner retries: one new entry
    await stale.retry(stale.body, 0); // the old owner's retry is fenced
    await stale.deadLetter("late");
    expect(await s.raw.xlen(s.stream)).toBe(1);
    expect(await s.raw.xlen(s.dlq)).toBe(0);
  });

  it("a batched ack removes the entries it owns and leaves one reclaimed by another consumer pending (fencing)", async () => {
    const s = await setup({ claimMinIdleMs: 500 });
    await publish(s.broker, s.queue);
    await publish(s.broker, s.queue);
    const a = s.consumer();
    const held = await a.fetch(2, AbortSignal.timeout(1000));
    expect(held).toHaveLength(2);
    await a.close(); // no more lease renewal: both entries become claimable
    const b = s.consumer();
    const stolen = await fetchOne(b);
    const kept = held.find((d) => d.deliveryId !== stolen.deliveryId);
    const lost = held.find((d) => d.deliveryId === stolen.deliveryId);
    // The old owner acks both in one turn (one ack.lua call): only its own entry goes.
    await Promise.all([kept?.ack(), lost?.ack()]);
    const pending = (await s.raw.xpending(s.stream, s.group, "-", "+", 10)) as Array<[string, string]>;
    expect(pending.map(([id]) => id)).toEqual([stolen.deliveryId]);
    expect(await s.raw.xlen(s.stream)).toBe(1);
    await stolen.ack();
    expect(await s.raw.xlen(s.stream)).toBe(0);
    expect(await s.raw.xpending(s.stream, s.group)).toEqual([0, null, null, null]);
  });

  it("a confirmed ack (at-most-once) of an entry another consumer took rejects; an unconfirmed one resolves", async () => {
    const s = await setup({ claimMinIdleMs: 500 });
    await publish(s.broker, s.queue);
    await publish(s.broker, s.queue);
    const a = s.consumer();
    const held = await a.fetch(2, AbortSignal.timeout(1000));
    expect(held).toHaveLength(2);
    await a.close();
    const b = s.consumer();
    const taken = [await fetchOne(b), await fetchOne(b)];
    const [first, second] = held;
    await expect(first?.ack({ confirm: true })).rejects.toThrow(/lease lost/);
    await expect(second?.ack()).resolves.toBeUndefined();
    const pending = (await s.raw.xpending(s.stream, s.group, "-", "+", 10)) as Array<[string, string]>;
    expect(pending).toHaveLength(2);
    for (const d of taken) await d.ack({ confirm: true });
    expect(await s.raw.xlen(s.stream)).toBe(0);
  });

  /** Two entries running on a consumer with a short lease (renewals every 200 ms), and its log. */
  async function twoRunning() {
    const s = await setup({ claimMinIdleMs: 600 });
    await publish(s.broker, s.queue);
    await publish(s.broker, s.queue);
    const { logger, until } = capturingLogger();
    const a = s.broker.consumer({ queues: [s.queue], consumerId: uniqueName("c-"), logger });
    cleanups.push(() => a.close());
    const [first, second] = (await a.fetch(2, AbortSignal.timeout(1000))) as RedisDelivery[];
    if (!first || !second) throw new Error("expected two deliveries");
    return { s, until, first, second };
  }

  it("tells an unsettled delivery (and the log) when a renewal finds its entry taken by another consumer", async () => {
    const { s, until, first: stolen, second: kept } = await twoRunning();
    const lost = new Promise<string>((resolve) => stolen.onLeaseLost?.(() => resolve(stolen.deliveryId)));
    let keptLost = false;
    kept.onLeaseLost?.(() => {
      keptLost = true;
    });
    // Another consumer takes one entry over (as XAUTOCLAIM does once a stalled owner's lease ran out).
    await s.raw.call("XCLAIM", s.stream, s.group, "thief", 0, stolen.deliveryId, "JUSTID");
    expect(await lost).toBe(stolen.deliveryId);
    expect(await until(/lease lost on entries it held/)).toMatchObject({ level: "warn", fields: { entries: 1 } });
    await kept.ack();
    expect(keptLost).toBe(false);
  });

  it("a renewal that finds a running entry gone from the stream, held by nobody, says ownerless (not taken), and so does leaseState", async () => {
    const { s, until, first: gone, second: kept } = await twoRunning();
    const told = new Promise<string>((resolve) => gone.onLeaseLost(resolve));
    // as a Redis restart without persistence loses it (or a worker that took it over settles it)
    await settleByHand(s.raw, s.stream, s.group, gone.deliveryId);
    expect(await until(/left the stream, held by no consumer/)).toMatchObject({
      level: "warn",
      fields: { entries: 1 },
    });
    expect(await told).toBe("ownerless"); // not "taken": the worker aborts only if the task is finished
    expect(gone.isEntryGone).toBe(true);
    expect(await gone.leaseState()).toBe("ownerless");
    expect(await kept.leaseState()).toBe("held");
    await gone.ack(); // nothing left to acknowledge: resolves
    await kept.ack();
    expect(await s.raw.xlen(s.stream)).toBe(0);
  });

  it("leaseState asks Redis once the lease is old: taken when another consumer holds the entry or the re-created group will hand it out", async () => {
    const s = await setup({ claimMinIdleMs: 600 });
    await publish(s.broker, s.queue);
    const a = s.broker.consumer({ queues: [s.queue], consumerId: uniqueName("c-") });
    cleanups.push(() => a.close());
    const d = (await fetchOne(a)) as RedisDelivery;
    d.leaseConfirmedAtMs = 0; // as if the last renewal were long ago (no wait for a real one)
    expect(await d.leaseState()).toBe("held");
    await s.raw.call("XCLAIM", s.stream, s.group, "thief", 0, d.deliveryId, "JUSTID");
    expect(await d.leaseState()).toBe("taken");
    // the group deleted and re-created at 0: the entry, still in the stream, goes to a reader again
    await s.raw.xgroup("DESTROY", s.stream, s.group);
    expect(await d.leaseState()).toBe("taken");
    await s.raw.xgroup("CREATE", s.stream, s.group, "0");
    expect(await d.leaseState()).toBe("taken");
    await s.raw.del(s.stream); // and gone with the stream
    expect(await d.leaseState()).toBe("ownerless");
  });

  it("aborting a long blocked fetch returns at once", async () => {
    const s = await setup({ blockMs: 20_000, claimMinIdleMs: 60_000 });
    const c = s.consumer();
    await c.fetch(1, AbortSignal.timeout(50)); // opens the connection
    const controller = new AbortController();
    const started = Date.now();
    const pending = c.fetch(5, controller.signal);
    await sleep(100);
    controller.abort();
    expect(await pending).toEqual([]);
    // the read would block for 20 s: returning well before that is the abort at work
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it("dead-letters with data, error, failed_at and retry_count, and never trims the DLQ", async () => {
    const s = await setup({ dlqMaxLength: 1 });
    await publish(s.broker, s.queue);
    await publish(s.broker, s.queue);
    const c = s.consumer();
    const [first, second] = await c.fetch(2, AbortSignal.timeout(1000));
    const t0 = Number((await s.raw.time())[0]) * 1000;
    await first?.deadLetter("boom");
    const entries = (await s.raw.xrange(s.dlq, "-", "+")) as Array<[string, string[]]>;
    const fields = entries[0]?.[1] ?? [];
    const f: Record<string, string> = {};
    for (let i = 0; i + 1 < fields.length; i += 2) f[fields[i] as string] = fields[i + 1] as string;
    expect(f.data).toBe(first?.body);
    expect(f.error).toBe("boom");
    expect(f.retry_count).toBe("0");
    expect(Number(f.failed_at)).toBeGreaterThanOrEqual(t0);
    await expect(second?.deadLetter("boom 2")).rejects.toThrow(/DLQ .* is full/);
    expect(await s.raw.xlen(s.dlq)).toBe(1);
    expect(await s.raw.xlen(s.stream)).toBe(1);
    await second?.ack();
    expect(await s.raw.xlen(s.stream)).toBe(0);
  });

  it("a dead-letter move sent again after it filled the DLQ answers 'moved already', not 'DLQ full'", async () => {
    const s = await setup({ dlqMaxLength: 1 });
    const task = await publish(s.broker, s.queue);
    const consumerId = uniqueName("c-");
    const c = s.broker.consumer({ queues: [s.queue], consumerId });
    cleanups.push(() => c.close());
    const d = await fetchOne(c);
    const raw = s.raw as unknown as RedisClientLike;
    defineBrokerScripts(raw);
    const keys = ["3", s.stream, s.dlq, `${s.prefix}:unique:{${s.queue}}`];
    const args = [s.group, d.deliveryId, task.body, "boom", 0, 1, task.id, consumerId];
    expect(await runScript(raw, "chicoryDeadLetter", keys, args)).toBe(1);
    // as the client's copy sent again after a dropped connection (before: -1, logged as "DLQ
    // full, message kept in the work stream" for a message that was moved)
    expect(await runScript(raw, "chicoryDeadLetter", keys, args)).toBe(2);
    expect(await s.raw.xlen(s.dlq)).toBe(1);
    expect(await s.raw.xlen(s.stream)).toBe(0);
  });

  it("an ack of an entry pending for nobody (a restored Redis) deletes it and frees its unique id", async () => {
    const s = await setup();
    const task = await publish(s.broker, s.queue, { unique: true });
    const d = await fetchOne(s.consumer());
    // As after a restore from a snapshot taken between the read and the ack.
    await s.raw.xack(s.stream, s.broker.settings.consumerGroup, d.deliveryId);
    await d.ack();
    expect(await s.raw.xlen(s.stream)).toBe(0);
    const again = await s.broker.publish(s.queue, { id: task.id, body: task.body, unique: true });
    expect(again.published).toBe(true);
  });

  it("a replayed message holds its unique id: no second copy while it is queued, and its ack frees only its own", async () => {
    const s = await setup();
    const task = await publish(s.broker, s.queue, { unique: true });
    const c = s.consumer();
    await (await fetchOne(c)).deadLetter("x");
    const [entry] = await s.broker.getDlqMessages(s.queue);
    expect(await s.broker.replayFromDlq(entry?.messageId ?? "", s.queue)).toBe(true);
    // queued again by the replay: a unique publish of the same id is refused
    expect((await s.broker.publish(s.queue, { id: task.id, body: task.body, unique: true })).published).toBe(false);
    await (await fetchOne(c)).ack();
    expect((await s.broker.publish(s.queue, { id: task.id, body: task.body, unique: true })).published).toBe(true);
    // that fresh copy holds the id: replaying an older dead letter of it would make a second
    // copy, so it is refused and the entry stays in the DLQ
    const fresh = await fetchOne(c);
    const dlqId = (await s.raw.xadd(
      s.dlq,
      "*",
      "data",
      task.body,
      "error",
      "x",
      "failed_at",
      1,
      "retry_count",
      0,
      "id",
      task.id,
    )) as string;
    await expect(s.broker.replayFromDlq(dlqId, s.queue)).rejects.toThrow(/already queued, delayed or running/);
    expect(await s.broker.getDlqCount(s.queue)).toBe(1);
    expect(await s.raw.xlen(s.stream)).toBe(1);
    await fresh.ack();
    expect(await s.broker.replayFromDlq(dlqId, s.queue)).toBe(true);
  });

  it("concurrent replays from two brokers enqueue an entry once", async () => {
    const s = await setup();
    await publish(s.broker, s.queue);
    const c = s.consumer();
    await (await fetchOne(c)).deadLetter("x");
    const [entry] = await s.broker.getDlqMessages(s.queue);
    const other = await s.newBroker();
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) => (i % 2 ? other : s.broker).replayFromDlq(entry?.messageId ?? "", s.queue)),
    );
    expect(results.filter(Boolean)).toHaveLength(1);
    expect(await s.raw.xlen(s.stream)).toBe(1);
    expect(await s.raw.xlen(s.dlq)).toBe(0);
  });

  it("disconnect() sends the publishes made before it, and no timer keeps the process alive after", async () => {
    const prefix = testPrefix();
    const raw = rawRedis();
    cleanups.push(async () => {
      await deletePrefix(prefix);
      raw.disconnect();
    });
    // A producer that does not await its publishes before disconnecting, in a process of its
    // own; its publish time limit (60 s) must not hold the process open once it is done.
    const script = `
      import { RedisBroker } from ${JSON.stringify(new URL("../../../src/brokers/redis/index.ts", import.meta.url).href)};
      const broker = new RedisBroker({ url: ${JSON.stringify(SERVICES.redis)}, keyPrefix: ${JSON.stringify(prefix)}, env: {}, publishTimeoutMs: 60000 });
      await broker.connect();
      const body = (id) => JSON.stringify({ v: 1, id, name: "t", args: [], retries: 0 });
      const sent = [
        broker.publish("q", { id: "a", body: body("a") }),
        broker.publish("q", { id: "b", body: body("b") }),
        broker.publish("q", { id: "c", body: body("c"), unique: true }),
        broker.publish("q", { id: "d", body: body("d"), delayMs: 60000 }),
      ];
      await broker.disconnect();
      const settled = await Promise.allSettled(sent);
      console.log(JSON.stringify(settled.map((r) => r.status === "fulfilled" ? "ok" : String(r.reason))));
    `;
    const { stdout } = await run(process.execPath, ["--import", tsx, "--input-type=module", "-e", script], {
      timeout: 30_000,
    });
    expect(JSON.parse(stdout)).toEqual(["ok", "ok", "ok", "ok"]);
    expect(await raw.xlen(`${prefix}:stream:{q}`)).toBe(3);
    expect(await raw.zcard(`${prefix}:delayed:{q}`)).toBe(1);
  });

  it("replays and deletes only the DLQ entry named by its whole id (<ms>-<seq>)", async () => {
    const s = await setup();
    // Two dead letters of one millisecond: `<ms>` alone would be a range over both.
    const ms = Date.now();
    for (const seq of [0, 1]) {
      const task = encodeTask(codec);
      await s.raw.xadd(
        s.dlq,
        `${ms}-${seq}`,
        "data",
        task.body,
        "error",
        "x",
        "failed_at",
        ms,
        "retry_count",
        0,
        "id",
        task.id,
      );
    }
    await expect(s.broker.replayFromDlq(`${ms}`, s.queue)).rejects.toBeInstanceOf(ValidationError);
    await expect(s.broker.deleteFromDlq(`${ms}`, s.queue)).rejects.toThrow(/not a Redis stream entry id/);
    // looked up by its whole id, without reading the DLQ
    expect(await s.broker.hasDlqEntry(`${ms}-1`, s.queue)).toBe(true);
    expect(await s.broker.hasDlqEntry(`${ms}-2`, s.queue)).toBe(false);
    await expect(s.broker.hasDlqEntry(`${ms}`, s.queue)).rejects.toBeInstanceOf(ValidationError);
    await expect(s.broker.replayFromDlq("1-0 OR 2", s.queue)).rejects.toBeInstanceOf(ValidationError);
    // not a string (from JavaScript, or another field read than `messageId`): said so, no connection error
    for (const id of [undefined, null, 1700000000000]) {
      await expect(s.broker.replayFromDlq(id as unknown as string, s.queue)).rejects.toThrow(
        /^DLQ message id must be a string/,
      );
      await expect(s.broker.deleteFromDlq(id as unknown as string, s.queue)).rejects.toBeInstanceOf(ValidationError);
    }
    // in form but out of range (a part above 2^64 - 1), or a count that is no whole number
    await expect(s.broker.replayFromDlq("99999999999999999999-0", s.queue)).rejects.toBeInstanceOf(ValidationError);
    await expect(s.broker.getDlqMessages(s.queue, 1.5)).rejects.toBeInstanceOf(ValidationError);
    // listing on: past the largest id there is nothing (Redis refuses it as an exclusive start)
    expect((await s.broker.getDlqMessagesAfter(`${ms}-0`, s.queue)).map((m) => m.messageId)).toEqual([`${ms}-1`]);
    expect(await s.broker.getDlqMessagesAfter("18446744073709551615-18446744073709551615", s.queue)).toEqual([]);
    await expect(s.broker.getDlqMessagesAfter(`${ms}`, s.queue)).rejects.toBeInstanceOf(ValidationError);
    // a bad queue name rejects like every other admin call (no synchronous throw)
    const bad = s.broker.replayFromDlq(`${ms}-1`, "bad queue!");
    await expect(bad).rejects.toBeInstanceOf(ValidationError);
    expect(await s.broker.replayFromDlq(`${ms}-1`, s.queue)).toBe(true);
    expect(await s.broker.replayFromDlq(`${ms}-1`, s.queue)).toBe(false);
    expect(await s.raw.xlen(s.stream)).toBe(1);
    expect((await s.broker.getDlqMessages(s.queue)).map((m) => m.messageId)).toEqual([`${ms}-0`]);
  });

  it("lists a dead letter whose body cannot be read with the task id stored next to it", async () => {
    const s = await setup();
    await s.raw.xadd(
      s.dlq,
      "*",
      "data",
      "{not json",
      "error",
      "decode_error",
      "failed_at",
      1,
      "retry_count",
      0,
      "id",
      "task-7",
    );
    await s.raw.xadd(s.dlq, "*", "data", "{not json", "error", "decode_error", "failed_at", 1, "retry_count", 0);
    const [withId, without] = await s.broker.getDlqMessages(s.queue);
    expect(withId?.originalMessage).toEqual({ id: "task-7" });
    expect(without?.originalMessage).toBeNull();
    // dead-lettered by a consumer: an unreadable body with no `id` field names no task (not its entry id)
    await s.raw.xadd(s.stream, "*", "data", "{not json either");
    const d = await fetchOne(s.consumer());
    await d.deadLetter("decode_error");
    const third = (await s.broker.getDlqMessages(s.queue))[2];
    expect(third?.body).toBe("{not json either");
    expect(third?.originalMessage).toBeNull();
  });

  it("a replay whose result backend cannot be read fails with the backend's error, and replays nothing", async () => {
    class Unreachable extends MemoryBackend {
      override async getResult(): Promise<TaskRecord | null> {
        throw new BackendConnectionError("backend down");
      }
    }
    const prefix = testPrefix();
    cleanups.push(() => deletePrefix(prefix));
    const broker = new RedisBroker({ url: SERVICES.redis, keyPrefix: prefix, env: {} });
    const app = new Chicory({ broker, backend: new Unreachable() });
    cleanups.push(() => app.disconnect());
    await app.connect();
    await broker.writeDeadLetter("q", encodeTask(app.codec).body, "poison");
    const [entry] = await broker.getDlqMessages("q");
    const error = await broker.replayFromDlq(entry?.messageId ?? "", "q").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BackendConnectionError);
    expect(String(error)).toMatch(/nothing was replayed.*backend down/);
    expect(await broker.getDlqCount("q")).toBe(1);
    expect(await broker.getQueueSize("q")).toBe(0);
  });

  it("a consumer closed while its touch of several queues is under way stays out of every group", async () => {
    // The touch (an empty history read per queue, one after the other, which re-creates a
    // missing consumer) must not go on to the next queue once close() has removed the consumer.
    const main = rawRedis();
    cleanups.push(() => main.disconnect());
    const s = await setup({ client: main });
    const other = uniqueName("q2");
    const otherStream = `${s.prefix}:stream:{${other}}`;
    const c = s.consumer(s.broker, [s.queue, other]);
    await c.fetch(1, AbortSignal.timeout(50)); // creates both groups
    let firstTouchReply: Promise<unknown> | undefined;
    const closed = new Promise<void>((resolve, reject) => {
      const call = main.call.bind(main) as (...args: unknown[]) => Promise<unknown>;
      (main as unknown as { call: (...args: unknown[]) => Promise<unknown> }).call = (...args) => {
        const reply = call(...args);
        if (firstTouchReply === undefined && args[0] === "XREADGROUP" && args.at(-2) === s.stream) {
          // the first queue's touch: close now, and let its reply arrive after close() ended
          firstTouchReply = c
            .close()
            .then(() => reply)
            .finally(resolve);
          firstTouchReply.catch(reject);
          return firstTouchReply;
        }
        return reply;
      };
    });
    await closed; // (the touch comes within about 2.5 s of the fetch)
    await main.call("PING"); // after whatever the touch sent once its first reply came
    const consumersOf = async (stream: string) =>
      ((await s.raw.call("XINFO", "CONSUMERS", stream, s.group)) as unknown[]).length;
    expect([await consumersOf(s.stream), await consumersOf(otherStream)]).toEqual([0, 0]);
  });

  it("cleanupStaleClients deletes idle consumers without pending entries only", async () => {
    const s = await setup({ claimMinIdleMs: 60_000 });
    await publish(s.broker, s.queue);
    const busy = s.consumer();
    const held = await fetchOne(busy);
    const idle = s.consumer();
    await idle.fetch(1, AbortSignal.timeout(50));
    await busy.close();
    await idle.close();
    // a consumer that closes owning nothing deletes itself; one that owns an entry stays
    expect(await s.broker.getConsumerCount(s.queue)).toBe(1);
    // one that died without closing (owning nothing) is left for the cleanup
    await s.raw.call("XGROUP", "CREATECONSUMER", s.stream, s.group, uniqueName("dead-"));
    await sleep(300);
    expect(await s.broker.getConsumerCount(s.queue)).toBe(2);
    expect(await s.broker.cleanupStaleClients(s.queue, 0.1)).toBe(1);
    expect(await s.broker.getConsumerCount(s.queue)).toBe(1);
    expect(await s.broker.getPendingCount(s.queue)).toBe(1);
    await held.ack();
  });

  it("an ack resent after a reconnect that finds its entry settled, within the lease, counts as applied; otherwise it is a lost lease", async () => {
    // The broker's command connection is this client, so the test can drop it.
    const main = rawRedis();
    cleanups.push(() => main.disconnect());
    const s = await setup({ claimMinIdleMs: 60_000, client: main });
    const logged: Array<[string, string]> = [];
    const log = (level: string) => (fields: unknown, message?: string) =>
      logged.push([level, String(message ?? fields)]);
    const logger = {
      debug: () => {},
      info: log("info"),
      warn: log("warn"),
      error: log("error"),
      child: () => logger,
    };
    const consumerId = uniqueName("c-");
    const c = s.broker.consumer({ queues: [s.queue], consumerId, logger });
    cleanups.push(() => c.close());
    for (let i = 0; i < 12; i++) await publish(s.broker, s.queue);
    const firstCopy = (d: Delivery) => settleByHand(s.raw, s.stream, s.group, d.deliveryId);
    // Kills the command connection; the settle called next goes out while it reconnects.
    const dropMain = () => dropConnection(main, s.raw);
    const first = await fetchOne(c);
    await first.ack();
    expect(logged).toEqual([]);

    // What a resent ack meets: its first copy, applied before the connection dropped, took the
    // entry out of the PEL and the stream (the ack script's XACK and XDEL); the copy sent again
    // is answered on the new connection. An at-most-once job acknowledged that way runs.
    /** Its first copy applied by hand, `d`'s confirmed ack goes out while the connection drops. */
    const ackResent = async (d: Delivery) => {
      await firstCopy(d);
      const reconnected = await dropMain();
      const acked = d.ack({ confirm: true });
      acked.catch(() => undefined); // (handled by the caller, after the reconnect)
      await reconnected.ready;
      return acked;
    };
    await expect(ackResent(await fetchOne(c))).resolves.toBeUndefined();
    expect(logged).toEqual([["info", expect.stringMatching(/already acknowledged by an earlier copy/)]]);
    logged.length = 0;
    // A dead letter resent the same way (its first copy moved the entry): info, nothing else.
    const deadLetter = await fetchOne(c);
    await firstCopy(deadLetter);
    const reconnectedAgain = await dropMain();
    await deadLetter.deadLetter("poison");
    await reconnectedAgain.ready;
    expect(logged).toEqual([["info", expect.stringMatching(/already moved by an earlier copy/)]]);
    logged.length = 0;

    // No reconnect while the call was out: nothing was sent twice, so the entry was settled
    // by someone else: a lost lease.
    const noResend = await fetchOne(c);
    await firstCopy(noResend);
    await expect(noResend.ack({ confirm: true })).rejects.toThrow(/lease lost/);
    expect(logged).toEqual([
      ["warn", expect.stringMatching(/no longer pending for this consumer \(lease lost to another worker/)],
    ]);
    logged.length = 0;
    // Another consumer's now (taken without waiting for the idle time, as after a failover):
    // a lost lease, whatever the reconnects.
    const taken = await fetchOne(c);
    await s.raw.call("XCLAIM", s.stream, s.group, "thief", "0", taken.deliveryId, "JUSTID");
    const reconnectedThird = await dropMain();
    await expect(taken.ack({ confirm: true })).rejects.toThrow(/lease lost/);
    await reconnectedThird.ready;
    expect(logged).toEqual([["warn", expect.stringMatching(/lease lost/)]]);
    logged.length = 0;
    /**
     * A delivery whose lease was confirmed `ageMs` ago, acked with its first copy applied and
     * the copy sent again after a reconnect (`beforeAck` runs between the fetch and the ack):
     * counted as applied (info), or as a lost lease (a warning, the ack rejects).
     */
    const resent = async (ageMs: number, counted: "applied" | "lease lost", beforeAck = async () => {}) => {
      const d = (await fetchOne(c)) as Delivery & { leaseConfirmedAtMs: number };
      d.leaseConfirmedAtMs -= ageMs;
      await beforeAck();
      if (counted === "applied") {
        await expect(ackResent(d)).resolves.toBeUndefined();
        expect(logged.at(-1)).toEqual(["info", expect.stringMatching(/already acknowledged by an earlier copy/)]);
      } else {
        await expect(ackResent(d)).rejects.toThrow(/lease lost/);
        expect(logged.at(-1)).toEqual(["warn", expect.stringMatching(/lease lost/)]);
      }
      const lines = logged.splice(0);
      return lines.slice(0, -1); // the lines before
    };
    // Confirmed 35 s ago, within the 60 s claim idle time less a renewal interval (20 s) and a
    // margin (a tenth, at most 2 s): no other worker could have claimed it before the first copy
    // was applied, even had the last renewal been lost.
    expect(await resent(35_000, "applied")).toEqual([]);
    // Settled already, after a reconnect, but the lease may have run out (its last confirmation
    // is older than that, 38 s): another worker may have run it.
    expect(await resent(39_000, "lease lost")).toEqual([]);
    // The same age while the stream's window is in force (nobody could call for 5 s: a stall
    // of Redis, fleet-pulse.lua): every reclaim waits 5 s more, so the lease held until now.
    const [seconds] = await s.raw.time();
    const redisNowMs = Number(seconds) * 1000;
    await s.raw.hset(s.pulse, "at", redisNowMs, "extra", 5_000, "until", redisNowMs + 60_000, "sure", 5_000);
    expect(await resent(39_000, "applied")).toEqual([]);
    // Older than the lease (less the margins) plus the window: another worker may have taken it.
    expect(await resent(44_000, "lease lost")).toEqual([]);
    // A window opened while the pulse hash was missing (deleted, evicted, lost in a restart)
    // rests on one consumer's own stall: nothing proves nobody reclaimed meanwhile.
    await s.raw.hset(s.pulse, "sure", 0);
    expect(await resent(39_000, "lease lost")).toEqual([]);
    // No window yet, but nobody called for 45 s (longer than the stall threshold, half the
    // lease): the worker's own question is the first call after the stall, which opens it.
    const quietFor45s = async () => {
      await s.raw.del(s.pulse);
      await s.raw.hset(s.pulse, "at", redisNowMs - 45_000);
    };
    expect(await resent(80_000, "applied", quietFor45s)).toEqual([
      ["warn", expect.stringMatching(/no consumer was in touch with queue/)],
    ]);
    // A window that ended: reclaims wait the lease alone again.
    await s.raw.hset(s.pulse, "until", redisNowMs - 1);
    expect(await resent(39_000, "lease lost")).toEqual([]);
  });

  it("a lease renewal resent after a reconnect that finds an entry gone while its ack is out leaves the ack's judgement to the ack", async () => {
    // The broker's command connection is this client: the test holds back the renewal that
    // names the entry, then drops the connection, so that the renewal and the ack are both sent
    // again on the new one, the renewal first (as when a stall of Redis outlasts the command
    // connection: a renewal sent before it, the ack of a job that ended during it).
    const main = rawRedis();
    cleanups.push(() => main.disconnect());
    const s = await setup({ claimMinIdleMs: 3000, client: main });
    const { logger, lines } = capturingLogger();
    const consumerId = uniqueName("c-");
    const c = s.broker.consumer({ queues: [s.queue], consumerId, logger });
    cleanups.push(() => c.close());
    await publish(s.broker, s.queue);
    const d = await fetchOne(c);
    type Sent = Parameters<typeof main.sendCommand>[0];
    const send = main.sendCommand.bind(main);
    let heldBack: Sent | undefined;
    const renewalSeen = new Promise<void>((resolve) => {
      main.sendCommand = ((command: Sent, stream?: unknown) => {
        const args = command.args.map(String);
        if (heldBack === undefined && args.includes(s.pulse) && args.includes(d.deliveryId)) {
          heldBack = command;
          resolve();
          return command.promise;
        }
        return send(command, stream as never);
      }) as typeof main.sendCommand;
    });
    cleanups.push(() => {
      main.sendCommand = send;
    });
    await renewalSeen; // (renewals go out every lease / 3: 1 s)
    // The ack's first copy, applied before the connection dropped: the entry left the PEL and
    // the stream.
    await settleByHand(s.raw, s.stream, s.group, d.deliveryId);
    const reconnected = await dropConnection(main, s.raw);
    if (heldBack === undefined) throw new Error("unreachable: the renewal was seen");
    void send(heldBack);
    const acked = d.ack({ confirm: true });
    acked.catch(() => undefined); // (checked after the reconnect)
    await reconnected.ready;
    // The renewal finds the entry gone (pending for nobody, out of the stream), as the ack
    // does: it says nothing the ack's own judgement does not weigh (within the lease, after a
    // reconnect: its earlier copy). Before, it counted as a lost lease (a false warning).
    await expect(acked).resolves.toBeUndefined();
    expect(lines.map((line) => [line.level, line.message])).toEqual([
      ["info", expect.stringMatching(/already acknowledged by an earlier copy/)],
    ]);
  });

  it("a read whose reply this process handles after another consumer reclaimed its entry (a pause) does not run it", async () => {
    const s = await setup({ claimMinIdleMs: 4000 });
    const warnings: string[] = [];
    const infos: string[] = [];
    const logger = {
      debug: () => {},
      info: (fields: unknown, message?: string) => infos.push(String(message ?? fields)),
      warn: (fields: unknown, message?: string) => warnings.push(String(message ?? fields)),
      error: () => {},
      child: () => logger,
    };
    const { consumerId, reading } = await blockedRead(s, logger);
    // From here this process stands still (as if stopped) while Redis hands the entry to the
    // blocked read and another consumer reclaims it; redis-cli does the outside work. Every
    // wait below has a deadline: the event loop cannot end this test while it is blocked.
    const pausedAt = performance.now();
    const added = s.raw.xadd(s.stream, "1-1", "data", encodeTask(codec).body); // written now
    while (!cli("XPENDING", s.stream, s.group, "-", "+", "1").includes(consumerId)) {
      if (performance.now() - pausedAt > 5000) throw new Error("the blocked read did not get the entry");
      pause(20);
    }
    cli("XCLAIM", s.stream, s.group, "thief", "0", "1-1", "JUSTID");
    const past = 2100 - (performance.now() - pausedAt); // more than half the claim idle time
    if (past > 0) pause(past);
    expect(await added).toBe("1-1");
    expect(await reading).toEqual([]);
    // (the stand-still was longer than half the claim idle time: warned of as a gap in Redis's
    // replies too; as no consumer called on the queue meanwhile, the renewal that follows the gap
    // opens the queue's window, said at info level as this consumer warned of the stall already)
    expect(warnings).toHaveLength(2);
    expect(warnings).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^redis: no reply from Redis for \d+\.\d s/),
        expect.stringMatching(/another consumer reclaimed them/),
      ]),
    );
    expect(infos).toContainEqual(
      expect.stringMatching(/^redis: no consumer was in touch with queue \S+ for \d+\.\d s/),
    );
    const pending = (await s.raw.xpending(s.stream, s.group, "-", "+", 1)) as Array<[string, string]>;
    expect(pending[0]?.[1]).toBe("thief");
  });

  it("a read whose reply this process handles after its host was suspended, and another consumer reclaimed its entry, does not run it", async () => {
    const s = await setup({ claimMinIdleMs: 4000 });
    const { logger, lines } = capturingLogger();
    const { consumerId, reading } = await blockedRead(s, logger);
    // From here the host is suspended: this process stands still and its monotonic clock stops
    // (Linux's does not count a suspend), while Redis hands the entry to the blocked read and
    // another consumer reclaims it. The suspend lasts 5 s by the wall clock, more than half the
    // claim idle time; the monotonic clock then goes on from where it stopped.
    const realNow = performance.now.bind(performance);
    const realDateNow = Date.now.bind(Date);
    const stoppedAt = realNow();
    const monotonic = vi.spyOn(performance, "now").mockImplementation(() => stoppedAt);
    const wall = vi.spyOn(Date, "now");
    try {
      const added = s.raw.xadd(s.stream, "1-1", "data", encodeTask(codec).body); // written now
      while (!cli("XPENDING", s.stream, s.group, "-", "+", "1").includes(consumerId)) {
        if (realNow() - stoppedAt > 5000) throw new Error("the blocked read did not get the entry");
        pause(20);
      }
      cli("XCLAIM", s.stream, s.group, "thief", "0", "1-1", "JUSTID"); // (as if idle past the lease)
      const suspendedMs = realNow() - stoppedAt;
      monotonic.mockImplementation(() => realNow() - suspendedMs);
      wall.mockImplementation(() => realDateNow() + 5000 - suspendedMs);
      expect(await added).toBe("1-1");
      // before, the reply looked fresh by the monotonic clock and the entry was handed out
      expect(await reading).toEqual([]);
    } finally {
      monotonic.mockRestore();
      wall.mockRestore();
    }
    expect(lines.map((l) => l.message)).toContainEqual(expect.stringMatching(/another consumer reclaimed them/));
    const pending = (await s.raw.xpending(s.stream, s.group, "-", "+", 1)) as Array<[string, string]>;
    expect(pending[0]?.[1]).toBe("thief");
  });

  it("a consumer's first fetch writes the queue's pulse before its first read: every entry a worker holds has one", async () => {
    const s = await setup({ claimMinIdleMs: 60_000 });
    expect(await s.raw.exists(s.pulse)).toBe(0);
    await publish(s.broker, s.queue);
    const d = await fetchOne(s.consumer());
    const [pending] = (await s.raw.xpending(s.stream, s.group, "-", "+", 1)) as Array<[string, string, number]>;
    const idleMs = pending?.[2];
    const [seconds, micros] = await s.raw.time(); // (after: nowMs - idleMs is not before the read)
    const nowMs = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
    // (so a stall right after the first worker's start is measured from that call: a worker
    // started during the stall opens the queue's window, as in the freeze tests)
    const at = await s.raw.hget(s.pulse, "at");
    expect(at).not.toBeNull();
    expect(Number(at)).toBeLessThanOrEqual(nowMs - Number(idleMs));
    await d.ack();
  });

  it("a consumer with nothing to read or renew for a while (its at_most_once jobs run) takes no quiet for a Redis stall", async () => {
    const s = await setup({ claimMinIdleMs: 3000 }); // stall threshold 1.5 s
    const { logger, lines } = capturingLogger();
    const c = s.broker.consumer({ queues: [s.queue], consumerId: uniqueName("c-"), logger });
    cleanups.push(() => c.close());
    await publish(s.broker, s.queue);
    const d = await fetchOne(c);
    await d.ack(); // at_most_once: acknowledged before it runs, so nothing is left to renew
    await sleep(4000); // the job runs; no fetch meanwhile
    expect(lines.filter((line) => /no reply from Redis|no consumer was in touch/.test(line.message))).toEqual([]);
    // and it kept the queue's pulse, so no other consumer takes this quiet for a stall either
    const [seconds, micros] = await s.raw.time();
    const nowMs = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
    expect(nowMs - Number(await s.raw.hget(s.pulse, "at"))).toBeLessThan(1500);
  });

  it("a live consumer with nothing to read stays active in the group (Redis 7.0 idle) and re-registers after a deletion", async () => {
    const s = await setup({ claimMinIdleMs: 60_000 });
    const consumerId = uniqueName("c-");
    const c = s.broker.consumer({ queues: [s.queue], consumerId });
    try {
      await c.fetch(1, AbortSignal.timeout(50)); // creates the group and registers the consumer
      expect(await s.raw.call("XGROUP", "DELCONSUMER", s.stream, s.group, consumerId)).toBe(0);
      const info = await eventually(
        async () => {
          const rows = (await s.raw.call("XINFO", "CONSUMERS", s.stream, s.group)) as unknown[][];
          const row = rows.find((r) => r[r.indexOf("name") + 1] === consumerId);
          if (!row) throw new Error("not registered yet");
          return row;
        },
        // Due 2-2.5 s after the fetch; a CI machine busy with the other test files may run the
        // consumer's timer late.
        8000,
        100,
      );
      expect(Number(info[info.indexOf("idle") + 1])).toBeLessThan(1000);
      // Still idle, the consumer touches the group again: its idle time drops back instead of
      // growing without end (which is what would make cleanupStaleClients delete it).
      let previous = -1;
      await eventually(
        async () => {
          const rows = (await s.raw.call("XINFO", "CONSUMERS", s.stream, s.group)) as unknown[][];
          const row = rows.find((r) => r[r.indexOf("name") + 1] === consumerId);
          if (!row) throw new Error("the live consumer left the group");
          const idle = Number(row[row.indexOf("idle") + 1]);
          const dropped = previous >= 500 && idle < previous;
          previous = idle;
          if (!dropped) throw new Error(`idle ${idle} ms has not dropped back yet`);
        },
        10_000,
        100,
      );
    } finally {
      await c.close();
    }
  });

  it("keeps every key inside the prefix and hash-tagged by queue", async () => {
    const s = await setup();
    await publish(s.broker, s.queue);
    await publish(s.broker, s.queue, { delayMs: 60_000 });
    await publish(s.broker, s.queue, { unique: true });
    const c = s.consumer();
    await (await fetchOne(c)).deadLetter("x");
    const keys = await keysUnder(s.raw, s.prefix);
    expect(keys.length).toBeGreaterThanOrEqual(4);
    for (const key of keys) {
      // a publish call's receipt (`…:sent:{Q}:<call token>`) is the only key that adds to the tag
      expect(key).toMatch(
        new RegExp(
          `^${s.prefix}:((stream|delayed|delayed-data|dlq|unique|pulse):\\{${s.queue}\\}|sent:\\{${s.queue}\\}:[A-Za-z0-9_.-]+)$`,
        ),
      );
    }
    const stray = (await s.raw.keys(`*${s.queue}*`)).filter((k) => !k.startsWith(`${s.prefix}:`));
    expect(stray).toEqual([]);
  });

  it("recovers from a lost stream and group (NOGROUP) by re-creating them", async () => {
    const s = await setup();
    const c = s.consumer();
    await publish(s.broker, s.queue);
    await (await fetchOne(c)).ack();
    await s.raw.del(s.stream); // what a restart without persistence looks like
    const task = await publish(s.broker, s.queue);
    const got = await fetchOne(c, 5000);
    expect(got.body).toBe(task.body);
    await got.ack();
  });

  it("a group lost again soon after its re-creation fails the fetch (the worker's backoff applies), warning once", async () => {
    const s = await setup();
    const { logger, lines } = capturingLogger();
    const c = s.broker.consumer({ queues: [s.queue], consumerId: uniqueName("c-"), logger });
    cleanups.push(() => c.close());
    await publish(s.broker, s.queue);
    await (await fetchOne(c)).ack();
    await s.raw.del(s.stream); // evicted, say
    expect(await c.fetch(1, AbortSignal.timeout(300))).toEqual([]);
    expect(await c.fetch(1, AbortSignal.timeout(300))).toEqual([]); // re-created
    await s.raw.del(s.stream); // and evicted again
    await expect(c.fetch(1, AbortSignal.timeout(300))).rejects.toThrow(/missing again within 10 s .*noeviction/);
    expect(lines.filter((l) => /consumer group missing/.test(l.message))).toHaveLength(1);
    // not re-created at once: the fetches fail (no Redis call) until a pause is over
    await expect(c.fetch(1, AbortSignal.timeout(300))).rejects.toThrow(/re-created in \d+ ms/);
    expect(await s.raw.exists(s.stream)).toBe(0);
    const task = await publish(s.broker, s.queue);
    const got = await fetchOne(c, 5000);
    expect(got.body).toBe(task.body); // re-created once the pause was over
  });

  it("uses an injected client without closing it (the caller owns it)", async () => {
    const prefix = testPrefix();
    const client = rawRedis();
    const broker = new RedisBroker({ client, keyPrefix: prefix, env: {} });
    broker.bind({ codec });
    await broker.connect();
    const queue = uniqueName("q");
    const consumer = broker.consumer({ queues: [queue], consumerId: uniqueName("c-") });
    cleanups.push(async () => {
      await deletePrefix(prefix);
      client.disconnect();
    });
    const task = await publish(broker, queue);
    const [got] = await consumer.fetch(1, AbortSignal.timeout(1000));
    expect(got?.body).toBe(task.body);
    await got?.ack();
    await broker.disconnect();
    expect(client.status).toBe("ready");
    expect(await client.ping()).toBe("PONG");
  });

  it("many consumers of one broker add no listener each to its shared command connection", async () => {
    const prefix = testPrefix();
    const client = rawRedis();
    cleanups.push(async () => {
      await deletePrefix(prefix);
      client.disconnect();
    });
    const before = client.listenerCount("ready");
    const broker = new RedisBroker({ client, keyPrefix: prefix, env: {} });
    await broker.connect();
    const withBroker = client.listenerCount("ready");
    const queue = uniqueName("q");
    const consumers = Array.from({ length: 12 }, () =>
      broker.consumer({ queues: [queue], consumerId: uniqueName("c-") }),
    );
    await Promise.all(consumers.map((c) => c.fetch(1, AbortSignal.timeout(200))));
    expect(client.listenerCount("ready")).toBe(withBroker);
    await broker.disconnect();
    expect(client.listenerCount("ready")).toBe(before);
  });
});

/**
 * Redis-specific backend behaviour: key layout and TTL, pub/sub wake-up shared by every
 * waiter (one subscription), heartbeat keys by the Redis clock.
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { Redis } from "ioredis";
import { describe, expect, it, vi } from "vitest";
import type { TaskRecord } from "../../../src/backends/backend.js";
import { RedisBackend } from "../../../src/backends/redis/index.js";
import { findNonJson, type JsonValue } from "../../../src/core/json.js";
import { AsyncResult, BackendConnectionError, silentLogger, TimeoutError } from "../../../src/index.js";
import { eventually, successRecord as success } from "../../contract/contract-helpers.js";
import { useCleanups } from "../../helpers/cleanups.js";
import { SERVICES, skipUnless, uniqueName } from "../../helpers/services.js";
import { idleWorkerStats } from "../../helpers/worker-stats.js";
import { aclUser, deletePrefix, keysUnder, rawRedis, testPrefix } from "./redis-test-keys.js";

const run = promisify(execFile);
const tsx = import.meta.resolve("tsx");
const skip = await skipUnless("redis");

/** A raw subscriber of `channel` and the messages it received so far. */
async function listen(channel: string): Promise<{ sub: ReturnType<typeof rawRedis>; messages: string[] }> {
  const sub = rawRedis();
  const messages: string[] = [];
  await sub.subscribe(channel);
  sub.on("message", (_channel, message) => messages.push(message));
  return { sub, messages };
}

/** Resolves once `messages` (filled by `sub`'s message listener) holds `n` messages. */
function untilCount(sub: ReturnType<typeof rawRedis>, messages: string[], n: number): Promise<void> {
  if (messages.length >= n) return Promise.resolve();
  return new Promise((resolve) => {
    const check = () => {
      if (messages.length < n) return;
      sub.off("message", check);
      resolve();
    };
    sub.on("message", check);
  });
}

describe.skipIf(skip)("redis backend", () => {
  const cleanups = useCleanups();

  async function setup() {
    const prefix = testPrefix();
    const raw = rawRedis();
    const backends: RedisBackend[] = [];
    const open = async (resultTtl: number | string = "1h") => {
      const b = new RedisBackend({ url: SERVICES.redis, keyPrefix: prefix, resultTtl, env: {} });
      await b.connect();
      backends.push(b);
      return b;
    };
    cleanups.push(async () => {
      await Promise.allSettled(backends.map((b) => b.disconnect()));
      await deletePrefix(prefix);
      raw.disconnect();
    });
    // The channel of finished records: per prefix and database
    const channel = new RedisBackend({ url: SERVICES.redis, keyPrefix: prefix, env: {} }).doneChannel;
    return { prefix, raw, open, channel };
  }

  /** A waiting backend whose subscription is open (its first wait subscribes) and a writing one. */
  async function waiterAndWriter(s: Awaited<ReturnType<typeof setup>>, ttl?: Parameters<typeof s.open>[0]) {
    const waiting = await s.open(ttl);
    const writer = await s.open(ttl);
    await subscribed(waiting, writer);
    return { waiting, writer };
  }

  /**
   * Makes `waiting`'s result subscription live: its first wait subscribes before it reads
   * (within the wait's timeout), so once a wait for a record `writer` stores has its record,
   * the subscription is up.
   */
  async function subscribed(waiting: RedisBackend, writer: RedisBackend): Promise<void> {
    const marker = uniqueName("task-");
    const wait = waiting.waitForResult(marker, { timeoutMs: 10_000 });
    await writer.storeResult(success(marker, 0));
    expect((await wait)?.result).toBe(0);
  }

  /** A terminal record as stored, for writes behind the backend's back (no notification). */
  const rawRecord = (taskId: string, result: JsonValue) => JSON.stringify({ state: "SUCCESS", taskId, result });

  it("stores one JSON key per task, state first, with the result TTL", async () => {
    const s = await setup();
    const backend = await s.open();
    const id = uniqueName("task-");
    await backend.setState(id, "STARTED", { taskName: "t" });
    await backend.storeResult(success(id, 7));
    const keys = await keysUnder(s.raw, s.prefix);
    expect(keys).toEqual([`${s.prefix}:result:${id}`]);
    const text = await s.raw.get(`${s.prefix}:result:${id}`);
    expect(text?.startsWith('{"state":"SUCCESS"')).toBe(true);
    const ttl = await s.raw.ttl(`${s.prefix}:result:${id}`);
    expect(ttl).toBeGreaterThan(3500);
    expect(ttl).toBeLessThanOrEqual(3600);
  });

  it("keeps records forever with resultTtl 0 (non-terminal and terminal writes alike)", async () => {
    const s = await setup();
    const backend = await s.open(0);
    const [started, done] = [uniqueName("task-"), uniqueName("task-")];
    await backend.setState(started, "STARTED", { taskName: "t" });
    await backend.setState(done, "STARTED", { taskName: "t" });
    await backend.storeResult(success(done, 7));
    expect(await s.raw.ttl(`${s.prefix}:result:${started}`)).toBe(-1); // exists, no expiry
    expect(await s.raw.ttl(`${s.prefix}:result:${done}`)).toBe(-1);
    expect((await backend.getResult(done))?.result).toBe(7);
  });

  it("wakes waiters by pub/sub (no polling) through one shared subscription", async () => {
    const s = await setup();
    const waiting = await s.open();
    const writer = await s.open();
    const ids = Array.from({ length: 50 }, () => uniqueName("task-"));
    const waits = ids.map((id) => waiting.waitForResult(id, { timeoutMs: 10_000, pollIntervalMs: 60_000 }));
    await new Promise((resolve) => setTimeout(resolve, 200));
    const [, subscribers] = (await s.raw.call("PUBSUB", "NUMSUB", s.channel)) as [string, number];
    expect(subscribers).toBe(1);
    const started = Date.now();
    await Promise.all(ids.map((id, i) => writer.storeResult(success(id, i))));
    const records = await Promise.all(waits);
    // polls are 60 s apart and the waits give up after 10 s: only the push delivers them
    expect(Date.now() - started).toBeLessThan(8000);
    expect(records.map((r) => r?.result)).toEqual(ids.map((_, i) => i));
  });

  it("a stored value that is not the task's record fails getResult and waitForResult at once, naming its key", async () => {
    const s = await setup();
    const backend = await s.open();
    const cases: Array<[string, string]> = [
      [uniqueName("task-"), '{"state":"SUCCESS","taskId":"cut short'],
      [uniqueName("task-"), '{"state":"DONE","taskId":"x"}'],
      [uniqueName("task-"), JSON.stringify(success("another-task", 1))],
    ];
    for (const [id, text] of cases) {
      const key = backend.resultKey(id);
      await s.raw.set(key, text);
      const message = `the stored result at ${key} cannot be read`;
      await expect(backend.getResult(id)).rejects.toThrow(message);
      const started = Date.now();
      await expect(backend.waitForResult(id, { timeoutMs: 30_000, pollIntervalMs: 60_000 })).rejects.toThrow(message);
      expect(Date.now() - started).toBeLessThan(10_000); // at its first read, not at the timeout
    }
  });

  it("a result key of another Redis type fails getResult, waitForResult and get() at once, naming key and type", async () => {
    const s = await setup();
    const backend = await s.open();
    const id = uniqueName("task-");
    const key = backend.resultKey(id);
    await s.raw.hset(key, "a", "b");
    const message = `the stored result at ${key} cannot be read: it holds a Redis hash, not a string`;
    const read = backend.getResult(id);
    await expect(read).rejects.toThrow(message);
    await expect(read).rejects.not.toBeInstanceOf(BackendConnectionError); // the connection is fine
    // MGET reads such a key as missing: without the type check the wait would last its timeout
    await expect(backend.waitForResult(id, { timeoutMs: 600_000, pollIntervalMs: 60_000 })).rejects.toThrow(message);
    await expect(new AsyncResult(id, backend).get({ timeout: 600 })).rejects.toThrow(message);
    // a missing key next to it still just waits (and times out)
    const missing = uniqueName("task-");
    await expect(backend.waitForResult(missing, { timeoutMs: 50, pollIntervalMs: 60_000 })).resolves.toBeNull();
  });

  it("a poll meeting records written since its MGET reads them again, not one TYPE per absent key", async () => {
    const s = await setup();
    const client = new Redis(SERVICES.redis);
    cleanups.push(async () => void client.disconnect());
    const commands: string[] = [];
    const ids = Array.from({ length: 50 }, () => uniqueName("task-"));
    let wrote = false;
    const call = client.call.bind(client) as (...args: Array<string | number | Buffer>) => Promise<unknown>;
    // a worker that writes a record between the poll's MGET and its check of the absent keys
    Object.assign(client, {
      call: async (...args: Array<string | number | Buffer>) => {
        commands.push(String(args[0]));
        const reply = await call(...args);
        if (args[0] === "MGET" && !wrote) {
          wrote = true;
          await s.raw.set(`${s.prefix}:result:${ids[0]}`, rawRecord(ids[0] as string, 1));
        }
        return reply;
      },
    });
    const backend = new RedisBackend({ client, keyPrefix: s.prefix, env: {}, logger: silentLogger });
    await backend.connect();
    cleanups.push(() => backend.disconnect());
    const waits = ids.map((id) => backend.waitForResult(id, { timeoutMs: 10_000, pollIntervalMs: 60_000 }));
    expect(await waits[0]).toMatchObject({ state: "SUCCESS", result: 1 }); // read by the second MGET
    expect(commands.filter((c) => c === "TYPE")).toEqual([]); // before: 49
    await backend.disconnect();
    expect(await Promise.all(waits.slice(1))).toEqual(ids.slice(1).map(() => null));
  });

  it("a get() whose short timeout ends before its first read's reply still returns a stored result", async () => {
    const s = await setup();
    const writer = await s.open();
    const reader = await s.open(); // has not subscribed yet: its first wait subscribes first
    const id = uniqueName("task-");
    await writer.storeResult(success(id, "ready"));
    expect(await new AsyncResult(id, reader).get({ timeout: "1ms" })).toBe("ready");
    await expect(new AsyncResult(uniqueName("task-"), reader).get({ timeout: "1ms" })).rejects.toBeInstanceOf(
      TimeoutError,
    );
  });

  it("a process whose app disconnects while a get() waits (its subscriber still opening) exits at once", async () => {
    const prefix = testPrefix();
    cleanups.push(() => deletePrefix(prefix));
    // Nothing may hold the process open after disconnect(): an unref'd timer prints what does.
    const script = `
      import { Chicory } from ${JSON.stringify(new URL("../../../src/index.ts", import.meta.url).href)};
      import { RedisBroker } from ${JSON.stringify(new URL("../../../src/brokers/redis/index.ts", import.meta.url).href)};
      import { RedisBackend } from ${JSON.stringify(new URL("../../../src/backends/redis/index.ts", import.meta.url).href)};
      const url = ${JSON.stringify(SERVICES.redis)};
      const app = new Chicory({
        broker: new RedisBroker({ url, keyPrefix: ${JSON.stringify(prefix)}, env: {} }),
        backend: new RedisBackend({ url, keyPrefix: ${JSON.stringify(prefix)}, env: {} }),
      });
      const t = app.task({ name: "t", queue: "nobody" }, async (x) => x);
      const r = await t.delay(1);
      const waited = r.get({ timeout: 20 }).then(() => "resolved", (e) => e.name);
      await app.disconnect();
      console.log(await waited);
      setTimeout(() => console.log("alive", JSON.stringify(process.getActiveResourcesInfo())), 500).unref();
    `;
    const { stdout } = await run(process.execPath, ["--import", tsx, "--input-type=module", "-e", script], {
      timeout: 30_000,
    });
    expect(stdout.trim()).toBe("TimeoutError"); // before: "alive" with a 2 s ioredis timer
  });

  it("a record kept from its notification is not handed out once its TTL made it expire in Redis", async () => {
    const s = await setup();
    const waiting = await s.open("1s");
    const writer = await s.open("1s");
    await subscribed(waiting, writer);
    const id = uniqueName("task-");
    waiting.expectResult(id); // as delay() does: its notification is kept until a wait comes
    await writer.storeResult(success(id, "short-lived"));
    await eventually(async () => expect(await s.raw.exists(waiting.resultKey(id))).toBe(0), 5000);
    // As Redis says: expired, unknown (it was handed out from memory for 10 s)
    expect(await waiting.waitForResult(id, { timeoutMs: 200 })).toBeNull();
  });

  it("a get() cut short by the backend's disconnect says so, not that its timeout passed", async () => {
    const s = await setup();
    const backend = await s.open();
    const started = Date.now();
    const pending = new AsyncResult(uniqueName("task-"), backend).get({ timeout: 30 });
    const rejected = expect(pending).rejects.toThrow(
      /the wait ended before a result came \(the backend disconnected\)/,
    );
    await backend.disconnect();
    await rejected;
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it("a result nested as deep as the worker allows is stored, announced and read back", async () => {
    const s = await setup();
    const waiting = await s.open();
    const writer = await s.open();
    let deep: JsonValue = 1;
    for (let i = 0; i < 64; i++) deep = { a: deep };
    expect(findNonJson(deep)).toBeNull(); // the worker accepts it as a result
    const [deepId, otherId] = [uniqueName("task-"), uniqueName("task-")];
    const waits = [deepId, otherId].map((id) =>
      waiting.waitForResult(id, { timeoutMs: 10_000, pollIntervalMs: 60_000 }),
    );
    // one turn: one notification carries both records
    await Promise.all([writer.storeResult(success(deepId, deep)), writer.storeResult(success(otherId, 2))]);
    const [deepRecord, other] = await Promise.all(waits);
    expect(deepRecord?.result).toEqual(deep);
    expect(other?.result).toBe(2);
    expect((await writer.getResult(deepId))?.result).toEqual(deep);
  });

  it("a waiter never takes a record announced by an app on another database of the server", async () => {
    const s = await setup();
    const url = new URL(SERVICES.redis);
    const otherDb = (Number(url.pathname.slice(1) || 0) + 1) % 16;
    url.pathname = `/${otherDb}`;
    const elsewhere = new RedisBackend({ url: url.href, keyPrefix: s.prefix, env: {} });
    cleanups.push(async () => {
      await elsewhere.disconnect();
      await deletePrefix(s.prefix, url.href);
    });
    await elsewhere.connect();
    expect(elsewhere.doneChannel).not.toBe(s.channel);
    const waiting = await s.open();
    const writer = await s.open();
    const id = uniqueName("job-"); // a caller-chosen id, used by both apps
    const wait = waiting.waitForResult(id, { timeoutMs: 10_000, pollIntervalMs: 60_000 });
    await eventually(async () => {
      const [, subscribers] = (await s.raw.call("PUBSUB", "NUMSUB", s.channel)) as [string, number];
      if (Number(subscribers) < 1) throw new Error("not subscribed yet");
    }, 5000);
    await elsewhere.storeResult(success(id, "other database"));
    await writer.storeResult(success(id, "this database"));
    expect((await wait)?.result).toBe("this database");
  });

  it("announces the results finished in one turn with one PUBLISH (a JSON array of their records)", async () => {
    const s = await setup();
    const waiting = await s.open();
    const writer = await s.open();
    const { sub, messages } = await listen(s.channel);
    // An id that looks like a batch is still delivered as itself.
    const ids = [uniqueName("task-"), '["odd id"]', uniqueName("task-")];
    const waits = ids.map((id) => waiting.waitForResult(id, { timeoutMs: 10_000, pollIntervalMs: 60_000 }));
    await Promise.all(ids.map((id, i) => writer.storeResult(success(id, i))));
    expect((await Promise.all(waits)).map((r) => r?.result)).toEqual([0, 1, 2]);
    const alone = uniqueName("task-");
    const wait = waiting.waitForResult(alone, { timeoutMs: 10_000, pollIntervalMs: 60_000 });
    await writer.storeResult(success(alone, 3));
    expect((await wait)?.result).toBe(3);
    await untilCount(sub, messages, 2);
    sub.disconnect();
    const batches = messages.map((m) => JSON.parse(m) as Array<{ taskId: string; state: string; result: number }>);
    expect(batches.map((batch) => batch.map((r) => r.taskId))).toEqual([ids, [alone]]);
    expect(batches[0]?.map((r) => [r.state, r.result])).toEqual([
      ["SUCCESS", 0],
      ["SUCCESS", 1],
      ["SUCCESS", 2],
    ]);
  });

  it("writes more terminal records than one script call takes, all in the same turn", async () => {
    const s = await setup();
    const writer = await s.open();
    const ids = Array.from({ length: 1200 }, () => uniqueName("task-"));
    await Promise.all(ids.map((id, i) => writer.storeResult(success(id, i))));
    const stored = (await s.raw.call("MGET", ...ids.map((id) => writer.resultKey(id)))) as Array<string | null>;
    expect(stored.map((json) => (json === null ? null : (JSON.parse(json) as { result: number }).result))).toEqual(
      ids.map((_, i) => i),
    );
  });

  it("a process that only publishes (no wait) opens no subscriber", async () => {
    const s = await setup();
    const producer = await s.open();
    const id = uniqueName("task-");
    producer.expectResult(id);
    await producer.storeResult(success(id, 1));
    const [, subscribers] = (await s.raw.call("PUBSUB", "NUMSUB", s.channel)) as [string, number];
    expect(subscribers).toBe(0);
  });

  /**
   * A record of `early` (an id this process published) announced before any wait for it, so
   * kept; a later `marker`'s wait tells that the notification was handled. `beforeWrites` runs
   * just before the records are written.
   */
  async function keptEarlyRecord(
    s: Awaited<ReturnType<typeof setup>>,
    beforeWrites = () => {},
    ttl?: Parameters<typeof s.open>[0],
  ) {
    // The first wait subscribes (and times out: nothing is stored under that id).
    const { waiting, writer } = await waiterAndWriter(s, ttl);
    const early = uniqueName("task-");
    const marker = uniqueName("task-");
    waiting.expectResult(early);
    // `marker` is announced after `early` on the same channel: once its wait resolves, the
    // notification of `early` has been handled.
    const markerWait = waiting.waitForResult(marker, { timeoutMs: 10_000, pollIntervalMs: 60_000 });
    beforeWrites();
    await writer.storeResult(success(early, "kept"));
    await writer.storeResult(success(marker, 1));
    expect((await markerWait)?.result).toBe(1);
    return { waiting, writer, early };
  }

  it("keeps the record of a task this process published when it finishes before the wait", async () => {
    const s = await setup();
    const { waiting, writer, early } = await keptEarlyRecord(s);
    // The stored record is gone, so only the kept copy can answer.
    await s.raw.call("DEL", writer.resultKey(early));
    expect((await waiting.waitForResult(early, { timeoutMs: 10_000 }))?.result).toBe("kept");
    // Taken by that wait: a second wait reads Redis (nothing there any more).
    expect(await waiting.waitForResult(early, { timeoutMs: 200, pollIntervalMs: 50 })).toBeNull();
  });

  it("drops a kept record when it expires, even with no notification after it (an idle producer)", async () => {
    const s = await setup();
    let kept: Awaited<ReturnType<typeof keptEarlyRecord>>;
    try {
      // the sweep's timer and clock are the test's from the writes on
      kept = await keptEarlyRecord(s, () =>
        vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "performance"] }),
      );
      await vi.advanceTimersByTimeAsync(10_500); // past the 10 s a record is kept
    } finally {
      vi.useRealTimers();
    }
    await s.raw.call("DEL", kept.writer.resultKey(kept.early));
    // before, the record stayed kept until the next notification: this wait got it
    expect(await kept.waiting.waitForResult(kept.early, { timeoutMs: 200, pollIntervalMs: 50 })).toBeNull();
  });

  it("reads a kept record from Redis once it is older than half the result TTL (its notification may have come late)", async () => {
    const s = await setup();
    try {
      // the hub's clock is the test's from the writes on (timers stay real)
      const kept = await keptEarlyRecord(s, () => vi.useFakeTimers({ toFake: ["performance"] }), "1s");
      await s.raw.call("DEL", kept.writer.resultKey(kept.early));
      vi.advanceTimersByTime(501); // the record lives 1 s in Redis; kept for 500 ms
      // handed out from memory before: Redis may have expired it already
      expect(await kept.waiting.waitForResult(kept.early, { timeoutMs: 200, pollIntervalMs: 50 })).toBeNull();
    } finally {
      vi.useRealTimers();
    }
  });

  it("ages a kept record by the monotonic clock: a wall clock stepped back does not keep it past Redis's TTL", async () => {
    const s = await setup();
    try {
      const kept = await keptEarlyRecord(
        s,
        () => vi.useFakeTimers({ toFake: ["Date"], now: Date.now(), shouldAdvanceTime: true }),
        "1s",
      );
      vi.setSystemTime(Date.now() - 60_000); // (an NTP step, a VM resumed)
      // the record lives 1 s in Redis, and is kept for 500 ms
      await eventually(async () => (await s.raw.exists(kept.writer.resultKey(kept.early))) === 0, 5000);
      // before, aged by the wall clock, the kept copy was handed out after Redis expired it
      expect(await kept.waiting.waitForResult(kept.early, { timeoutMs: 200, pollIntervalMs: 50 })).toBeNull();
    } finally {
      vi.useRealTimers();
    }
  });

  it("drops the kept records when the subscriber drops (a deletion announced meanwhile would be missed)", async () => {
    const s = await setup();
    const { waiting, writer, early } = await keptEarlyRecord(s);
    const name = `chicory-results-${s.channel}`.replace(/[^A-Za-z0-9._:-]/g, "_");
    const subscriberId = async () => {
      const clients = String(await s.raw.call("CLIENT", "LIST", "TYPE", "pubsub")).split("\n");
      return /id=(\d+)/.exec(clients.find((line) => line.includes(` name=${name} `)) ?? "")?.[1];
    };
    const before = await subscriberId();
    expect(before).toBeDefined();
    await s.raw.call("CLIENT", "KILL", "ID", before ?? "0");
    // Deleted while the subscriber is down (here behind the backend's back: no announcement)...
    await s.raw.call("DEL", writer.resultKey(early));
    // ...and the subscriber back (ioredis reconnects at once)
    await eventually(async () => {
      const now = await subscriberId();
      return now !== undefined && now !== before;
    }, 5000);
    // before, the kept copy answered this wait
    expect(await waiting.waitForResult(early, { timeoutMs: 200, pollIntervalMs: 50 })).toBeNull();
  });

  it.each([
    ["deleteResultIf (a DLQ replay)", "deleteResultIf"],
    ["deleteResult (forget())", "deleteResult"],
  ])("drops a kept record that another process deleted with %s", async (_name, how) => {
    const s = await setup();
    const { waiting, writer } = await waiterAndWriter(s);
    const replayed = uniqueName("task-");
    const marker = uniqueName("task-");
    waiting.expectResult(replayed);
    let markerWait = waiting.waitForResult(marker, { timeoutMs: 10_000, pollIntervalMs: 60_000 });
    const failed: TaskRecord = {
      taskId: replayed,
      state: "DEAD_LETTERED",
      error: { type: "Error", message: "first run 🎉".slice(0, 11) }, // ends with an unpaired surrogate
      updatedAt: new Date().toISOString(),
    };
    await writer.storeResult(failed);
    await writer.storeResult(success(marker, 1));
    expect((await markerWait)?.result).toBe(1); // the failure is kept for a wait to come
    // Another process replays the task: the record is deleted and the deletion announced. A
    // second marker, announced after it (its wait reads nothing, it expects the notification).
    const marker2 = uniqueName("task-");
    waiting.expectResult(marker2);
    markerWait = waiting.waitForResult(marker2, { timeoutMs: 10_000, pollIntervalMs: 60_000 });
    const seen = await writer.getResult(replayed);
    expect(seen?.state).toBe("DEAD_LETTERED");
    if (how === "deleteResult") await writer.deleteResult(replayed);
    else expect(await writer.deleteResultIf(replayed, seen as TaskRecord)).toBe(true);
    await writer.storeResult(success(marker2, 2));
    expect((await markerWait)?.result).toBe(2);
    // The kept failure is gone: the wait goes on until the new run's record.
    const wait = waiting.waitForResult(replayed, { timeoutMs: 10_000, pollIntervalMs: 60_000 });
    await writer.storeResult(success(replayed, "second run"));
    expect((await wait)?.result).toBe("second run");
  });

  it("a wait for a task published here while subscribed reads nothing before its notification", async () => {
    const s = await setup();
    const { waiting, writer } = await waiterAndWriter(s);
    const published = uniqueName("task-");
    const other = uniqueName("task-");
    waiting.expectResult(published);
    // Records written behind the backend's back: no notification for either.
    for (const id of [published, other]) {
      await s.raw.call("SET", writer.resultKey(id), rawRecord(id, "raw"));
    }
    // Any other id is read once at once...
    expect((await waiting.waitForResult(other, { timeoutMs: 10_000, pollIntervalMs: 60_000 }))?.result).toBe("raw");
    // ...but the published one waits for its notification (its record cannot exist yet).
    const wait = waiting.waitForResult(published, { timeoutMs: 10_000, pollIntervalMs: 60_000 });
    const early = await Promise.race([wait, waiting.waitForResult(other, { timeoutMs: 300 }).then(() => "nothing")]);
    expect(early).toBe("nothing");
    await writer.storeResult(success(published, "announced"));
    expect((await wait)?.result).toBe("announced");
  });

  it("forgets the published ids when the subscriber drops: their waits read the record", async () => {
    const s = await setup();
    const { waiting, writer } = await waiterAndWriter(s);
    const id = uniqueName("task-");
    waiting.expectResult(id);
    const name = `chicory-results-${s.channel}`.replace(/[^A-Za-z0-9._:-]/g, "_");
    const clients = String(await s.raw.call("CLIENT", "LIST", "TYPE", "pubsub")).split("\n");
    const subscriber = clients.find((line) => line.includes(` name=${name} `));
    expect(subscriber).toBeDefined();
    await s.raw.call("CLIENT", "KILL", "ID", /id=(\d+)/.exec(subscriber ?? "")?.[1] ?? "0");
    // Stored while the subscriber is down: its notification is lost.
    await s.raw.call("SET", writer.resultKey(id), rawRecord(id, 9));
    // Back: subscribed again (ioredis reconnects at once).
    for (let i = 0; i < 200; i++) {
      const [, n] = (await s.raw.call("PUBSUB", "NUMSUB", s.channel)) as [string, number];
      if (n === 1) break;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect((await waiting.waitForResult(id, { timeoutMs: 10_000, pollIntervalMs: 60_000 }))?.result).toBe(9);
  });

  it("announces a record too large to inline by its id, and still takes a plain id (older workers)", async () => {
    const s = await setup();
    const waiting = await s.open();
    const writer = await s.open();
    const { sub, messages } = await listen(s.channel);
    const big = uniqueName("task-");
    const small = uniqueName("task-");
    const large = "x".repeat(5000);
    const waits = [big, small].map((id) => waiting.waitForResult(id, { timeoutMs: 10_000, pollIntervalMs: 60_000 }));
    await Promise.all([writer.storeResult(success(big, large)), writer.storeResult(success(small, 1))]);
    expect((await Promise.all(waits)).map((r) => r?.result)).toEqual([large, 1]);
    await untilCount(sub, messages, 1);
    const [batch] = messages.map((m) => JSON.parse(m) as unknown[]);
    expect(batch?.[0]).toBe(big);
    expect(batch?.[1]).toMatchObject({ taskId: small, state: "SUCCESS", result: 1 });
    // A plain id on the channel (the format of older workers) is read and resolves its waiter.
    const old = uniqueName("task-");
    const wait = waiting.waitForResult(old, { timeoutMs: 10_000, pollIntervalMs: 60_000 });
    await s.raw.call("SET", writer.resultKey(old), JSON.stringify({ state: "SUCCESS", taskId: old, result: 7 }));
    await s.raw.call("PUBLISH", s.channel, old);
    expect((await wait)?.result).toBe(7);
    sub.disconnect();
  });

  it("a late non-terminal write is refused atomically and publishes nothing", async () => {
    const s = await setup();
    const backend = await s.open();
    const id = uniqueName("task-");
    await backend.storeResult(success(id, 1));
    const { sub, messages } = await listen(s.channel);
    await backend.setState(id, "STARTED");
    await backend.setState(id, "RETRY", { error: { type: "Error", message: "late" }, retries: 1 });
    await backend.storeResult({ ...success(id, 2), state: "FAILURE", error: { type: "Error", message: "dup" } });
    await new Promise((resolve) => setTimeout(resolve, 100));
    sub.disconnect();
    expect((await backend.getResult(id))?.state).toBe("FAILURE");
    expect(
      messages.map((m) => (JSON.parse(m) as Array<{ taskId: string; state: string }>).map((r) => [r.taskId, r.state])),
    ).toEqual([[[id, "FAILURE"]]]);
  });

  it("removes any number of stale workers, with their heartbeat keys, and keeps a fresh one", async () => {
    const s = await setup();
    const backend = await s.open();
    const stale = Array.from({ length: 9000 }, (_, i) => `stale-${i}`);
    const longAgo = Date.now() - 3_600_000;
    for (let i = 0; i < stale.length; i += 1000) {
      const batch = stale.slice(i, i + 1000);
      await s.raw.zadd(`${s.prefix}:workers`, ...batch.flatMap((id) => [longAgo, id]));
      await s.raw.mset(...batch.flatMap((id) => [`${s.prefix}:heartbeat:${id}`, "{}"]));
    }
    await s.raw.zadd(`${s.prefix}:workers`, Date.now(), "fresh");
    await s.raw.set(`${s.prefix}:heartbeat:fresh`, "{}");
    expect(await backend.cleanupStaleClients(60)).toBe(9000);
    expect(await s.raw.zrange(`${s.prefix}:workers`, "0", "-1")).toEqual(["fresh"]);
    expect(await keysUnder(s.raw, `${s.prefix}:heartbeat`)).toEqual([`${s.prefix}:heartbeat:fresh`]);
  });

  it("a heartbeat forgets workers whose heartbeat expired (short-lived workers leave no member behind)", async () => {
    const s = await setup();
    const backend = await s.open();
    const workers = `${s.prefix}:workers`;
    const longAgo = Date.now() - 600_000;
    // nine workers that stopped long ago (keys expired), and one still beating at a long interval
    // (a heartbeat looks at the ten silent longest)
    const gone = Array.from({ length: 9 }, (_, i) => `gone-${i}`);
    await s.raw.zadd(workers, ...gone.flatMap((id) => [longAgo, id]), longAgo - 1, "slow");
    await s.raw.set(`${s.prefix}:heartbeat:slow`, "{}", "EX", 60);
    await backend.storeHeartbeat(idleWorkerStats("live"), 30);
    // before, the nine stayed until a worker's cleanup round (none runs in a fleet that lives shorter)
    expect((await s.raw.zrange(workers, "0", "-1")).sort()).toEqual(["live", "slow"]);
  });

  it("keeps heartbeats in P:heartbeat:WID with a TTL and P:workers scored by Redis time", async () => {
    const s = await setup();
    const backend = await s.open();
    const workerId = `host-1-${uniqueName("")}`;
    await backend.storeHeartbeat(idleWorkerStats(workerId), 30);
    const ttl = await s.raw.ttl(`${s.prefix}:heartbeat:${workerId}`);
    expect(ttl).toBeGreaterThan(25);
    const [seconds] = await s.raw.time();
    const score = Number(await s.raw.zscore(`${s.prefix}:workers`, workerId));
    expect(Math.abs(score - Number(seconds) * 1000)).toBeLessThan(5000);
    expect((await backend.getActiveWorkers()).map((w) => w.workerId)).toEqual([workerId]);
  });

  it("a subscription the server refuses (ACL without channel rights) leaves no connection behind", async () => {
    const s = await setup();
    // Every key and command, no pub/sub channel: SUBSCRIBE answers NOPERM.
    const { user, url } = await aclUser(cleanups, "~*", "resetchannels", "+@all");
    const errors: string[] = [];
    const backend = new RedisBackend({
      url,
      keyPrefix: s.prefix,
      env: {},
      logger: { ...silentLogger, warn: (fields: unknown) => void errors.push(JSON.stringify(fields)) },
    });
    await backend.connect();
    cleanups.push(() => backend.disconnect());
    const connectionsOf = async () =>
      String(await s.raw.call("CLIENT", "LIST"))
        .split("\n")
        .filter((line) => line.includes(` user=${user} `)).length;
    const before = await connectionsOf();
    // Each wait tries to subscribe again (and falls back to polling): none keeps its connection.
    for (let i = 0; i < 5; i++) expect(await backend.waitForResult(uniqueName("t-"), { timeoutMs: 1 })).toBeNull();
    await eventually(async () => expect(errors.join("\n")).toContain("NOPERM"));
    await eventually(async () => expect(await connectionsOf()).toBe(before));
  });
  it("a record written in pieces whose staging key vanishes midway (evicted, lost in a restart) fails and leaves no staging key behind; written again, it is stored", async () => {
    const { prefix, raw } = await setup();
    // The backend's own client, whose second APPEND is preceded by a DEL of its key (as an
    // eviction between two pieces would): that APPEND makes the key again, without its TTL
    // (before: left behind for good, the record's size in Redis's memory).
    const client = rawRedis();
    const call = client.call.bind(client) as (...args: unknown[]) => Promise<unknown>;
    let appends = 0;
    (client as unknown as { call: (...args: unknown[]) => Promise<unknown> }).call = (...args) => {
      if (args[0] === "APPEND" && ++appends === 2) void call("DEL", args[1]);
      return call(...args);
    };
    const backend = new RedisBackend({ client, keyPrefix: prefix, env: {} });
    cleanups.push(async () => {
      await backend.disconnect();
      client.disconnect();
    });
    await backend.connect();
    const record = success(uniqueName("big-"), "y".repeat(3 * 1024 * 1024));
    await expect(backend.storeResult(record)).rejects.toThrow(/the record written in pieces is incomplete/);
    expect(await raw.keys(`${prefix}:pieces:*`)).toEqual([]);
    expect(await backend.getResult(record.taskId)).toBeNull();
    await backend.storeResult(record); // written anew (the patch acted once)
    expect((await backend.getResult(record.taskId))?.result).toBe(record.result);
    expect(await raw.keys(`${prefix}:pieces:*`)).toEqual([]);
  });
});

/**
 * Hostile input through a real Redis (RELIABILITY §2.10 A1, A2, A5, A7, A9): raw entries
 * written straight into the work stream with XADD, hostile queue names and Lua-looking data.
 * Runs on database 15 of the test Redis with a random key prefix, so "no key outside the
 * prefix touched" and DBSIZE can be checked exactly; keys are deleted afterwards.
 */
import { Redis } from "ioredis";
import { afterEach, describe, expect, it } from "vitest";
import { RedisBackend } from "../../src/backends/redis/index.js";
import { backendScriptSources } from "../../src/backends/redis/redis-backend-scripts.js";
import { RedisBroker } from "../../src/brokers/redis/index.js";
import { brokerScriptSources } from "../../src/brokers/redis/redis-scripts.js";
import { MessageCodec } from "../../src/core/message.js";
import { Chicory, MemoryBackend, ValidationError, Worker } from "../../src/index.js";
import { encodeTask } from "../contract/contract-helpers.js";
import { SERVICES, skipUnless, uniqueName } from "../helpers/services.js";
import { canary, eventually, hostileBodies, recordingLogger } from "./security-helpers.js";

/** Passes when `fn` throws or rejects with a ValidationError (sync or async API). */
async function refuses(fn: () => unknown, label: string): Promise<void> {
  let error: unknown;
  try {
    await fn();
  } catch (e) {
    error = e;
  }
  expect(error, label).toBeInstanceOf(ValidationError);
}

const skip = await skipUnless("redis");
const url = (() => {
  const u = new URL(SERVICES.redis);
  u.pathname = "/15";
  return u.toString();
})();

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()?.();
});

async function keysMatching(redis: Redis, pattern: string): Promise<string[]> {
  const out: string[] = [];
  let cursor = "0";
  do {
    const [next, keys] = await redis.scan(cursor, "MATCH", pattern, "COUNT", 1000);
    cursor = next;
    out.push(...keys);
  } while (cursor !== "0");
  return out.sort();
}

async function cachedScripts(redis: Redis): Promise<number> {
  const info = await redis.info("memory");
  return Number(/number_of_cached_scripts:(\d+)/.exec(info)?.[1] ?? Number.NaN);
}

async function setup(options: { redisBackend?: boolean } = {}) {
  const prefix = uniqueName("chsec");
  const raw = new Redis(url, { maxRetriesPerRequest: null });
  cleanups.push(async () => {
    const keys = await keysMatching(raw, `${prefix}*`);
    for (let i = 0; i < keys.length; i += 200) await raw.del(...keys.slice(i, i + 200));
    raw.disconnect();
  });
  const broker = new RedisBroker({ url, keyPrefix: prefix, claimMinIdleMs: 2000, blockMs: 200, env: {} });
  const backend = options.redisBackend
    ? new RedisBackend({ url, keyPrefix: `${prefix}-r`, env: {} })
    : new MemoryBackend();
  const app = new Chicory({ broker, backend, config: { env: {} } });
  const ran: unknown[][] = [];
  const probe = app.task({ name: "probe" }, async (...args: unknown[]) => {
    ran.push(args);
    return args;
  });
  const worker = new Worker(app, { concurrency: 4, useDeadLetterQueue: true, logger: recordingLogger() });
  await worker.start();
  cleanups.push(() => worker.stop(2));
  const stream = `${prefix}:stream:{default}`;
  // the consumer group exists once the worker fetched; entries added after that are delivered
  await eventually(
    async () => (await raw.exists(stream)) === 1 && ((await raw.xinfo("GROUPS", stream)) as unknown[]).length > 0,
  );
  const stillServes = async () => {
    const r = await probe.delay("still");
    expect(await r.get({ timeout: 5 })).toEqual(["still"]);
  };
  return { prefix, raw, broker, backend, app, probe, ran, worker, stream, stillServes };
}

describe.skipIf(skip)("redis: hostile raw stream entries", () => {
  it("A1/A2: XADD of pickles, YAML tags, $type/__class__, missing data field: DLQ with reason, never run", async () => {
    const s = await setup();
    const c = canary();
    cleanups.push(() => c.remove());
    const bodies = hostileBodies(c.path, "r1");
    for (const [label, body] of Object.entries(bodies)) await s.raw.xadd(s.stream, "*", "data", body, "id", label);
    await s.raw.xadd(s.stream, "*", "nodata", "x");
    await s.raw.xadd(s.stream, "*", "data", Buffer.from([0xff, 0xfe, 0x00, 0xc3, 0x28]));
    const asData = Object.keys(bodies).filter((label) => label.endsWith("InArgs")).length;
    const rejected = Object.keys(bodies).length - asData + 2;
    await eventually(async () => (await s.broker.getDlqCount("default")) === rejected, 10_000, "all dead-lettered");
    await eventually(() => s.ran.length === asData);
    const errors = (await s.broker.getDlqMessages("default", 100)).map((m) => m.error);
    for (const e of errors) expect(e).toMatch(/decode_error|schema_error|TaskNotFoundError/);
    expect(errors.filter((e) => e.includes("decode_error")).length).toBeGreaterThanOrEqual(6);
    expect(c.fired()).toBe(false);
    expect(await s.broker.getPendingCount("default")).toBe(0);
    await s.stillServes();
  });

  it("A1: an entry with two `data` fields (two runnable messages) is dead-lettered, neither run", async () => {
    const s = await setup();
    const codec = new MessageCodec();
    const first = encodeTask(codec, { name: "probe", args: ["first"] });
    const second = encodeTask(codec, { name: "probe", args: ["second"] });
    await s.raw.xadd(s.stream, "*", "data", first.body, "data", second.body);
    const entry = await eventually(async () => (await s.broker.getDlqMessages("default", 10))[0]);
    expect(entry?.error).toMatch(/decode_error: the stream entry has 2 `data` fields/);
    // both bodies kept, as a JSON array: no message, so a replay is refused
    expect(JSON.parse(entry?.body ?? "")).toEqual([first.body, second.body]);
    await expect(s.broker.replayFromDlq(entry?.messageId ?? "", "default")).rejects.toThrow(/cannot replay/);
    await s.stillServes();
    expect(s.ran).toEqual([["still"]]);
    expect(await s.broker.getPendingCount("default")).toBe(0);
  });

  it("P2: a message that parses but holds bytes that are not UTF-8 is dead-lettered as such, not run as altered text; one with U+FFFD of its own runs", async () => {
    const s = await setup({ redisBackend: true });
    const codec = new MessageCodec();
    const ownFffd = encodeTask(codec, { name: "probe", args: ["own \uFFFD"] });
    const bytes = (body: string, marker: string) => {
      const at = Buffer.from(body).indexOf(marker);
      return Buffer.concat([
        Buffer.from(body).subarray(0, at),
        Buffer.from([0xff, 0x80]),
        Buffer.from(body).subarray(at + marker.length),
      ]);
    };
    const inArgs = encodeTask(codec, { name: "probe", args: ["BAD"] });
    const inId = encodeTask(codec, { name: "probe", args: ["in id"] });
    await s.raw.xadd(s.stream, "*", "data", bytes(inArgs.body, "BAD"));
    await s.raw.xadd(s.stream, "*", "data", ownFffd.body);
    // the task id in both the body and the `id` field, as the broker writes it
    await s.raw.xadd(
      s.stream,
      "*",
      "data",
      bytes(inId.body, inId.id.slice(-4)),
      "id",
      bytes(inId.id, inId.id.slice(-4)),
    );
    await eventually(async () => (await s.broker.getDlqCount("default")) === 2, 10_000, "both dead-lettered");
    const errors = (await s.broker.getDlqMessages("default", 10)).map((m) => m.error);
    expect(errors).toEqual([
      expect.stringMatching(/decode_error: the stream entry's `data` field is not valid UTF-8/),
      expect.stringMatching(/decode_error: the stream entry's `(data|id)` field is not valid UTF-8/),
    ]);
    await eventually(() => s.ran.length === 1);
    expect(s.ran).toEqual([["own \uFFFD"]]);
    // a record for the message that ran, none under an altered id
    const records = await keysMatching(s.raw, `${s.prefix}-r:result:*`);
    expect(records).toContain(`${s.prefix}-r:result:${ownFffd.id}`);
    expect(records.filter((key) => key.includes("\uFFFD"))).toEqual([]);
    expect(await s.broker.getPendingCount("default")).toBe(0);
    await s.stillServes();
  });

  it("A5: a 64 MiB raw entry is rejected by length (too_large) with bounded worker memory; others continue", async () => {
    const s = await setup();
    // built inside Redis, so the test process never holds the payload
    const pieces = 64 * 104_857; // 10 bytes each: ~64 MiB of valid-looking JSON
    await s.raw.eval(
      `redis.call('XADD', KEYS[1], '*', 'data', '{"v":1,"id":"huge","name":"probe","args":[' .. string.rep('[1,2,3,4],', tonumber(ARGV[1])) .. '0]}')
       redis.call('XADD', KEYS[1], '*', 'data', string.rep('x', tonumber(ARGV[2])))
       return 1`,
      1,
      s.stream,
      pieces,
      1024 * 1024 + 1,
    );
    global.gc?.();
    const baseline = process.memoryUsage().rss;
    let peak = baseline;
    const sampler = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage().rss);
    }, 5);
    try {
      await eventually(async () => (await s.broker.getDlqCount("default")) === 2, 20_000, "oversize dead-lettered");
    } finally {
      clearInterval(sampler);
    }
    const errors = (await s.broker.getDlqMessages("default", 10)).map((m) => m.error);
    expect(errors.every((e) => e.includes("too_large"))).toBe(true);
    expect(s.ran.length).toBe(0);
    const growthMiB = (peak - baseline) / 1024 / 1024;
    console.info(`A5 redis 64 MiB entry: worker RSS growth ${growthMiB.toFixed(1)} MiB (entry 64 MiB, limit 1 MiB)`);
    // The entry itself must be read in full (Redis hands out whole entries): the reply buffer,
    // its string, and this test's own 64 MiB payload all count in this process, so the bound
    // is loose; that no JSON.parse runs on oversized bodies is asserted exactly in
    // hostile-worker.test.ts (A5).
    expect(growthMiB).toBeLessThan(8 * 64);
    await s.stillServes();
  }, 30_000);
});

const HOSTILE_QUEUES = [
  "*",
  "{x}",
  "a}b",
  "amq.x y",
  "q".repeat(129),
  "é".repeat(128), // 256 bytes
  "a\nb",
  "a\u0000b",
  "\u202eevil",
  "\"]] redis.call('FLUSHALL') --",
  "",
  "a b",
  "a/b",
  "a\\b",
  "a*b?",
];
const LUA = "\"]] redis.call('FLUSHALL') --";

describe.skipIf(skip)("redis: queue-name and Lua injection (A7, A9)", () => {
  it("every API boundary refuses hostile queue names with ValidationError; no key outside the prefix, scripts stable", async () => {
    const s = await setup({ redisBackend: true });
    await s.stillServes();
    // The script count is server-wide: on a fresh server, test files running meanwhile load
    // scripts of the package for the first time. With every one of them cached first, only a
    // new script body (say, Lua built from a hostile name) can change it.
    for (const source of [...brokerScriptSources(), ...backendScriptSources()]) await s.raw.script("LOAD", source);
    const sizeBefore = await s.raw.dbsize();
    const scriptsBefore = await cachedScripts(s.raw);
    const outsideBefore = (await keysMatching(s.raw, "*")).filter((k) => !k.startsWith(s.prefix));
    for (const q of HOSTILE_QUEUES) {
      const label = JSON.stringify(q.slice(0, 20));
      await refuses(() => s.probe.applyAsync([], { queue: q }), label);
      await refuses(() => s.app.task({ name: uniqueName("t"), queue: q }, async () => 1), label);
      await refuses(() => new Worker(s.app, { queue: q, logger: recordingLogger() }), label);
      await refuses(() => s.broker.publish(q, { id: "x", body: "{}" }), label);
      await refuses(() => s.broker.getDlqMessages(q), label);
      await refuses(() => s.broker.getDlqCount(q), label);
      await refuses(() => s.broker.purgeQueue(q), label);
      await refuses(() => s.broker.purgeDlq(q), label);
      await refuses(() => s.broker.getQueueSize(q), label);
      await refuses(() => s.broker.replayFromDlq("0-1", q), label);
      await refuses(() => s.broker.cleanupStaleClients(q, 60), label);
      await refuses(() => s.broker.consumer({ queues: [q], consumerId: "c" }), label);
    }
    // `:` and `.` are allowed by the name rule; they stay inside the prefix and the hash tag
    const colon = await s.probe.applyAsync(["colon"], { queue: "a:b" });
    expect(await s.raw.exists(`${s.prefix}:stream:{a:b}`)).toBe(1);
    await s.broker.purgeQueue("a:b");
    expect(colon.taskId).toBeTruthy();
    // Lua-looking data goes through ARGV only: as args, as a task id and as a task error
    const boom = s.app.task({ name: "boom" }, async (text: string) => {
      throw new Error(text);
    });
    const r1 = await s.probe.applyAsync([LUA, { [LUA]: LUA }], { taskId: `${LUA} *{x}` });
    expect(await r1.get({ timeout: 5 })).toEqual([LUA, { [LUA]: LUA }]);
    const r2 = await boom.delay(LUA);
    await expect(r2.get({ timeout: 5 })).rejects.toMatchObject({ remoteMessage: LUA });
    const outsideAfter = (await keysMatching(s.raw, "*")).filter((k) => !k.startsWith(s.prefix));
    expect(outsideAfter).toEqual(outsideBefore);
    const ours = (await keysMatching(s.raw, `${s.prefix}*`)).length;
    // DBSIZE changed only by keys under the prefix
    expect(await s.raw.dbsize()).toBe(outsideAfter.length + ours);
    expect(sizeBefore).toBeGreaterThanOrEqual(outsideBefore.length);
    expect(await cachedScripts(s.raw)).toBe(scriptsBefore);
    expect(await s.raw.get("__never__")).toBeNull();
    expect(s.worker.isRunning).toBe(true);
  });
});

/**
 * Load tests (RELIABILITY §3.7 L1/L3), the Redis side: PEL/XLEN/INFO readers, a sampler of
 * worker RSS and Redis state, memory statistics, and the backlog producer.
 */
import { setTimeout as sleepMs } from "node:timers/promises";
import type { Redis } from "ioredis";
import { Chicory } from "../../../src/index.js";
import { rssMiB } from "./load-workers.js";

/** XPENDING summary: the group's PEL size and the largest PEL of one consumer (zeros before the group exists). */
export async function pendingSummary(
  redis: Redis,
  stream: string,
  group: string,
): Promise<{ total: number; maxPerConsumer: number }> {
  try {
    const reply = (await redis.call("XPENDING", stream, group)) as [number, unknown, unknown, Array<[string, string]>];
    const perConsumer = (reply[3] ?? []).map(([, n]) => Number(n));
    return { total: Number(reply[0]), maxPerConsumer: Math.max(0, ...perConsumer) };
  } catch (error) {
    if (String(error).includes("NOGROUP")) return { total: 0, maxPerConsumer: 0 };
    throw error;
  }
}

/** XPENDING summary count (0 when the stream or group does not exist yet). */
export async function pendingCount(redis: Redis, stream: string, group: string): Promise<number> {
  return (await pendingSummary(redis, stream, group)).total;
}

/** A field of `INFO <section>` as a number. */
export async function infoNumber(redis: Redis, section: string, field: string): Promise<number> {
  const text = await redis.info(section);
  const m = new RegExp(`^${field}:(\\d+)`, "m").exec(text);
  if (!m) throw new Error(`INFO ${section} has no ${field}`);
  return Number(m[1]);
}

/** Every key matching `pattern` (SCAN; also reaps expired keys it meets). */
export async function scanKeys(redis: Redis, pattern: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor = "0";
  do {
    const [next, batch] = await redis.scan(cursor, "MATCH", pattern, "COUNT", 1000);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== "0");
  return keys.sort();
}

/** One sample of the run. */
export interface Sample {
  /** ms since the sampler started. */
  readonly t: number;
  /** RSS per worker (MiB), in worker order; null once exited. */
  readonly rss: Array<number | null>;
  readonly pel: number;
  /** The largest PEL of one consumer (= one worker process here). */
  readonly pelPerWorker: number;
  readonly xlen: number;
  /** Redis `connected_clients` (INFO clients). */
  readonly clients: number;
}

/**
 * Samples worker RSS and the stream's PEL and length (and Redis `connected_clients`) every
 * `everyMs` until stopped. `pids` may grow after `start()` (workers started later).
 */
export class Sampler {
  readonly samples: Sample[] = [];
  readonly #redis: Redis;
  readonly #stream: string;
  readonly #group: string;
  readonly #pids: number[];
  readonly #everyMs: number;
  #stopped = false;
  #loop: Promise<void> | null = null;
  #t0 = 0;

  constructor(redis: Redis, stream: string, group: string, pids: number[], everyMs: number) {
    this.#redis = redis;
    this.#stream = stream;
    this.#group = group;
    this.#pids = pids;
    this.#everyMs = everyMs;
  }

  start(): void {
    this.#t0 = Date.now();
    this.#loop = (async () => {
      while (!this.#stopped) {
        const at = Date.now();
        const rss = this.#pids.map(rssMiB);
        const [pending, xlen, clients] = await Promise.all([
          pendingSummary(this.#redis, this.#stream, this.#group),
          this.#redis.xlen(this.#stream),
          infoNumber(this.#redis, "clients", "connected_clients"),
        ]);
        const { total: pel, maxPerConsumer: pelPerWorker } = pending;
        this.samples.push({ t: at - this.#t0, rss, pel, pelPerWorker, xlen, clients });
        await sleepMs(Math.max(0, this.#everyMs - (Date.now() - at)));
      }
    })();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#loop;
  }

  /** Peak RSS of worker `i` (MiB). */
  peakRss(i: number): number {
    return Math.max(0, ...this.samples.map((s) => s.rss[i] ?? 0));
  }

  /** Peak PEL size. */
  get peakPel(): number {
    return Math.max(0, ...this.samples.map((s) => s.pel));
  }

  /** Peak PEL of one worker. */
  get peakPelPerWorker(): number {
    return Math.max(0, ...this.samples.map((s) => s.pelPerWorker));
  }
}

/** `MEMORY STATS` as a flat record of its numeric fields (`db.0.overhead.hashtable.main`, ...). */
export async function memoryStats(redis: Redis): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  const walk = (reply: unknown, path: string) => {
    if (!Array.isArray(reply)) return;
    for (let i = 0; i + 1 < reply.length; i += 2) {
      const key = path + String(reply[i]);
      const value = reply[i + 1];
      if (typeof value === "number") out[key] = value;
      else if (Array.isArray(value)) walk(value, `${key}.`);
    }
  };
  walk(await redis.call("MEMORY", "STATS"), "");
  return out;
}

/** The fields of `after` that differ from `before` by more than `minDelta`, as after − before. */
export function memoryDiff(
  before: Record<string, number>,
  after: Record<string, number>,
  minDelta = 1024,
): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [key, value] of Object.entries(after)) {
    const delta = value - (before[key] ?? 0);
    if (Math.abs(delta) >= minDelta && !key.includes("peak") && !key.includes("startup")) out[key] = delta;
  }
  return out;
}

/**
 * Enqueues `count` `tick(i)` jobs (i = first..first+count-1) under `prefix` with `send()`, in
 * windows of `window` concurrent sends (auto-pipelined XADDs). Resolves with the elapsed ms.
 */
export async function enqueueTicks(
  url: string,
  prefix: string,
  count: number,
  first = 0,
  window = 2000,
): Promise<number> {
  const producer = new Chicory({
    broker: url,
    backend: null,
    config: { env: { CHICORY_BROKER_REDIS_KEY_PREFIX: prefix } },
  });
  const tick = producer.task({ name: "tick", ignoreResult: true }, async (_i: number) => null);
  const start = Date.now();
  try {
    for (let sent = 0; sent < count; sent += window) {
      const n = Math.min(window, count - sent);
      await Promise.all(Array.from({ length: n }, (_, k) => tick.send(first + sent + k)));
    }
    return Date.now() - start;
  } finally {
    await producer.disconnect();
  }
}

/** Polls `check` every `everyMs` until it is true; throws after `deadlineMs`. */
export async function waitUntil(
  what: string,
  deadlineMs: number,
  check: () => Promise<boolean>,
  everyMs = 250,
): Promise<void> {
  const until = Date.now() + deadlineMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out after ${deadlineMs} ms waiting for ${what}`);
    await sleepMs(everyMs);
  }
}

/**
 * Runs once every command the test itself sends later, plus XCLAIM (the lease renewal, due only
 * every 10 s, so a short warm-up may not reach it), on a scratch key that is deleted again.
 * Redis 7 allocates a latency histogram (~24.7 KB, `latency-tracking yes`) per command name on
 * its first call: without this, the first XLEN or BITCOUNT after the baseline would show up as
 * growth. Server diagnostics, not data; bounded by the number of command names.
 */
export async function primeCommands(redis: Redis): Promise<void> {
  const key = "load-test-prime:stream:{x}";
  await redis.xadd(key, "*", "data", "x");
  await redis.call("XGROUP", "CREATE", key, "g", "0");
  await redis.call("XREADGROUP", "GROUP", "g", "c", "COUNT", 1, "STREAMS", key, ">");
  await redis.call("XPENDING", key, "g");
  await redis.call("XCLAIM", key, "g", "c", 0, "0-1", "JUSTID");
  await redis.call("XAUTOCLAIM", key, "g", "c", 0, "0-0", "COUNT", 1);
  await redis.xlen(key);
  await redis.setbit("load-test-prime:bits", 1, 1);
  await redis.bitcount("load-test-prime:bits");
  await redis.incr("load-test-prime:n");
  await redis.get("load-test-prime:n");
  await redis.pttl("load-test-prime:n");
  await redis.memory("USAGE", key, "SAMPLES", "0");
  await memoryStats(redis);
  await redis.info("clients");
  await redis.info("memory");
  await redis.call("SLOWLOG", "LEN");
  await redis.call("SLOWLOG", "RESET");
  await redis.scan("0", "MATCH", "load-test-prime:*", "COUNT", 10);
  await redis.del(key, "load-test-prime:bits", "load-test-prime:n");
}

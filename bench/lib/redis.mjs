// Redis helpers: FLUSHDB of the benchmark's logical DB only (never DB 0, never FLUSHALL), INFO.
import Redis from "ioredis";
import { REDIS } from "./common.mjs";

export function connect(extra = {}) {
  return new Redis({ host: REDIS.host, port: REDIS.port, db: REDIS.db, maxRetriesPerRequest: null, ...extra });
}

export async function flushBenchDb() {
  if (REDIS.db === 0) throw new Error("refusing to flush Redis DB 0; set REDIS_DB to a scratch database");
  const r = connect();
  try {
    await r.flushdb();
  } finally {
    r.disconnect();
  }
}

/** INFO section as an object. */
export async function redisInfo(section = "memory") {
  const r = connect();
  try {
    const txt = await r.info(section);
    return Object.fromEntries(
      txt
        .split("\r\n")
        .filter((l) => l.includes(":"))
        .map((l) => {
          const i = l.indexOf(":");
          return [l.slice(0, i), l.slice(i + 1)];
        }),
    );
  } finally {
    r.disconnect();
  }
}

/** INFO commandstats as { command: { calls, usec } }. */
export async function commandStats() {
  const s = await redisInfo("commandstats");
  const o = {};
  for (const [k, v] of Object.entries(s)) {
    const m = /calls=(\d+),usec=(\d+)/.exec(v);
    if (m) o[k.replace("cmdstat_", "")] = { calls: Number(m[1]), usec: Number(m[2]) };
  }
  return o;
}

/** Redis server CPU seconds (user + sys, main thread and children). */
export async function redisCpuSeconds() {
  const s = await redisInfo("cpu");
  return Number(s.used_cpu_user) + Number(s.used_cpu_sys);
}

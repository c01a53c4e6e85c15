// Redis CPU per record of the backend's store-results.lua (INFO commandstats, EVALSHA usec
// including the commands it runs), in calls of 32 records, for the committed script and for
// the same script with its TTL turned into a Lua number (`tonumber(ARGV[1])`, the earlier
// form). A diagnostic for PROFILE.md. Runs CONFIG RESETSTAT (server-wide statistics) and
// FLUSHDB on the bench DB only.
// Usage: node bench/store-results-cost.mjs [--calls=2000] [--reps=2]
import fs from "node:fs";
import path from "node:path";
import { parseArgs, ROOT } from "./lib/common.mjs";
import { connect, flushBenchDb } from "./lib/redis.mjs";

const a = parseArgs();
const calls = Number(a.calls || 2000);
const reps = Number(a.reps || 2);
const PER_CALL = 32;
const source = fs.readFileSync(path.join(path.dirname(ROOT), "src/backends/redis/scripts/store-results.lua"), "utf8");
const earlier = source.replace(/^local ttl = ARGV\[1\].*$/m, "local ttl = tonumber(ARGV[1])");
if (earlier === source) throw new Error("store-results.lua changed: update this script");
const json = JSON.stringify({
  state: "SUCCESS",
  taskId: "0e7c9b9e-6a5e-4a45-bb0f-0c4f5b2f8f00",
  result: 12345,
  retries: 0,
  taskName: "work",
  updatedAt: new Date().toISOString(),
});

const redis = connect();
async function usecPerRecord(lua) {
  const sha = await redis.script("LOAD", lua);
  await flushBenchDb();
  await redis.config("RESETSTAT");
  for (let c = 0; c < calls; c++) {
    const keys = Array.from({ length: PER_CALL }, (_, i) => `cost:result:${c}-${i}`);
    await redis.evalsha(sha, PER_CALL, ...keys, 3600, "cost:done", 12, 2048, ...Array(PER_CALL).fill(json));
  }
  const line = (await redis.info("commandstats")).split("\r\n").find((l) => l.startsWith("cmdstat_evalsha:"));
  return Number(/usec=(\d+)/.exec(line ?? "")?.[1] ?? Number.NaN) / (PER_CALL * calls);
}
for (let rep = 1; rep <= reps; rep++) {
  const committed = await usecPerRecord(source);
  const before = await usecPerRecord(earlier);
  console.log(
    `rep${rep} committed ${committed.toFixed(2)} µs/record, TTL as a Lua number ${before.toFixed(2)} µs/record`,
  );
}
await flushBenchDb();
redis.disconnect();

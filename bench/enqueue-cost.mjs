// Producer CPU per enqueue, isolated (no worker running): --n concurrent `task.delay()` calls
// against --n concurrent raw ioredis XADDs of the same JSON message (what a Chicory stream entry
// holds) and of the bare loop's three short fields, in the same process and the same reps.
// Wall time and CPU (user+sys) per job, the synchronous loop of the N calls per job (nothing
// leaves the process before it ends), and, with `node --expose-gc`, the heap kept alive per
// pending call (heap after the loop minus before, both after a full GC); medians over reps.
// A diagnostic for PROFILE.md (no peers in it); quote ratios from throughput.mjs / roundtrips.mjs.
//   node --expose-gc bench/enqueue-cost.mjs --n=16384 --reps=5   (dist/ or CHICORY_DIST)
import { randomUUID } from "node:crypto";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { median, parseArgs, REDIS_URL, ROOT } from "./lib/common.mjs";
import { connect, flushBenchDb } from "./lib/redis.mjs";

const args = parseArgs();
const N = Number(args.n ?? 16384);
const REPS = Number(args.reps ?? 5);
const DIST = process.env.CHICORY_DIST ? path.resolve(process.env.CHICORY_DIST) : path.join(path.dirname(ROOT), "dist");
const { Chicory } = await import(pathToFileURL(path.join(DIST, "index.js")).href);
const { RedisBroker, RedisBackend } = await import(pathToFileURL(path.join(DIST, "redis.js")).href);

await flushBenchDb();
const app = new Chicory({
  broker: new RedisBroker({ url: REDIS_URL, keyPrefix: "enqcost" }),
  backend: new RedisBackend({ url: REDIS_URL, keyPrefix: "enqcost" }),
});
const work = app.task({ name: "work" }, async (_w, v) => v);
await app.connect();
const raw = connect({ enableAutoPipelining: true });

/** Wall µs and CPU µs per job of `n` concurrent calls of `one(i)`. */
async function measure(one) {
  const heapBefore = heapAfterGc();
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const pending = Array.from({ length: N }, (_, i) => one(i));
  const loop = ((performance.now() - t0) * 1000) / N;
  const heap = (heapAfterGc() - heapBefore) / N;
  await Promise.all(pending);
  const wall = ((performance.now() - t0) * 1000) / N;
  const c = process.cpuUsage(c0);
  return { wall, cpu: (c.user + c.system) / N, loop, heap };
}

/** Heap in use after a full collection (NaN without --expose-gc). */
function heapAfterGc() {
  if (typeof global.gc !== "function") return Number.NaN;
  global.gc();
  return process.memoryUsage().heapUsed;
}

const message = (i) =>
  JSON.stringify({
    v: 1,
    id: randomUUID(),
    name: "work",
    args: ["increment", i],
    retries: 0,
    eta: null,
    priority: null,
    firstFailureAt: null,
    lastError: null,
  });

const systems = {
  "chicory delay()": (i) => work.delay("increment", i),
  "raw XADD, same JSON": (i) => raw.xadd("enqcost:raw", "*", "data", message(i)),
  "raw XADD, bare fields": (i) => raw.xadd("enqcost:bare", "*", "id", `b-${i}`, "w", "increment", "v", String(i)),
};
const rows = Object.fromEntries(Object.keys(systems).map((k) => [k, []]));
try {
  for (let rep = 1; rep <= REPS + 1; rep++) {
    for (const [name, one] of Object.entries(systems)) {
      const r = await measure(one);
      if (rep > 1) rows[name].push(r); // the first rep warms up
      await flushBenchDb();
    }
  }
  console.log(`N=${N}, ${REPS} reps (after one warm-up rep), per job, median:`);
  for (const [name, rs] of Object.entries(rows)) {
    const wall = median(rs.map((r) => r.wall));
    const cpu = median(rs.map((r) => r.cpu));
    const loop = median(rs.map((r) => r.loop));
    const heap = median(rs.map((r) => r.heap));
    console.log(
      `  ${name.padEnd(24)} wall ${wall.toFixed(1).padStart(6)} µs   CPU ${cpu.toFixed(1).padStart(6)} µs   ` +
        `loop ${loop.toFixed(1).padStart(5)} µs   heap while pending ${Number.isNaN(heap) ? "(--expose-gc)" : `${heap.toFixed(0)} B`}`,
    );
  }
} finally {
  raw.disconnect();
  await app.disconnect();
  await flushBenchDb();
}
process.exit(0);

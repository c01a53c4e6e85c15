// Memory:
//  - Redis used_memory delta per queued (not yet processed) increment job, --jobs jobs enqueued
//    with no worker running (Chicory: `delay()`; BullMQ: `Queue.add`; bare: `XADD`; each in waves
//    of 1000 concurrent calls), plus a key-pattern breakdown (MEMORY USAGE of every key);
//  - worker process RSS: idle on an empty queue 2 s after start (the start-up's young generation
//    still committed), idle again --settle-ms after start (V8's memory reducer has run; 20 s by
//    default), and idle 2 s after processing one batch of --load-n increment jobs.
// Bounded: hard deadline, per-step timeouts.
// Usage: node bench/memory.mjs [--systems=chicory,bullmq,bare-ioredis,beequeue] [--jobs=100000] [--reps=2] [--order=rotate|fixed]
//          [--load-n=4096] [--settle-ms=20000] [--out=bench/results/memory.json]
import {
  hardDeadline,
  median,
  orderArg,
  orderFor,
  parseArgs,
  rssMiB,
  sleep,
  startWorkers,
  withTimeout,
  writeJson,
} from "./lib/common.mjs";
import { connect, flushBenchDb, redisInfo } from "./lib/redis.mjs";

const a = parseArgs();
const order = orderArg(a);
const systems = String(a.systems || "chicory,bullmq,bare-ioredis,beequeue").split(",");
const N = Number(a.jobs || 100000);
const reps = Number(a.reps || 2);
const loadN = Number(a["load-n"] || 4096);
const settleMs = Number(a["settle-ms"] || 20000);
const out = a.out || `bench/results/tmp/memory-${Date.now()}.json`;
hardDeadline(Number(a["max-minutes"] || 15) * 60000, "memory");
const usedMemory = async () => Number((await redisInfo("memory")).used_memory);
const rows = [];
const started = new Date().toISOString();

/** Sums MEMORY USAGE by key pattern (ids and numbers replaced by *). */
async function keyBreakdown() {
  const r = connect();
  try {
    const groups = {};
    let cursor = "0";
    do {
      const [next, keys] = await r.scan(cursor, "COUNT", 1000);
      cursor = next;
      if (!keys.length) continue;
      const p = r.pipeline();
      for (const k of keys) p.memory("USAGE", k, "SAMPLES", "0");
      const res = await p.exec();
      keys.forEach((k, i) => {
        const pattern = k
          .replace(/(:sent:\{[^}]*\}:).*/, "$1*") // Chicory's publish receipts (random tokens)
          .replace(/[0-9a-f]{8}-[0-9a-f-]{27,}/gi, "*")
          .replace(/\d+/g, "#");
        const g = groups[pattern] || { keys: 0, bytes: 0 };
        g.keys++;
        g.bytes += Number(res[i][1]) || 0;
        groups[pattern] = g;
      });
    } while (cursor !== "0");
    return groups;
  } finally {
    r.disconnect();
  }
}

for (let rep = 1; rep <= reps; rep++) {
  for (const sys of orderFor(systems, rep, order)) {
    const queue = `mem-${sys}-${rep}-${process.pid}`;
    const driver = await import(`./drivers/${sys}.mjs`);
    const row = { system: sys, rep, N };
    try {
      // --- worker RSS (idle, then after a batch)
      await flushBenchDb();
      let producer = await driver.createProducer({ queue });
      const workers = await startWorkers(sys, 1, { QUEUE_NAME: queue });
      try {
        const t0 = Date.now();
        await sleep(2000);
        row.workerRssIdleMiB = rssMiB(workers.pids[0]);
        await sleep(Math.max(0, settleMs - (Date.now() - t0)));
        row.workerRssSettledMiB = rssMiB(workers.pids[0]);
        await withTimeout(producer.runBatch("increment", loadN), 120000, `${sys} load batch`);
        await sleep(2000);
        row.workerRssAfterLoadMiB = rssMiB(workers.pids[0]);
      } finally {
        await workers.stop();
        await Promise.race([producer.close(), sleep(5000)]).catch(() => {});
      }
      // --- Redis bytes per queued job (no worker)
      await flushBenchDb();
      producer = await driver.createProducer({ queue: `${queue}-q`, defaults: true });
      try {
        await sleep(200);
        const m0 = await usedMemory();
        await withTimeout(producer.enqueue("increment", N), 300000, `${sys} enqueue`);
        const m1 = await usedMemory();
        row.redisBytesPerJob = (m1 - m0) / N;
        row.keys = await keyBreakdown();
      } finally {
        await Promise.race([producer.close(), sleep(5000)]).catch(() => {});
      }
      console.log(
        `rep${rep} ${sys.padEnd(13)} redis=${row.redisBytesPerJob.toFixed(1)} B/job ` +
          `workerRSS idle=${row.workerRssIdleMiB.toFixed(1)} settled=${row.workerRssSettledMiB.toFixed(1)} MiB afterLoad=${row.workerRssAfterLoadMiB.toFixed(1)} MiB ` +
          `keys=${JSON.stringify(Object.fromEntries(Object.entries(row.keys).map(([k, v]) => [k, `${v.keys} keys ${(v.bytes / N).toFixed(1)} B/job`])))}`,
      );
    } catch (e) {
      console.error(`!! ${sys} rep${rep}: ${e.message}`);
      row.error = e.message;
    }
    rows.push(row);
    writeJson(out, { started, node: process.version, order, N, reps, loadN, settleMs, rows });
  }
}
await flushBenchDb();
console.log("\nmedians:");
for (const sys of systems) {
  const rs = rows.filter((r) => r.system === sys && !r.error);
  console.log(
    sys.padEnd(13),
    ["redisBytesPerJob", "workerRssIdleMiB", "workerRssSettledMiB", "workerRssAfterLoadMiB"]
      .map((k) => `${k}=${median(rs.map((r) => r[k])).toFixed(1)}`)
      .join(" "),
  );
}
console.log(`wrote ${out}`);
process.exit(0);

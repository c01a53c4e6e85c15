// Single-job round trip on an idle queue: enqueue -> worker -> result seen by the producer, over
// --jobs sequential increment jobs with 1 worker process (concurrency 32). p50/p95/p99 per system;
// systems interleaved per rep. Bounded: per-job timeout and a hard deadline.
// Each rep starts a fresh worker process and runs --warmup sequential jobs before measuring: on
// this path a process runs its code once per job, so V8 optimizes it only after some thousands
// of jobs (every system here is 1.5-3.5x slower over its first 1,000 jobs than once warm). The
// warm-up's first --cold-jobs jobs are kept as the "cold" figures (coldP50, coldP99: a worker
// that has just started), the --jobs after the warm-up as the steady state (p50, p95, p99).
// Usage: node bench/latency.mjs [--systems=chicory,bullmq,bare-ioredis,beequeue] [--jobs=2000] [--reps=3] [--order=rotate|fixed]
//          [--warmup=5000] [--cold-jobs=1000] [--max-minutes=15] [--out=bench/results/latency.json]
import os from "node:os";
import {
  hardDeadline,
  median,
  orderArg,
  orderFor,
  parseArgs,
  percentile,
  sleep,
  startWorkers,
  withTimeout,
  writeJson,
} from "./lib/common.mjs";
import { flushBenchDb } from "./lib/redis.mjs";

const a = parseArgs();
const order = orderArg(a);
const systems = String(a.systems || "chicory,bullmq,bare-ioredis,beequeue").split(",");
const jobs = Number(a.jobs || 2000);
const warmup = Number(a.warmup ?? 5000);
const coldJobs = Math.min(Number(a["cold-jobs"] ?? 1000), warmup);
const reps = Number(a.reps || 3);
const out = a.out || `bench/results/tmp/latency-${Date.now()}.json`;
hardDeadline(Number(a["max-minutes"] || 15) * 60000, "latency");
const rows = [];
const started = new Date().toISOString();

for (let rep = 1; rep <= reps; rep++) {
  for (const sys of orderFor(systems, rep, order)) {
    const queue = `lat-${sys}-${rep}-${process.pid}`;
    await flushBenchDb();
    const [base, ...experiments] = sys.split("+"); // e.g. chicory+no-started (see drivers/chicory.mjs)
    const driver = await import(`./drivers/${base}.mjs`);
    const producer = await driver.createProducer({ queue });
    let workers = null;
    try {
      workers = await startWorkers(base, 1, { QUEUE_NAME: queue, CHICORY_BENCH_EXPERIMENT: experiments.join(",") });
      const cold = [];
      for (let i = 0; i < warmup; i++) {
        const r = await withTimeout(producer.runBatch("increment", 1), 10000, `${sys} warm-up job ${i}`);
        if (i < coldJobs) cold.push(r.enqueueMs + r.resultMs);
      }
      await sleep(200);
      const lat = [];
      for (let i = 0; i < jobs; i++) {
        const r = await withTimeout(producer.runBatch("increment", 1), 10000, `${sys} job ${i}`);
        lat.push(r.enqueueMs + r.resultMs);
      }
      const row = {
        system: sys,
        rep,
        jobs,
        p50: percentile(lat, 50),
        p95: percentile(lat, 95),
        p99: percentile(lat, 99),
        max: Math.max(...lat),
        mean: lat.reduce((s, x) => s + x, 0) / lat.length,
        ...(cold.length > 0 ? { coldP50: percentile(cold, 50), coldP99: percentile(cold, 99) } : {}),
        load1: os.loadavg()[0],
      };
      rows.push(row);
      console.log(
        `rep${rep} ${sys.padEnd(13)} p50=${row.p50.toFixed(3)}ms p95=${row.p95.toFixed(3)}ms ` +
          `p99=${row.p99.toFixed(3)}ms max=${row.max.toFixed(1)}ms` +
          (row.coldP50 === undefined
            ? ""
            : ` (first ${coldJobs}: p50=${row.coldP50.toFixed(3)}ms p99=${row.coldP99.toFixed(3)}ms)`),
      );
    } catch (e) {
      console.error(`!! ${sys} rep${rep}: ${e.message}`);
      rows.push({ system: sys, rep, error: e.message });
    } finally {
      if (workers) await workers.stop();
      await Promise.race([producer.close(), sleep(5000)]).catch(() => {});
    }
    writeJson(out, { started, node: process.version, order, jobs, warmup, coldJobs, reps, rows });
  }
}
await flushBenchDb();
console.log("\nmedian over reps (ms):");
for (const sys of systems) {
  const rs = rows.filter((r) => r.system === sys && !r.error);
  console.log(
    sys.padEnd(13),
    ["p50", "p95", "p99", "coldP50", "coldP99"]
      .filter((p) => rs.some((r) => r[p] !== undefined))
      .map((p) => `${p}=${median(rs.map((r) => r[p])).toFixed(3)}`)
      .join(" "),
  );
}
console.log(`wrote ${out}`);
process.exit(0);

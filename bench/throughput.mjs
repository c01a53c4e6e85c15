// Throughput matrix (Chicory's benchmark method):
//   each batch: enqueue N jobs concurrently as individual add calls, then await all N results;
//   throughput = N / (enqueue time + result time). Workers run in separate processes.
// Reps are interleaved (rep -> worker count -> system) so ratios between systems come from the
// same time window; each rep runs the systems in the list's order rotated by one place more
// (`--order=fixed`: always the list's order). Bounded: per-batch timeout and a hard deadline for
// the whole script.
// Usage: node bench/throughput.mjs [--systems=chicory,bullmq,bare-ioredis,beequeue] [--workers=1,2] [--reps=2]
//          [--order=rotate|fixed]
//          [--workloads=increment,cpu_bound,io_bound] [--batches=1024,4096,16384]
//          [--skip=cpu_bound:1024,io_bound:1024] [--batch-timeout-ms=180000] [--max-minutes=40]
//          [--warmup=64] [--out=bench/results/throughput.json]
import os from "node:os";
import {
  hardDeadline,
  median,
  orderArg,
  orderFor,
  parseArgs,
  startWorkers,
  withTimeout,
  writeJson,
} from "./lib/common.mjs";
import { flushBenchDb } from "./lib/redis.mjs";

const a = parseArgs();
const order = orderArg(a);
const systems = String(a.systems || "chicory,bullmq,bare-ioredis,beequeue").split(",");
const workerCounts = String(a.workers || "1,2")
  .split(",")
  .map(Number);
const reps = Number(a.reps || 2);
const workloads = String(a.workloads || "increment,cpu_bound,io_bound").split(",");
const batches = String(a.batches || "1024,4096,16384")
  .split(",")
  .map(Number);
const skip = new Set(
  String(a.skip || "")
    .split(",")
    .filter(Boolean),
);
const out = a.out || `bench/results/tmp/throughput-${Date.now()}.json`;
const batchTimeoutMs = Number(a["batch-timeout-ms"] || 180000);
const warmup = Number(a.warmup ?? 64);
hardDeadline(Number(a["max-minutes"] || 40) * 60000, "throughput");

const rows = [];
const started = new Date().toISOString();
const save = () =>
  writeJson(out, {
    started,
    node: process.version,
    order,
    warmup,
    systems,
    workerCounts,
    reps,
    workloads,
    batches,
    rows,
  });

for (let rep = 1; rep <= reps; rep++) {
  for (const W of workerCounts) {
    for (const sys of orderFor(systems, rep, order)) {
      const queue = `bench-${sys}-${rep}-${W}-${process.pid}`;
      await flushBenchDb();
      const [base, ...experiments] = sys.split("+"); // e.g. chicory+no-started (see drivers/chicory.mjs)
      const driver = await import(`./drivers/${base}.mjs`);
      const producer = await driver.createProducer({ queue });
      let workers = null;
      try {
        workers = await startWorkers(base, W, { QUEUE_NAME: queue, CHICORY_BENCH_EXPERIMENT: experiments.join(",") });
        if (warmup > 0) await withTimeout(producer.runBatch("increment", warmup), batchTimeoutMs, "warmup"); // discarded
        for (const w of workloads) {
          for (const n of batches) {
            if (skip.has(`${w}:${n}`)) continue;
            const r = await withTimeout(producer.runBatch(w, n), batchTimeoutMs, `${sys} ${w} ${n}`);
            const tp = n / ((r.enqueueMs + r.resultMs) / 1000);
            rows.push({
              system: sys,
              workers: W,
              rep,
              workload: w,
              n,
              enqueueMs: r.enqueueMs,
              resultMs: r.resultMs,
              jobsPerSec: tp,
              load1: os.loadavg()[0],
            });
            console.log(
              `rep${rep} W=${W} ${sys.padEnd(13)} ${w.padEnd(9)} n=${String(n).padStart(5)} ` +
                `enq=${r.enqueueMs.toFixed(0).padStart(6)}ms res=${r.resultMs.toFixed(0).padStart(6)}ms ${tp.toFixed(0).padStart(7)} jobs/s`,
            );
            save();
          }
        }
      } catch (e) {
        console.error(`!! ${sys} W=${W} rep${rep}: ${e.message}`);
        rows.push({ system: sys, workers: W, rep, error: e.message });
        save();
      } finally {
        if (workers) await workers.stop();
        await Promise.race([producer.close(), new Promise((r) => setTimeout(r, 5000))]).catch(() => {});
      }
    }
  }
}
await flushBenchDb();
save();

const groups = new Map();
for (const r of rows) {
  if (r.error) continue;
  const key = [r.system, r.workload, r.n, r.workers].join("|");
  if (!groups.has(key)) groups.set(key, []);
  groups.get(key).push(r.jobsPerSec);
}
console.log("\nmedian jobs/s (system workload n workers):");
for (const [k, v] of groups) console.log(k.padEnd(40), median(v).toFixed(0), `(n=${v.length})`);
console.log(`wrote ${out}`);
process.exit(0);

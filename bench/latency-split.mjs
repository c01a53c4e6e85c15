// Where a single job's round trip goes, across processes: for --jobs sequential jobs on an idle
// queue (1 worker process), the medians (or --pct percentiles) of
//   enqueue         delay() until it resolved (the broker confirmed the message)
//   start->handler  delay() called until the handler started in the worker
//   handler->result handler started until the producer had the result
// and, from the socket reads and writes of both processes (lib/io-times.mjs), the handler's
// two ends split further:
//   worker read->handler    the worker's last socket read before the handler started (the job
//                           arriving) until the handler started
//   handler->worker write   handler started until the worker's first socket write after it
//                           (the result / ack going out)
//   worker write->producer  that write until the producer's last socket read before it had the
//                           result (Redis + the notification)
//   producer read->result   that read until the producer had the result
// The `stamp` workload returns `performance.timeOrigin + performance.now()` of the worker, so
// the split relies on the two processes' clocks agreeing (same host); the total does not.
// A diagnostic for PROFILE.md; quote latency from latency.mjs.
// Usage: node bench/latency-split.mjs [--systems=chicory,bare-ioredis,beequeue] [--jobs=1500] [--reps=2]
//          [--pct=50] (another percentile of each part, e.g. 95: where the tail is)
//          [--warmup=5000] (sequential jobs run first, not measured, as in latency.mjs)
// With a build from probe-dist.mjs in the worker (CHICORY_DIST_B=<copy>, system chicory+dist-b),
// each rep also prints when the job passed each probe, from the handler's start.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { now, parseArgs, percentile, sleep, startWorkers, withTimeout } from "./lib/common.mjs";
import { ioTimes } from "./lib/io-times.mjs";
import { flushBenchDb } from "./lib/redis.mjs";

const a = parseArgs();
const systems = String(a.systems || "chicory,bare-ioredis,beequeue").split(",");
const jobs = Number(a.jobs || 1500);
const reps = Number(a.reps || 2);
const pct = Number(a.pct || 50); // the percentile shown of each part (default: the median)
const warmup = Number(a.warmup ?? 5000);
const clock = () => performance.timeOrigin + now();
const ioDir = fs.mkdtempSync(path.join(os.tmpdir(), "latency-split-"));
/** Index of the first time in the sorted `xs` at or after `t`. */
const firstAt = (xs, t) => {
  let lo = 0;
  let hi = xs.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (xs[mid] < t) lo = mid + 1;
    else hi = mid;
  }
  return lo;
};

for (let rep = 1; rep <= reps; rep++) {
  for (const sys of systems) {
    const queue = `split-${sys}-${rep}-${process.pid}`;
    await flushBenchDb();
    const [base, ...experiments] = sys.split("+"); // e.g. chicory+dist-b (see drivers/chicory.mjs)
    const driver = await import(`./drivers/${base}.mjs`);
    const producer = await driver.createProducer({ queue });
    const nodeArgs = `${process.env.BENCH_WORKER_NODE_ARGS || ""} --import ./bench/lib/io-times.mjs`;
    const env = { QUEUE_NAME: queue, IO_TIMES_DIR: ioDir, CHICORY_BENCH_EXPERIMENT: experiments.join(",") };
    const workers = await startWorkers(base, 1, env, nodeArgs);
    try {
      for (let i = 0; i < warmup; i++) await withTimeout(producer.runBatch("increment", 1), 10000, "warmup");
      await sleep(200);
      const enqueue = [];
      const toHandler = [];
      const toResult = [];
      const total = [];
      const marks = [];
      for (let i = 0; i < jobs; i++) {
        const t0 = clock();
        const r = await withTimeout(producer.runBatch("stamp", 1), 10000, `${sys} job ${i}`);
        const t2 = clock();
        const started = Number(r.sample);
        enqueue.push(r.enqueueMs);
        toHandler.push(started - t0);
        toResult.push(t2 - started);
        total.push(t2 - t0);
        marks.push({ started, t2, producerRead: ioTimes.reads.at(-1) });
      }
      await workers.stop();
      const io = fs
        .readdirSync(ioDir)
        .map((f) => path.join(ioDir, f))
        .map((f) => {
          const times = JSON.parse(fs.readFileSync(f, "utf8"));
          fs.unlinkSync(f);
          return times;
        })[0];
      const readToHandler = [];
      const handlerToWrite = [];
      const writeToProducer = [];
      const readToResult = [];
      for (const m of marks) {
        const w = io?.writes[firstAt(io.writes, m.started)];
        m.workerWrite = w; // (the probes below end at it too)
        const rd = io?.reads[firstAt(io.reads, m.started) - 1];
        if (w === undefined || rd === undefined) continue;
        readToHandler.push(m.started - rd);
        handlerToWrite.push(w - m.started);
        writeToProducer.push(m.producerRead - w);
        readToResult.push(m.t2 - m.producerRead);
      }
      // Probes of a build from probe-dist.mjs: from the handler's start to the first pass of each
      // probe at or after it, up to the worker's first write after it.
      const probeParts = {};
      for (const [k, times] of Object.entries(io?.probes ?? {})) {
        probeParts[k] = [];
        for (const m of marks) {
          const t = times[firstAt(times, m.started)];
          if (t !== undefined && m.workerWrite !== undefined && t <= m.workerWrite) probeParts[k].push(t - m.started);
        }
      }
      const f = (xs) => (xs.length ? percentile(xs, pct).toFixed(3) : "–");
      console.log(
        `rep${rep} ${sys.padEnd(13)} total ${f(total)} ms  enqueue ${f(enqueue)}  ` +
          `start->handler ${f(toHandler)}  handler->result ${f(toResult)}\n` +
          `     worker read->handler ${f(readToHandler)}  handler->worker write ${f(handlerToWrite)}  ` +
          `worker write->producer ${f(writeToProducer)}  producer read->result ${f(readToResult)}`,
      );
      const probed = Object.entries(probeParts).filter(([, xs]) => xs.length > 0);
      if (probed.length > 0) {
        probed.sort(([, x], [, y]) => percentile(x, pct) - percentile(y, pct));
        console.log(`     from the handler's start: ${probed.map(([k, xs]) => `${k} ${f(xs)}`).join(", ")}`);
      }
    } finally {
      await workers.stop();
      await Promise.race([producer.close(), sleep(5000)]).catch(() => {});
    }
  }
}
await flushBenchDb();
fs.rmSync(ioDir, { recursive: true, force: true });

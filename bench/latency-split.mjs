// Where a single job's round trip goes, across processes: for --jobs sequential jobs on an idle
// queue (1 worker process), the medians of
//   enqueue         delay() until it resolved (the broker confirmed the message)
//   start->handler  delay() called until the handler started in the worker
//   handler->result handler started until the producer had the result
// The `stamp` workload returns `performance.timeOrigin + performance.now()` of the worker, so
// the split relies on the two processes' clocks agreeing (same host); the total does not.
// A diagnostic for PROFILE.md; quote latency from latency.mjs.
// Usage: node bench/latency-split.mjs [--systems=chicory,bare-ioredis] [--jobs=1500] [--reps=2]
import { median, now, parseArgs, sleep, startWorkers, withTimeout } from "./lib/common.mjs";
import { flushBenchDb } from "./lib/redis.mjs";

const a = parseArgs();
const systems = String(a.systems || "chicory,bare-ioredis").split(",");
const jobs = Number(a.jobs || 1500);
const reps = Number(a.reps || 2);
const clock = () => performance.timeOrigin + now();

for (let rep = 1; rep <= reps; rep++) {
  for (const sys of systems) {
    const queue = `split-${sys}-${rep}-${process.pid}`;
    await flushBenchDb();
    const driver = await import(`./drivers/${sys}.mjs`);
    const producer = await driver.createProducer({ queue });
    const workers = await startWorkers(sys, 1, { QUEUE_NAME: queue });
    try {
      for (let i = 0; i < 200; i++) await withTimeout(producer.runBatch("increment", 1), 10000, "warmup");
      await sleep(200);
      const enqueue = [];
      const toHandler = [];
      const toResult = [];
      const total = [];
      for (let i = 0; i < jobs; i++) {
        const t0 = clock();
        const r = await withTimeout(producer.runBatch("stamp", 1), 10000, `${sys} job ${i}`);
        const t2 = clock();
        const started = Number(r.sample);
        enqueue.push(r.enqueueMs);
        toHandler.push(started - t0);
        toResult.push(t2 - started);
        total.push(t2 - t0);
      }
      const f = (xs) => median(xs).toFixed(3);
      console.log(
        `rep${rep} ${sys.padEnd(13)} total ${f(total)} ms  enqueue ${f(enqueue)}  ` +
          `start->handler ${f(toHandler)}  handler->result ${f(toResult)}`,
      );
    } finally {
      await workers.stop();
      await Promise.race([producer.close(), sleep(5000)]).catch(() => {});
    }
  }
}
await flushBenchDb();

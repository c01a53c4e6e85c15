// CPU per job of each process on the single-job latency path: --jobs sequential `increment`
// jobs on an idle queue (1 worker process, as latency.mjs), and the CPU time the worker
// process, the producer process (this one) and Redis spent over them, divided by the jobs.
// On this path the three processes share 2 cores and run mostly one after another, so a
// system's round trip grows with the CPU its processes spend per job. A diagnostic for
// PROFILE.md ("Single-job latency: CPU per job"); quote latency from latency.mjs.
// The worker's CPU is read from /proc/<pid>/stat (Linux; clock ticks, 10 ms at 100 Hz, so
// keep --jobs × the per-job CPU well above that), the producer's from process.cpuUsage() (it
// includes this script's loop, the same for every system), Redis's from INFO cpu.
// Usage: node bench/latency-cpu.mjs [--systems=chicory,beequeue,bare-ioredis,bullmq] [--jobs=3000] [--reps=2]
//          [--warmup=200] (sequential jobs before measuring; 10000 measures the steady state, see latency.mjs)
import os from "node:os";
import { median, parseArgs, percentile, procCpuSeconds, sleep, startWorkers, withTimeout } from "./lib/common.mjs";
import { flushBenchDb, redisCpuSeconds } from "./lib/redis.mjs";

const a = parseArgs();
const systems = String(a.systems || "chicory,beequeue,bare-ioredis,bullmq").split(",");
const jobs = Number(a.jobs || 3000);
const reps = Number(a.reps || 2);
const warmup = Number(a.warmup ?? 200);
/** User + system CPU of process `pid` so far, µs. */
const processCpuUs = (pid) => procCpuSeconds(pid) * 1e6;

const rows = new Map(systems.map((s) => [s, []]));
for (let rep = 1; rep <= reps; rep++) {
  for (const sys of systems) {
    await flushBenchDb();
    const driver = await import(`./drivers/${sys}.mjs`);
    const queue = `cpu-${sys}-${rep}-${process.pid}`;
    const producer = await driver.createProducer({ queue });
    const workers = await startWorkers(sys, 1, { QUEUE_NAME: queue });
    try {
      for (let i = 0; i < warmup; i++) await withTimeout(producer.runBatch("increment", 1), 10000, "warmup");
      await sleep(200);
      const pid = workers.pids[0];
      const worker0 = processCpuUs(pid);
      const producer0 = process.cpuUsage();
      const redis0 = await redisCpuSeconds();
      const latencies = [];
      const t0 = performance.now();
      for (let i = 0; i < jobs; i++) {
        const t = performance.now();
        await withTimeout(producer.runBatch("increment", 1), 10000, `${sys} job ${i}`);
        latencies.push(performance.now() - t);
      }
      const wallUs = ((performance.now() - t0) * 1000) / jobs;
      const redisUs = (((await redisCpuSeconds()) - redis0) * 1e6) / jobs;
      const p = process.cpuUsage(producer0);
      const row = {
        p50Ms: percentile(latencies, 50),
        wallUs,
        workerUs: (processCpuUs(pid) - worker0) / jobs,
        producerUs: (p.user + p.system) / jobs,
        redisUs,
      };
      rows.get(sys).push(row);
      console.log(
        `rep${rep} ${sys.padEnd(13)} p50 ${row.p50Ms.toFixed(3)} ms  wall/job ${wallUs.toFixed(0)} µs  ` +
          `CPU µs/job: worker ${row.workerUs.toFixed(0)}  producer ${row.producerUs.toFixed(0)}  Redis ${redisUs.toFixed(0)}`,
      );
    } finally {
      await workers.stop();
      await Promise.race([producer.close(), sleep(5000)]).catch(() => {});
    }
  }
}
await flushBenchDb();
console.log(`\nmedians over ${reps} reps (load average ${os.loadavg()[0].toFixed(2)}):`);
for (const [sys, rs] of rows) {
  const m = (k) => median(rs.map((r) => r[k]));
  console.log(
    `${sys.padEnd(13)} p50 ${m("p50Ms").toFixed(3)} ms  CPU µs/job: worker ${m("workerUs").toFixed(0)}  ` +
      `producer ${m("producerUs").toFixed(0)}  Redis ${m("redisUs").toFixed(0)}  ` +
      `(sum ${(m("workerUs") + m("producerUs") + m("redisUs")).toFixed(0)}, wall/job ${m("wallUs").toFixed(0)})`,
  );
}
process.exit(0);

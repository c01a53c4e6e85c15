// Worker CPU per job, isolated: fills a queue with --n trivial jobs (`send`, no result
// waiting), then starts ONE Chicory worker in this process and measures its CPU (user+sys) and
// wall time until every job has run and the worker has stopped (all results stored and acked).
// The producer's own CPU for the fill (encode + XADD) is reported separately. A diagnostic for
// PROFILE.md (no peers in it); quote ratios from throughput.mjs / roundtrips.mjs.
//   node bench/drain.mjs --n=30000 --reps=3 [--prof=file.cpuprofile]  (dist/ or CHICORY_DIST;
//   --prof profiles the drain phase only, the last rep's profile is kept; --alloc prints the
//   worker's bytes allocated per job by function, sampled over the last rep's drain)
import fs from "node:fs";
import { Session } from "node:inspector/promises";
import path from "node:path";
import { pathToFileURL } from "node:url";
import * as bare from "./drivers/bare-ioredis.mjs";
import { CONCURRENCY, median, parseArgs, REDIS_URL, ROOT } from "./lib/common.mjs";
import { printSites, startHeapSampling, stopHeapSampling } from "./lib/heap-sites.mjs";
import { connect, flushBenchDb } from "./lib/redis.mjs";

const args = parseArgs();
const N = Number(args.n ?? 30000);
const REPS = Number(args.reps ?? 3);
const DIST = process.env.CHICORY_DIST ? path.resolve(process.env.CHICORY_DIST) : path.join(path.dirname(ROOT), "dist");
const { Chicory, Worker, silentLogger } = await import(pathToFileURL(path.join(DIST, "index.js")).href);
const { RedisBroker, RedisBackend } = await import(pathToFileURL(path.join(DIST, "redis.js")).href);

const cpuUs = (from) => {
  const u = process.cpuUsage(from);
  return u.user + u.system;
};

/** The bare loop's worker (bench/drivers/bare-ioredis.mjs) draining N prefilled jobs here. */
async function drainBare(rep) {
  await flushBenchDb();
  const queue = `drain-bare${rep}`;
  const producer = await bare.createProducer({ queue });
  await producer.enqueue("increment", N);
  await producer.close();
  // Its results are announced on the done channel (comma-separated ids): count them.
  const sub = connect();
  let seen = 0;
  let allDone;
  const done = new Promise((resolve) => {
    allDone = resolve;
  });
  await sub.subscribe(`${queue}:done`);
  sub.on("message", (_channel, ids) => {
    seen += ids.split(",").length;
    if (seen >= N) allDone();
  });
  global.gc?.();
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const worker = await bare.startWorker({ queue });
  await done;
  await worker.close();
  const ms = performance.now() - t0;
  const workerUs = cpuUs(c0);
  sub.disconnect();
  return { ms, jobsPerS: (N / ms) * 1000, workerUsPerJob: workerUs / N };
}

const rows = [];
for (let rep = 1; rep <= REPS; rep++) {
  const redis = connect();
  await flushBenchDb();
  const keyPrefix = `drain${rep}`;
  // --shared: broker and backend on one injected connection (experiment)
  const shared = args.shared ? connect({ enableAutoPipelining: true }) : undefined;
  const app = new Chicory({
    broker: new RedisBroker({ url: REDIS_URL, keyPrefix, client: shared }),
    backend: new RedisBackend({ url: REDIS_URL, keyPrefix, client: shared }),
  });
  let ran = 0;
  let allRan;
  const done = new Promise((resolve) => {
    allRan = resolve;
  });
  const work = app.task({ name: "work" }, (v) => {
    if (++ran === N) allRan();
    return v + 1;
  });
  await app.connect();
  let c0 = process.cpuUsage();
  for (let i = 0; i < N; i += 1000) {
    await Promise.all(Array.from({ length: Math.min(1000, N - i) }, (_, j) => work.send(i + j)));
  }
  const fillUs = cpuUs(c0);
  global.gc?.();
  const worker = new Worker(app, { concurrency: CONCURRENCY, logger: silentLogger });
  const session = args.prof ? new Session() : null;
  if (session) {
    session.connect();
    await session.post("Profiler.enable");
    await session.post("Profiler.start");
  }
  const heap = args.alloc && rep === REPS ? await startHeapSampling() : null;
  c0 = process.cpuUsage();
  const t0 = performance.now();
  await worker.start();
  await done;
  await worker.stop(30);
  const ms = performance.now() - t0;
  const workerUs = cpuUs(c0);
  if (heap) {
    const { total, sites } = await stopHeapSampling(heap);
    console.log(`worker allocations: ${Math.round(total / N)} B/job`);
    printSites(sites, N, Number(args.top ?? 30));
  }
  if (session) {
    const { profile } = await session.post("Profiler.stop");
    const file = path.resolve(typeof args.prof === "string" ? args.prof : `drain-${rep}.cpuprofile`);
    fs.writeFileSync(file, JSON.stringify(profile));
    console.log(`wrote ${file}`);
    session.disconnect();
  }
  const left = await redis.keys(`*${keyPrefix}*result*`).then((k) => k.length);
  rows.push({ rep, n: N, ms, jobsPerS: (N / ms) * 1000, workerUsPerJob: workerUs / N, fillUsPerJob: fillUs / N });
  console.log(
    `rep${rep} n=${N} ${Math.round((N / ms) * 1000)} jobs/s worker ${(workerUs / N).toFixed(1)} µs/job, fill ${(fillUs / N).toFixed(1)} µs/job, results ${left}`,
  );
  await redis.quit();
  shared?.disconnect();
  if (args.bare) {
    const b = await drainBare(rep);
    rows[rows.length - 1].bare = b;
    console.log(
      `rep${rep} bare n=${N} ${Math.round(b.jobsPerS)} jobs/s worker ${b.workerUsPerJob.toFixed(1)} µs/job ` +
        `(Chicory / bare worker CPU per job: ${(workerUs / N / b.workerUsPerJob).toFixed(2)}×)`,
    );
  }
}
console.log(
  `median: ${Math.round(median(rows.map((r) => r.jobsPerS)))} jobs/s, worker ${median(rows.map((r) => r.workerUsPerJob)).toFixed(1)} µs/job, fill ${median(rows.map((r) => r.fillUsPerJob)).toFixed(1)} µs/job`,
);
if (args.bare) {
  const ratios = rows.map((r) => r.workerUsPerJob / r.bare.workerUsPerJob);
  console.log(
    `bare median: ${Math.round(median(rows.map((r) => r.bare.jobsPerS)))} jobs/s, worker ${median(rows.map((r) => r.bare.workerUsPerJob)).toFixed(1)} µs/job; ` +
      `Chicory / bare worker CPU per job ${median(ratios).toFixed(2)}× (per rep ${ratios.map((x) => x.toFixed(2)).join(", ")})`,
  );
}
await flushBenchDb(); // (the last rep's results: nothing is left in the benchmark's database)
process.exit(0);

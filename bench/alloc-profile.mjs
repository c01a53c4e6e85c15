// Bytes the producer allocates per job: V8's sampling heap profiler (objects later collected
// included) over one `increment` batch of --n `delay()` + `get()` round trips (after a warm-up
// batch), with one worker process. Prints bytes per job in total and by allocating function.
// A diagnostic for PROFILE.md (GC is a large share of the producer's CPU); compare systems
// with --system=chicory|bare-ioredis|bullmq.
//   node bench/alloc-profile.mjs --system=chicory --n=16384 [--top=25]   (dist/ or CHICORY_DIST)
import { parseArgs, startWorkers } from "./lib/common.mjs";
import { printSites, startHeapSampling, stopHeapSampling } from "./lib/heap-sites.mjs";
import { flushBenchDb } from "./lib/redis.mjs";

const args = parseArgs();
const system = String(args.system ?? "chicory");
const n = Number(args.n ?? 16384);
const driver = await import(`./drivers/${system}.mjs`);
await flushBenchDb();
const queue = `alloc-${process.pid}`;
const workers = await startWorkers(system, 1, { QUEUE_NAME: queue });
const producer = await driver.createProducer({ queue });
await producer.runBatch("increment", n); // warm-up
const session = await startHeapSampling();
const r = await producer.runBatch("increment", n);
const { total, sites } = await stopHeapSampling(session);
await producer.close();
await workers.stop();

console.log(
  `${system}: ${Math.round(n / ((r.enqueueMs + r.resultMs) / 1000))} jobs/s, producer allocated ${Math.round(total / n)} B/job`,
);
printSites(sites, n, Number(args.top ?? 25));
process.exit(0);

// Bytes the producer allocates per job: V8's sampling heap profiler (objects later collected
// included) over one `increment` batch of --n `delay()` + `get()` round trips (after a warm-up
// batch), with one worker process. Prints bytes per job in total and by allocating function.
// A diagnostic for PROFILE.md (GC is a large share of the producer's CPU); compare systems
// with --system=chicory|bare-ioredis|bullmq.
//   node bench/alloc-profile.mjs --system=chicory --n=16384 [--top=25]   (dist/ or CHICORY_DIST)
import { Session } from "node:inspector/promises";
import { parseArgs, startWorkers } from "./lib/common.mjs";
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
const session = new Session();
session.connect();
await session.post("HeapProfiler.enable");
await session.post("HeapProfiler.startSampling", {
  samplingInterval: 256,
  includeObjectsCollectedByMajorGC: true,
  includeObjectsCollectedByMinorGC: true,
});
const r = await producer.runBatch("increment", n);
const { profile } = await session.post("HeapProfiler.stopSampling");
await producer.close();
await workers.stop();

const bySite = new Map();
let total = 0;
const walk = (node) => {
  const f = node.callFrame;
  const site = `${f.functionName || "(anonymous)"} ${f.url.split("/").slice(-2).join("/")}:${f.lineNumber + 1}`;
  total += node.selfSize;
  bySite.set(site, (bySite.get(site) ?? 0) + node.selfSize);
  for (const child of node.children) walk(child);
};
walk(profile.head);
console.log(
  `${system}: ${Math.round(n / ((r.enqueueMs + r.resultMs) / 1000))} jobs/s, producer allocated ${Math.round(total / n)} B/job`,
);
for (const [site, bytes] of [...bySite].sort((a, b) => b[1] - a[1]).slice(0, Number(args.top ?? 25))) {
  console.log(`${String(Math.round(bytes / n)).padStart(7)} B/job  ${site}`);
}
process.exit(0);

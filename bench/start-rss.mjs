// Worker start-up: RSS 2 s after a worker process reports ready (as memory.mjs reads it), and
// the time from fork to ready, for one or more builds of Chicory side by side, in interleaved
// reps (build A, build B, ..., then again), with the bare loop's worker as the reference.
// Flushes the bench DB (REDIS_DB, 2 by default) when done.
// Use it to compare two builds: `npm run build`, copy dist/ away, change and build again, then
//   node bench/start-rss.mjs --dists=dist,/tmp/dist-old --reps=8
// Usage: node bench/start-rss.mjs [--dists=dist] [--reps=8] [--bare=1] [--out=bench/results/tmp/start-rss-<ts>.json]
import path from "node:path";
import { hardDeadline, median, parseArgs, rssMiB, sleep, startWorkers, writeJson } from "./lib/common.mjs";
import { flushBenchDb } from "./lib/redis.mjs";

const a = parseArgs();
const dists = String(a.dists || "dist").split(",");
const reps = Number(a.reps || 8);
const withBare = a.bare === undefined ? true : a.bare !== "0";
const out = a.out || `bench/results/tmp/start-rss-${Date.now()}.json`;
hardDeadline(Number(a["max-minutes"] || 10) * 60000, "start-rss");

const systems = [
  ...dists.map((dist) => ({
    label: `chicory (${dist})`,
    driver: "chicory",
    env: { CHICORY_DIST: path.resolve(dist) },
  })),
  ...(withBare ? [{ label: "bare loop", driver: "bare-ioredis", env: {} }] : []),
];
const samples = new Map(systems.map((s) => [s.label, { rss: [], readyMs: [] }]));
for (let rep = 1; rep <= reps; rep++) {
  for (const s of systems) {
    const t0 = performance.now();
    const workers = await startWorkers(s.driver, 1, { ...s.env, QUEUE_NAME: `start-rss-${process.pid}-${rep}` });
    const readyMs = performance.now() - t0;
    try {
      await sleep(2000);
      const rss = rssMiB(workers.pids[0]);
      samples.get(s.label).rss.push(rss);
      samples.get(s.label).readyMs.push(readyMs);
      console.log(`rep${rep} ${s.label.padEnd(40)} RSS ${rss.toFixed(1)} MiB, ready after ${readyMs.toFixed(0)} ms`);
    } finally {
      await workers.stop();
    }
  }
}
const rows = systems.map((s) => {
  const { rss, readyMs } = samples.get(s.label);
  return {
    system: s.label,
    rssMedianMiB: median(rss),
    rssMinMiB: Math.min(...rss),
    rssMaxMiB: Math.max(...rss),
    readyMedianMs: median(readyMs),
    rss,
    readyMs,
  };
});
for (const r of rows) {
  console.log(
    `${r.system.padEnd(40)} RSS 2 s after ready: median ${r.rssMedianMiB.toFixed(1)} MiB [${r.rssMinMiB.toFixed(1)}–${r.rssMaxMiB.toFixed(1)}]; fork to ready: median ${r.readyMedianMs.toFixed(0)} ms`,
  );
}
writeJson(out, { started: new Date().toISOString(), reps, rows });
await flushBenchDb(); // the workers' groups and heartbeats (the bench DB only)
process.exit(0);

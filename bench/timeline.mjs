// How fast the workers take entries during one batch, seen from Redis: a separate sampler
// process reads XINFO GROUPS (lag = entries not yet read, pending = read and unacknowledged)
// every --every ms while the producer runs one `increment` batch of --n jobs (after a warm-up
// batch). Prints the samples and the read rate in each quarter of the batch. A diagnostic for
// PROFILE.md (it tells the enqueue phase, where the producer handles its replies, from the
// phase after it); quote ratios from throughput.mjs.
//   node bench/timeline.mjs --system=chicory --n=16384 --workers=1 [--every=20]
//   (dist/ or CHICORY_DIST; --experiment=prefetch passes CHICORY_BENCH_EXPERIMENT to workers)
import { fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { parseArgs, startWorkers } from "./lib/common.mjs";
import { connect, flushBenchDb } from "./lib/redis.mjs";

const args = parseArgs();
if (process.argv[2] === "--sampler") {
  // child: sample the group of stream argv[3] until told to stop, then print the samples
  const [stream, every] = [process.argv[3], Number(process.argv[4])];
  const redis = connect();
  const t0 = Date.now();
  const samples = [];
  const timer = setInterval(async () => {
    const groups = await redis.call("XINFO", "GROUPS", stream).catch(() => []);
    const fields = groups[0] ?? [];
    const info = {};
    for (let i = 0; i < fields.length; i += 2) info[fields[i]] = fields[i + 1];
    samples.push({ t: Date.now() - t0, lag: info.lag, pending: info.pending, read: info["entries-read"] });
  }, every);
  process.on("message", () => {
    clearInterval(timer);
    process.send(samples, () => process.exit(0));
  });
  process.send("ready");
} else {
  const system = String(args.system ?? "chicory");
  const n = Number(args.n ?? 16384);
  const driver = await import(`./drivers/${system}.mjs`);
  await flushBenchDb();
  const queue = `timeline-${process.pid}`;
  const stream = system === "chicory" ? `${queue}:stream:{default}` : `${queue}:stream`;
  const workers = await startWorkers(system, Number(args.workers ?? 1), {
    QUEUE_NAME: queue,
    CHICORY_BENCH_EXPERIMENT: String(args.experiment ?? ""),
  });
  const producer = await driver.createProducer({ queue });
  await producer.runBatch("increment", n); // warm-up
  const sampler = fork(fileURLToPath(import.meta.url), ["--sampler", stream, String(args.every ?? 20)]);
  await new Promise((resolve) => sampler.once("message", resolve));
  const r = await producer.runBatch("increment", n);
  sampler.send("stop");
  const samples = await new Promise((resolve) => sampler.once("message", resolve));
  await producer.close();
  await workers.stop();
  console.log(
    `${system}: enqueue ${r.enqueueMs.toFixed(0)} ms, results ${r.resultMs.toFixed(0)} ms, ` +
      `${Math.round(n / ((r.enqueueMs + r.resultMs) / 1000))} jobs/s`,
  );
  console.log("t ms: lag/pending/entries-read");
  console.log(samples.map((s) => `${s.t}:${s.lag}/${s.pending}/${s.read}`).join(" "));
  const live = samples.filter((s) => Number(s.read) > n); // the measured batch (after the warm-up's n)
  if (live.length > 1) {
    const quarter = Math.max(1, Math.floor(live.length / 4));
    for (let i = 0; i + quarter < live.length; i += quarter) {
      const [a, b] = [live[i], live[Math.min(i + quarter, live.length - 1)]];
      const rate = ((Number(b.read) - Number(a.read)) / (b.t - a.t)) * 1000;
      console.log(`  ${a.t}-${b.t} ms: workers read ${Math.round(rate)} entries/s, lag ${a.lag} -> ${b.lag}`);
    }
  }
  process.exit(0);
}

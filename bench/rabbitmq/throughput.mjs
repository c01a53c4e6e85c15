// Throughput of Chicory on RabbitMQ against a plain amqplib publish/consume loop, in the same
// run with interleaved reps (rep -> worker count -> system), following the method of
// ../shared/bench-peers: per batch, N individual publishes at once (Promise.all), then await
// all N completions; throughput = N / (enqueue time + completion time). Workers run in
// separate processes (CONCURRENCY = 32 each). One discarded 64-job warm-up batch per
// (rep, worker count, system).
//
// Usage (from the repository root):
//   node bench/rabbitmq/throughput.mjs [--systems=amqplib,chicory,chicory-nobackend]
//     [--workers=1,2] [--reps=2] [--workloads=increment,cpu_bound,io_bound]
//     [--batches=1024,4096] [--skip=io_bound:16384,...] [--out=bench/rabbitmq/results/throughput.json]
//     [--max-minutes=30] [--batch-timeout-ms=120000] [--no-snapshot]
//     [--worker-prof-dir=DIR]   (node --cpu-prof for the worker processes)
//     [--attempts=3]            (a block that fails, e.g. because RabbitMQ was restarted by
//                                other work on the machine, is run again, at most this often)
//
// Bounded: per-batch timeouts plus a hard deadline; on every exit path the forked workers are
// killed by PID and the run's RabbitMQ queues and Redis keys (random prefix) are deleted.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {
  CONCURRENCY,
  deleteQueues,
  deleteRedisKeys,
  killChildren,
  listQueues,
  median,
  parseArgs,
  REDIS_DB,
  REPO,
  runPrefix,
  startWorkers,
  waitForRabbit,
  watchRabbit,
  withTimeout,
} from "./lib.mjs";

const a = parseArgs();
const systems = String(a.systems || "amqplib,chicory,chicory-nobackend").split(",");
const workerCounts = String(a.workers || "1,2")
  .split(",")
  .map(Number);
const reps = Number(a.reps || 2);
const workloads = String(a.workloads || "increment,cpu_bound,io_bound").split(",");
const batches = String(a.batches || "1024,4096")
  .split(",")
  .map(Number);
const skip = new Set(
  String(a.skip || "")
    .split(",")
    .filter(Boolean),
);
const out = path.resolve(a.out || path.join(REPO, "bench/rabbitmq/results/throughput.json"));
const batchTimeoutMs = Number(a["batch-timeout-ms"] || 120000);
const maxMs = Number(a["max-minutes"] || 30) * 60000;
const workerProfDir = a["worker-prof-dir"] ? path.resolve(a["worker-prof-dir"]) : null;
const attempts = Number(a.attempts || 3);
const RUN = runPrefix();

// ---- cleanup on every exit path -------------------------------------------------------------
const createdQueues = new Set();
let cleaned = false;
async function cleanup() {
  if (cleaned) return;
  cleaned = true;
  killChildren();
  await deleteQueues([...createdQueues]).catch((e) => console.error(`queue clean-up: ${e.message}`));
  const left = await listQueues(RUN);
  if (left?.length) {
    console.error(`deleting ${left.length} leftover queue(s) of ${RUN}`);
    await deleteQueues(left).catch(() => {});
  }
  const keys = await deleteRedisKeys(RUN).catch(() => 0);
  if (keys) console.log(`deleted ${keys} Redis key(s) of ${RUN} in DB ${REDIS_DB}`);
  if (snapshotDir) fs.rmSync(snapshotDir, { recursive: true, force: true });
}
const bail = (code, why) => {
  console.error(why);
  setTimeout(() => process.exit(code), 20000).unref(); // clean-up gets 20 s at most
  void cleanup().finally(() => process.exit(code));
};
setTimeout(() => bail(3, `hard deadline of ${maxMs} ms reached`), maxMs).unref();
process.on("SIGINT", () => bail(130, "SIGINT"));
process.on("SIGTERM", () => bail(143, "SIGTERM"));

// ---- the built package (a private snapshot, so a concurrent `npm run build` cannot break us) --
const dist = path.join(REPO, "dist");
const hasDist = () => ["index.js", "rabbitmq.js", "redis.js"].every((f) => fs.existsSync(path.join(dist, f)));
if (!process.env.CHICORY_DIST && !hasDist()) {
  await new Promise((r) => setTimeout(r, 15000)); // maybe someone else is building right now
  if (!hasDist()) {
    console.log("dist/ missing: npm run build");
    execFileSync("npm", ["run", "build"], { cwd: REPO, stdio: "inherit" });
  }
}
const builtAt = fs.statSync(path.join(process.env.CHICORY_DIST || dist, "index.js")).mtime.toISOString();
let snapshotDir = null;
if (!process.env.CHICORY_DIST && a.snapshot !== "false" && !a["no-snapshot"]) {
  snapshotDir = path.join(REPO, ".tmp", `bench-rmq-dist-${RUN}`);
  fs.cpSync(dist, snapshotDir, { recursive: true });
  process.env.CHICORY_DIST = snapshotDir; // the driver and the forked workers load this copy
}
const distInfo = { dir: process.env.CHICORY_DIST || dist, builtAt };

// ---- the matrix -------------------------------------------------------------------------------
const rows = [];
const meta = {
  run: RUN,
  startedAt: new Date().toISOString(),
  host: { cpus: os.cpus().length, model: os.cpus()[0]?.model, node: process.version, loadavgStart: os.loadavg() },
  concurrency: CONCURRENCY,
  dist: distInfo,
  systems,
  workerCounts,
  reps,
  workloads,
  batches,
  skip: [...skip],
};
fs.mkdirSync(path.dirname(out), { recursive: true });
const save = () => fs.writeFileSync(out, JSON.stringify({ meta, rows }, null, 1));
const driverOf = (sys) =>
  import(`./drivers/${sys.startsWith("chicory") ? "chicory" : sys.startsWith("amqplib") ? "amqplib" : sys}.mjs`);
const shortName = {
  amqplib: "a",
  "amqplib-replyq": "q",
  chicory: "c",
  "chicory-nobackend": "n",
  "chicory-durable": "d",
};

try {
  for (let rep = 1; rep <= reps; rep++) {
    for (const W of workerCounts) {
      for (const sys of systems) {
        for (let attempt = 1; attempt <= attempts; attempt++) {
          if (await runBlock(sys, W, rep, attempt)) break;
        }
      }
    }
  }
} finally {
  meta.finishedAt = new Date().toISOString();
  meta.host.loadavgEnd = os.loadavg();
  save();
  await cleanup();
}

/** One (system, worker count, rep) block: producer, workers, warm-up, every cell. */
async function runBlock(sys, W, rep, attempt) {
  const prefix = `${RUN}.${shortName[sys] ?? sys}${W}r${rep}a${attempt}`;
  const driver = await driverOf(sys);
  let producer = null;
  let workers = null;
  let ok = true;
  let sentinel = null;
  try {
    await waitForRabbit();
    sentinel = await watchRabbit();
    producer = await withTimeout(driver.createProducer({ prefix, system: sys }), 30000, `${sys} producer`);
    for (const q of producer.queues) createdQueues.add(q);
    const nodeArgs = workerProfDir
      ? ["--cpu-prof", `--cpu-prof-dir=${workerProfDir}`] // default names: CPU.<date>.<time>.<pid>...
      : [];
    workers = await startWorkers(sys, W, { BENCH_RMQ_PREFIX: prefix }, { nodeArgs });
    await withTimeout(producer.runBatch("increment", 64), 60000, "warm-up");
    for (const w of workloads) {
      for (const n of batches) {
        if (skip.has(`${w}:${n}`)) continue;
        if (
          rows.some(
            (r) => !r.error && r.system === sys && r.workers === W && r.rep === rep && r.workload === w && r.n === n,
          )
        ) {
          continue; // done by an earlier attempt
        }
        const load1 = os.loadavg()[0];
        const cpu0 = process.cpuUsage();
        const wcpu0 = await workers.cpu();
        const r = await withTimeout(producer.runBatch(w, n), batchTimeoutMs, `${sys} ${w} ${n}`);
        const cpu1 = process.cpuUsage(cpu0);
        const wcpu1 = await workers.cpu();
        if (sentinel.lost)
          throw new Error("RabbitMQ connection lost during the batch (server restarted?): batch discarded");
        const jobsPerSec = n / ((r.enqueueMs + r.resultMs) / 1000);
        rows.push({
          system: sys,
          workers: W,
          rep,
          attempt,
          workload: w,
          n,
          enqueueMs: r.enqueueMs,
          resultMs: r.resultMs,
          jobsPerSec,
          load1,
          // CPU per job (µs, user+system): the producer process (includes this script's own
          // small bookkeeping) and all worker processes together
          producerCpuUsPerJob: (cpu1.user + cpu1.system) / n,
          workerCpuUsPerJob: (wcpu1 - wcpu0) / n,
        });
        console.log(
          `rep${rep} W=${W} ${sys.padEnd(18)} ${w.padEnd(9)} n=${String(n).padStart(5)} enq=${r.enqueueMs.toFixed(0).padStart(6)}ms ` +
            `res=${r.resultMs.toFixed(0).padStart(6)}ms ${jobsPerSec.toFixed(0).padStart(7)} jobs/s  load=${load1.toFixed(1)} ` +
            `cpu/job p=${((cpu1.user + cpu1.system) / n).toFixed(0)}µs w=${((wcpu1 - wcpu0) / n).toFixed(0)}µs`,
        );
        save();
      }
    }
  } catch (e) {
    console.error(`!! ${sys} W=${W} rep${rep} attempt ${attempt}: ${e.message}`);
    // cells completed before the failure are kept; the next attempt measures the others
    rows.push({ system: sys, workers: W, rep, attempt, error: e.message });
    save();
    ok = false;
  } finally {
    await sentinel?.close();
    await workers?.stop();
    await Promise.race([producer?.close(), new Promise((r) => setTimeout(r, 5000))]).catch(() => {});
    const mine = [...createdQueues].filter((q) => q.startsWith(`${prefix}.`));
    await deleteQueues(mine).catch(() => {});
    for (const q of mine) createdQueues.delete(q);
    await deleteRedisKeys(prefix).catch(() => {});
  }
  return ok;
}

// ---- summary: median jobs/s, and Chicory/amqplib (median of per-rep ratios) --------------------
const key = (r) => `${r.workload}|${r.n}|${r.workers}`;
const by = new Map();
for (const r of rows) {
  if (r.error) continue;
  const k = `${r.system}|${key(r)}`;
  if (!by.has(k)) by.set(k, []);
  by.get(k).push(r);
}
console.log("\nmedian jobs/s (workload n workers):  system ... [ratio to amqplib]");
const cells = [...new Set(rows.filter((r) => !r.error).map(key))];
for (const c of cells) {
  const parts = [];
  const base = by.get(`amqplib|${c}`) || [];
  for (const s of systems) {
    const rs = by.get(`${s}|${c}`) || [];
    if (!rs.length) continue;
    const m = median(rs.map((r) => r.jobsPerSec));
    let ratio = "";
    if (s !== "amqplib" && base.length) {
      const per = rs
        .map((r) => base.find((b) => b.rep === r.rep))
        .map((b, i) => (b ? rs[i].jobsPerSec / b.jobsPerSec : null));
      ratio = ` [${median(per.filter((x) => x !== null)).toFixed(2)}]`;
    }
    parts.push(`${s}=${m.toFixed(0)}${ratio}`);
  }
  console.log(c.padEnd(24), parts.join("  "));
}
console.log(`wrote ${out}`);
process.exit(0);

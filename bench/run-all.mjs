// The full set, as committed in bench/results/: throughput matrix, latency, Redis cost per job,
// memory, then the report. Each script has its own hard deadline; this runner adds one per step.
// The scripts rotate the systems' order each rep; the full run has as many reps as systems in
// throughput, latency and roundtrips, so each system runs once in each place of a rep.
// Usage (from the repository root, after `npm run build` or `node bench/snapshot.mjs` +
// CHICORY_DIST=.tmp/bench-dist): node bench/run-all.mjs [--quick]
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import { parseArgs } from "./lib/common.mjs";

const a = parseArgs();
const dir = a.dir || "bench/results";
const quick = Boolean(a.quick);
const steps = [
  [
    "throughput.mjs",
    quick
      ? ["--reps=1", "--workers=2", "--batches=1024,4096"]
      : [
          "--reps=5",
          "--workers=1,2",
          "--batches=1024,4096,16384",
          "--skip=cpu_bound:1024,io_bound:1024",
          "--systems=chicory,chicory+prefetch,bullmq,bare-ioredis,beequeue",
        ],
    45,
  ],
  ["latency.mjs", quick ? ["--jobs=300", "--reps=1", "--warmup=1000"] : ["--jobs=1000", "--reps=4"], 15],
  ["roundtrips.mjs", quick ? ["--n=1024", "--reps=1"] : ["--n=4096", "--reps=4", "--monitor", "--monitor-n=1024"], 12],
  ["memory.mjs", quick ? ["--jobs=10000", "--reps=1"] : ["--jobs=100000", "--reps=2"], 15],
];
const snap = process.env.CHICORY_DIST ? `${process.env.CHICORY_DIST}/SNAPSHOT.json` : null;
fs.mkdirSync(dir, { recursive: true });
if (snap && fs.existsSync(snap)) fs.copyFileSync(snap, `${dir}/snapshot.json`);
const name = (s) => s.replace(".mjs", ".json");
let current = null;
let stopped = false;
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.removeAllListeners(sig);
  process.once(sig, () => {
    stopped = true;
    if (current && current.exitCode === null) current.kill("SIGTERM"); // the step kills its own workers
  });
}
for (const [script, args, minutes] of steps) {
  if (stopped) break;
  console.log(`\n=== ${script} ${args.join(" ")}`);
  current = spawn(process.execPath, [`bench/${script}`, ...args, `--out=${dir}/${name(script)}`], { stdio: "inherit" });
  const child = current;
  const timer = setTimeout(() => child.kill("SIGTERM"), (minutes + 1) * 60000);
  const code = await new Promise((res) => child.once("exit", (c, sig) => res(c ?? sig)));
  clearTimeout(timer);
  if (code !== 0) console.error(`!! ${script} exited with ${code}`);
}
if (stopped) process.exit(130);
const rep = spawnSync(process.execPath, ["bench/report.mjs", `--dir=${dir}`], { encoding: "utf8" });
fs.writeFileSync(`${dir}/tables.md`, rep.stdout);
console.log(rep.stdout);
process.exit(0);

// Worker-level benchmark of the embedded default (SQLite broker + SQLite backend):
// - throughput: 10,000 trivial jobs (`delay()` each, then `get()` each) drained by 2 worker
//   processes started through the CLI (`chicory worker`, concurrency 32);
// - latency: on an idle queue, time from `delay()` to the handler starting in the other
//   process (the handler returns Date.now()), 100 samples with idle gaps.
// Run: npm run build && node bench/sqlite-worker.mjs [--jobs=10000] [--workers=2]
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const arg = (name, fallback) => {
  const found = process.argv.find((a) => a.startsWith(`--${name}=`));
  return found ? Number(found.split("=")[1]) : fallback;
};
const JOBS = arg("jobs", 10_000);
const WORKERS = arg("workers", 2);
const dir = mkdtempSync(join(tmpdir(), "chicory-bench-sqlite-"));
process.env.CHICORY_BROKER_URL = `sqlite:${join(dir, "bench.db")}`;
const cli = fileURLToPath(new URL("../dist/cli/main.js", import.meta.url));
const appPath = fileURLToPath(new URL("./fixtures/sqlite-app.mjs", import.meta.url));
const deadline = setTimeout(() => {
  console.error("bench: deadline reached");
  process.exit(1);
}, 300_000);

const { app, noop, stamp } = await import("./fixtures/sqlite-app.mjs");
await app.connect();
const children = Array.from({ length: WORKERS }, () =>
  spawn(process.execPath, [cli, "worker", appPath, "-c", "32", "--log-level", "ERROR"], {
    stdio: "ignore",
    env: process.env,
  }),
);
try {
  // Warm up: wait until every worker took part.
  await Promise.all(Array.from({ length: 64 }, async (_, i) => (await noop.delay(i)).get({ timeout: 60 })));

  const t0 = performance.now();
  const results = await Promise.all(Array.from({ length: JOBS }, (_, i) => noop.delay(i)));
  const enqueued = performance.now();
  await Promise.all(results.map((r) => r.get({ timeout: 120, pollInterval: 0.05 })));
  const t1 = performance.now();

  const latencies = [];
  for (let i = 0; i < 100; i++) {
    await new Promise((r) => setTimeout(r, 30 + (i % 5) * 20)); // let consumers go idle
    const sent = Date.now();
    const startedAt = await (await stamp.delay()).get({ timeout: 10, pollInterval: 0.01 });
    latencies.push(startedAt - sent);
  }
  latencies.sort((a, b) => a - b);
  const pct = (p) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))];
  console.log(
    JSON.stringify(
      {
        jobs: JOBS,
        workers: WORKERS,
        enqueueSeconds: +((enqueued - t0) / 1000).toFixed(2),
        totalSeconds: +((t1 - t0) / 1000).toFixed(2),
        jobsPerSecond: Math.round(JOBS / ((t1 - t0) / 1000)),
        startLatencyMs: { p50: pct(50), p95: pct(95), p99: pct(99), max: latencies.at(-1) },
      },
      null,
      2,
    ),
  );
} finally {
  clearTimeout(deadline);
  for (const child of children) child.kill("SIGTERM");
  await Promise.all(children.map((c) => new Promise((r) => (c.exitCode === null ? c.once("exit", r) : r()))));
  await app.disconnect();
  rmSync(dir, { recursive: true, force: true });
}

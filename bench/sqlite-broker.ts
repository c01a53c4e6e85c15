/**
 * SQLite broker micro-benchmark (broker level, no worker):
 * - latency: an idle consumer in another process picks up a job published here
 *   (publish-to-fetch time, 60 samples with idle gaps so the consumer has backed off);
 * - throughput: 10,000 trivial jobs published one INSERT each, then drained by 2 consumer
 *   processes (fetch up to 16, ack each).
 *
 * Run: `node --import tsx bench/sqlite-broker.ts` (prints JSON).
 */
import { spawn } from "node:child_process";
import { rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { SqliteBroker } from "../src/brokers/sqlite/index.js";

const SELF = fileURLToPath(import.meta.url);
const QUEUE = "bench";

interface Child {
  lines: AsyncIterable<string>;
  done: Promise<void>;
  go(): void;
}

function child(mode: string, path: string): Child {
  const proc = spawn(process.execPath, ["--import", "tsx", SELF, mode, path], { stdio: ["pipe", "pipe", "inherit"] });
  const done = new Promise<void>((resolve) => proc.once("close", () => resolve()));
  return { lines: createInterface({ input: proc.stdout }), done, go: () => proc.stdin.end("go\n") };
}

/** Resolves when the parent writes a line on stdin. */
function waitForGo(): Promise<void> {
  return new Promise((resolve) => process.stdin.once("data", () => resolve()));
}

/** Child: prints the latency of each job (now - published timestamp in the body). */
async function latencyConsumer(path: string): Promise<void> {
  const broker = new SqliteBroker({ path });
  await broker.connect();
  const consumer = broker.consumer({ queues: [QUEUE], consumerId: `lat-${process.pid}` });
  process.stdout.write("ready\n");
  for (;;) {
    for (const d of await consumer.fetch(1, AbortSignal.timeout(5000))) {
      if (d.body === "stop") {
        await d.ack();
        await broker.disconnect();
        return;
      }
      process.stdout.write(`${performance.timeOrigin + performance.now() - Number(d.body)}\n`);
      await d.ack();
    }
  }
}

/** Child: drains the queue, prints how many it processed. */
async function drainConsumer(path: string): Promise<void> {
  const broker = new SqliteBroker({ path });
  await broker.connect();
  const consumer = broker.consumer({ queues: [QUEUE], consumerId: `drain-${process.pid}` });
  process.stdout.write("ready\n");
  await waitForGo();
  let count = 0;
  for (;;) {
    const batch = await consumer.fetch(16, AbortSignal.timeout(500));
    for (const d of batch) await d.ack();
    count += batch.length;
    if (batch.length === 0 && (await broker.getQueueSize(QUEUE)) === 0) break;
  }
  process.stdout.write(`${count}\n`);
  await broker.disconnect();
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] ?? Number.NaN;
}

async function main(): Promise<void> {
  const [mode, childPath] = process.argv.slice(2);
  if (mode === "latency-child" && childPath) return latencyConsumer(childPath);
  if (mode === "drain-child" && childPath) return drainConsumer(childPath);

  const path = join(tmpdir(), `chicory-bench-${process.pid}.db`);
  const broker = new SqliteBroker({ path });
  await broker.connect();
  try {
    // latency
    const lat = child("latency-child", path);
    const it = lat.lines[Symbol.asyncIterator]();
    await it.next(); // ready
    const samples: number[] = [];
    for (let i = 0; i < 60; i++) {
      await new Promise((r) => setTimeout(r, 100 + Math.random() * 150));
      await broker.publish(QUEUE, { id: `l${i}`, body: String(performance.timeOrigin + performance.now()) });
      samples.push(Number((await it.next()).value));
    }
    await broker.publish(QUEUE, { id: "stop", body: "stop" });
    lat.go();
    await lat.done;
    samples.sort((a, b) => a - b);

    // throughput
    const jobs = 10_000;
    const publishStart = performance.now();
    for (let i = 0; i < jobs; i++) await broker.publish(QUEUE, { id: `t${i}`, body: `{"i":${i}}` });
    const publishMs = performance.now() - publishStart;
    const drains = [child("drain-child", path), child("drain-child", path)];
    const iters = drains.map((d) => d.lines[Symbol.asyncIterator]());
    await Promise.all(iters.map((i) => i.next())); // both ready
    const drainStart = performance.now();
    for (const d of drains) d.go();
    const counts = await Promise.all(iters.map(async (i) => Number((await i.next()).value)));
    const drainMs = performance.now() - drainStart;
    await Promise.all(drains.map((d) => d.done));

    console.log(
      JSON.stringify(
        {
          latencyMs: { p50: percentile(samples, 50), p95: percentile(samples, 95), max: samples.at(-1) },
          publish: { jobs, ms: Math.round(publishMs), jobsPerSec: Math.round((jobs / publishMs) * 1000) },
          drain2Processes: {
            jobs: counts.reduce((a, b) => a + b, 0),
            perProcess: counts,
            ms: Math.round(drainMs),
            jobsPerSec: Math.round((jobs / drainMs) * 1000),
          },
        },
        null,
        2,
      ),
    );
  } finally {
    await broker.disconnect();
    for (const suffix of ["", "-wal", "-shm"]) rmSync(`${path}${suffix}`, { force: true });
  }
}

await main();

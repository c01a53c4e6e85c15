// `chicory dlq replay --all`: dead letters replayed per second, on Redis or RabbitMQ.
//
// A worker (in this process) dead-letters N jobs of a failing task (each leaves a DLQ entry
// and a DEAD_LETTERED record, which a replay reads and deletes); then the CLI replays them
// all, timed (process start included); then checks the queue holds N messages, the DLQ none.
//
//   node bench/dlq-replay.mjs                    (Redis DB 2 by default, flushed; N=20000)
//   BROKER=rabbitmq N=1000 node bench/dlq-replay.mjs   (amqp://guest:guest@127.0.0.1:5672,
//                                                results on Redis DB 2)
//   PROFILE=dir node bench/dlq-replay.mjs        (the CLI process runs with --cpu-prof into dir)
//   CHICORY_DIST=.tmp/bench-dist node bench/dlq-replay.mjs   (another build)
//   UNREPLAYABLE=20000 N=1000 node bench/dlq-replay.mjs  (first K entries are bodies that are
//                                                not messages: the CLI leaves them and lists them)
import { spawnSync } from "node:child_process";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { REDIS_URL, ROOT } from "./lib/common.mjs";
import { flushBenchDb } from "./lib/redis.mjs";

const BROKER = process.env.BROKER || "redis";
const N = Number(process.env.N || (BROKER === "rabbitmq" ? 1000 : 20000));
const UNREPLAYABLE = Number(process.env.UNREPLAYABLE || 0);
const QUEUE = `replaybench-${process.pid}`; // RabbitMQ: its queues are deleted at the end
process.env.BENCH_QUEUE = QUEUE;
const DIST = process.env.CHICORY_DIST ? path.resolve(process.env.CHICORY_DIST) : path.join(ROOT, "..", "dist");
process.env.CHICORY_DIST = DIST;
process.env.CHICORY_BROKER_URL = BROKER === "rabbitmq" ? "amqp://guest:guest@127.0.0.1:5672" : REDIS_URL;
process.env.CHICORY_BACKEND_URL = REDIS_URL;

await flushBenchDb();
const appModule = path.join(ROOT, "fixtures", "dlq-app.mjs");
const { app, fail } = await import(pathToFileURL(appModule).href);
const { Worker, silentLogger } = await import(pathToFileURL(path.join(DIST, "index.js")).href);
await app.connect();
await app.broker.purgeQueue(QUEUE);
await app.broker.purgeDlq(QUEUE);

process.env.BENCH_FAIL = "1";
const worker = new Worker(app, { queue: QUEUE, concurrency: 64, useDeadLetterQueue: true, logger: silentLogger });
await worker.start();
// bodies that are not messages: the worker dead-letters them (decode_error), first in the DLQ
for (let sent = 0; sent < UNREPLAYABLE; sent += 1000) {
  const ids = Array.from({ length: Math.min(1000, UNREPLAYABLE - sent) }, (_, i) => `bad-${sent + i}`);
  await Promise.all(ids.map((id) => app.broker.publish(QUEUE, { id, body: `{not a message ${id}` })));
}
while ((await app.broker.getDlqCount(QUEUE)) < UNREPLAYABLE) await new Promise((r) => setTimeout(r, 100));
for (let sent = 0; sent < N; sent += 1000) {
  await Promise.all(Array.from({ length: Math.min(1000, N - sent) }, (_, i) => fail.delay(sent + i)));
}
while ((await app.broker.getDlqCount(QUEUE)) < UNREPLAYABLE + N) await new Promise((r) => setTimeout(r, 100));
await worker.stop(); // disconnects the app
await app.connect();

const cli = path.join(DIST, "cli", "main.js");
const profile = process.env.PROFILE ? ["--cpu-prof", `--cpu-prof-dir=${process.env.PROFILE}`] : [];
const t0 = performance.now();
const run = spawnSync(process.execPath, [...profile, cli, "dlq", "replay", appModule, "--all", "-q", QUEUE], {
  env: { ...process.env, BENCH_FAIL: "0" },
  encoding: "utf8",
  timeout: 600_000,
  maxBuffer: 1 << 30, // every entry left is a line
});
const seconds = (performance.now() - t0) / 1000;
const queued = await app.broker.getQueueSize(QUEUE);
const dead = await app.broker.getDlqCount(QUEUE);
await app.broker.purgeQueue(QUEUE);
await app.disconnect();
await flushBenchDb();
if (BROKER === "rabbitmq") await deleteRabbitMqQueues();
// entries left behind make the command exit 1
if (run.status !== (UNREPLAYABLE > 0 ? 1 : 0) || queued !== N || dead !== UNREPLAYABLE) {
  console.error(run.stdout, run.stderr);
  console.error({ status: run.status, queued, dead });
  process.exit(1);
}
console.log(
  `dlq replay --all on ${BROKER}: ${N} entries` +
    (UNREPLAYABLE > 0 ? ` after ${UNREPLAYABLE} unreplayable ones (left)` : "") +
    ` in ${seconds.toFixed(2)} s, ${Math.round(N / seconds)} entries/s (process start included)`,
);

/** Deletes the run's RabbitMQ queues (work queue, DLQ). */
async function deleteRabbitMqQueues() {
  const amqp = await import("amqplib");
  const connection = await amqp.connect(process.env.CHICORY_BROKER_URL);
  try {
    const channel = await connection.createChannel();
    for (const name of [`chicory.${QUEUE}`, `chicory.${QUEUE}.dlq`]) await channel.deleteQueue(name);
  } finally {
    await connection.close();
  }
}

/**
 * L1 on RabbitMQ — a large backlog drained by 2 worker processes, with bounds (RELIABILITY §0
 * item 4, §3.7). The model is load-backlog.test.ts (Redis). Runs on the shared RabbitMQ under a
 * unique queue prefix (other tests use other prefixes); the books live in an own redis-server.
 *
 * 1. Idle RSS: 2 probe workers (same app and options, under another prefix) idle for 2 s; their
 *    VmRSS is the idle RSS. Their queues are deleted.
 * 2. N trivial `tick(i)` jobs are enqueued with `send()` (windows of 2,000 concurrent publishes,
 *    each confirmed by RabbitMQ); the work queue then holds N ready messages.
 * 3. 2 `chicory worker -c 32` processes drain them (no result backend; prefetch follows the
 *    concurrency: 32). Sampled back to back (`RabbitSampler`; a cycle is one `rabbitmqctl
 *    list_channels`, ~0.5-2 s under this load): each worker's VmRSS, the work queue's ready
 *    count, and each worker's unacknowledged messages and prefetch (its channels, found through
 *    its TCP connections).
 * Books: `tick(i)` sets bit i of a bitmap (a bit already set counts as a duplicate) and INCRs a
 * counter before the worker acks, so BITCOUNT == done == N and dup == 0 prove "each job exactly
 * once" (no faults here).
 * Pass: the books; at every sample, unacknowledged ≤ prefetch (32) per worker and ≤ 2 × 32 for
 * the queue (stricter than "in flight ≤ concurrency + prefetch" per worker), and each worker's
 * prefetch equals its concurrency; at least 2 samples while both consumers drain a non-empty
 * queue (not checked vacuously; a sample costs seconds, and the bound itself is pinned down by
 * test/integration/rabbitmq/rabbitmq-prefetch.test.ts); RSS ≤ idle + 150 MiB at every sample;
 * each worker ran ≥ 20 % of the jobs; clean exits, no error lines; after the drain the work
 * queue and its DLQ hold 0 messages, the broker declared only those 2 queues and no exchange;
 * after the test deletes them, no queue, exchange or consumer under the prefix is left.
 * CI tier: 100,000 jobs; full tier (`CHICORY_RELIABILITY_FULL=1`): 250,000.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import { SERVICES, skipUnless, uniqueName } from "../helpers/services.js";
import { freePort, OwnRedis } from "./infra/redis-server.js";
import {
  deleteQueues,
  enqueueTicksRabbit,
  exchangesWith,
  queuesUnder,
  type RabbitSample,
  RabbitSampler,
  rabbitmqctl,
} from "./load/load-rabbitmq.js";
import { waitUntil } from "./load/load-redis.js";
import {
  CLI,
  FULL,
  killWorkers,
  round,
  rssMiB,
  startWorker,
  stopWorker,
  type WorkerProcess,
  writeReport,
} from "./load/load-workers.js";

const JOBS = FULL ? 250_000 : 100_000;
const WORKERS = 2;
const CONCURRENCY = 32;
const RSS_HEADROOM_MIB = 150;
const DRAIN_DEADLINE_MS = FULL ? 20 * 60_000 : 180_000;

const skipRabbit = await skipUnless("rabbitmq");

/** A sample taken while both workers' consuming channels were seen and the queue was not empty. */
function bothWhileDraining(s: RabbitSample): boolean {
  return s.prefetchPerWorker.every((p) => p !== null) && s.prefetchPerWorker.length === WORKERS && s.ready > 0;
}
const hasTools =
  spawnSync("redis-server", ["--version"]).status === 0 && spawnSync("rabbitmqctl", ["--help"]).status !== null;

describe.skipIf(skipRabbit || !hasTools)("L1 backlog drain with bounds on RabbitMQ (shared node)", () => {
  it(
    `drains ${JOBS.toLocaleString("en")} queued jobs with 2 workers, in-flight and memory bounded, nothing left behind`,
    async () => {
      if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` first`);
      const dir = mkdtempSync(join(tmpdir(), "chicory-load-rabbitmq-"));
      const prefix = uniqueName("ldrq");
      const probePrefix = `${prefix}-probe`;
      const workQueue = `${prefix}.default`;
      const dlq = `${prefix}.default.dlq`;
      const booksServer = new OwnRedis(await freePort(), dir, "none");
      const workers: WorkerProcess[] = [];
      let books: Redis | undefined;
      let sampler: RabbitSampler | undefined;
      let passed = false;
      try {
        await booksServer.start();
        const redis = new Redis(booksServer.url, { connectionName: "load-test-books-admin" });
        books = redis;
        const keys = `${prefix}:books`;
        const env = (queuePrefix: string): Record<string, string> => ({
          CHICORY_BROKER_URL: SERVICES.rabbitmq,
          CHICORY_BROKER_RABBITMQ_PREFIX: queuePrefix,
          CHICORY_TEST_LOAD_KEYS: keys,
          CHICORY_TEST_LOAD_REDIS_URL: booksServer.url,
        });

        // 1. Idle RSS of 2 probe workers on their own prefix (their queues deleted afterwards).
        const probes = await Promise.all(
          Array.from({ length: WORKERS }, (_, i) => startWorker(`probe${i + 1}`, CONCURRENCY, env(probePrefix), dir)),
        );
        workers.push(...probes);
        await sleep(1250);
        const idleSamples: number[] = [];
        for (let i = 0; i < 4; i++) {
          for (const p of probes) idleSamples.push(rssMiB(p.pid) ?? 0);
          await sleep(250);
        }
        const idleRss = Math.max(...idleSamples);
        await Promise.all(probes.map((p) => stopWorker(p)));
        for (const p of probes) expect(p.exit, `${p.name} exit`).toEqual({ code: 0, signal: null });
        await deleteQueues(
          SERVICES.rabbitmq,
          (await queuesUnder(probePrefix)).map((q) => q.name),
        );

        // 2. The backlog.
        const enqueueMs = await enqueueTicksRabbit(SERVICES.rabbitmq, prefix, JOBS);
        let backlog = await queuesUnder(prefix);
        await waitUntil("the backlog to be counted", 10_000, async () => {
          backlog = await queuesUnder(prefix);
          return backlog.find((q) => q.name === workQueue)?.ready === JOBS;
        });
        const backlogQueueMemory = backlog.find((q) => q.name === workQueue)?.memory ?? 0;

        // 3. Drain with 2 worker processes, sampled.
        const pids: number[] = [];
        sampler = new RabbitSampler(SERVICES.rabbitmq, workQueue, pids);
        sampler.start();
        // a warm sampler (its first rabbitmqctl call done) samples as soon as the workers consume
        await sampler.ready();
        const drainStart = Date.now();
        let doneAt = 0;
        const started = await Promise.all(
          Array.from({ length: WORKERS }, (_, i) => startWorker(`worker${i + 1}`, CONCURRENCY, env(prefix), dir)),
        );
        for (const w of started) {
          workers.push(w);
          pids.push(w.pid);
        }
        await waitUntil(
          "every job to run",
          DRAIN_DEADLINE_MS,
          async () => {
            const gone = started.find((w) => w.exit !== null);
            if (gone)
              throw new Error(`${gone.name} exited early: ${JSON.stringify(gone.exit)} ${gone.errors.join("\n")}`);
            if (Number(await redis.get(`${keys}:done`)) < JOBS) return false;
            doneAt = Date.now();
            return true;
          },
          250,
        );
        let afterDrain = await queuesUnder(prefix);
        await waitUntil("the last acks", 15_000, async () => {
          afterDrain = await queuesUnder(prefix);
          return afterDrain.every((q) => q.messages === 0);
        });
        const drainMs = doneAt - drainStart;
        await sampler.stop();
        await Promise.all(started.map((w) => stopWorker(w)));

        const done = Number(await redis.get(`${keys}:done`));
        const dup = Number(await redis.get(`${keys}:dup`));
        const seen = await redis.bitcount(`${keys}:seen`);
        const declared = afterDrain.map((q) => q.name);
        const exchanges = await exchangesWith(prefix);

        // Cleanup by the test (the product keeps durable queues by design), then nothing is left.
        await deleteQueues(SERVICES.rabbitmq, declared);
        const leftQueues = (await queuesUnder(prefix)).map((q) => q.name);
        const leftProbeQueues = (await queuesUnder(probePrefix)).map((q) => q.name);
        const leftExchanges = await exchangesWith(prefix);
        const leftConsumers = (await rabbitmqctl(["list_consumers", "queue_name"])).filter((c) =>
          String(c.queue_name).startsWith(prefix),
        ).length;

        const samples = sampler.samples;
        writeReport("load-backlog-rabbitmq", {
          jobs: JOBS,
          workers: WORKERS,
          concurrency: CONCURRENCY,
          enqueueSeconds: round(enqueueMs / 1000),
          enqueuePerSecond: Math.round(JOBS / (enqueueMs / 1000)),
          drainSeconds: round(drainMs / 1000),
          jobsPerSecond: Math.round(JOBS / (drainMs / 1000)),
          books: { done, seen, dup },
          processedPerWorker: started.map((w) => w.processed),
          idleRssMiB: round(idleRss),
          peakRssMiB: started.map((_, i) => round(sampler?.peakRss(i) ?? 0)),
          rssBoundMiB: round(idleRss + RSS_HEADROOM_MIB),
          samples: samples.length,
          samplesWhileDraining: samples.filter(bothWhileDraining).length,
          samplerErrors: sampler.errors,
          samplerCallMs: sampler.callMs,
          timeline: samples.map((x) => [
            round(x.t / 1000),
            x.ready,
            x.unacked,
            x.unackedPerWorker.join("+"),
            x.rss.map((r) => round(r ?? 0)).join("/"),
          ]),
          prefetchPerWorker: samples.find(bothWhileDraining)?.prefetchPerWorker,
          peakUnacked: sampler.peakUnacked,
          peakUnackedPerWorker: sampler.peakUnackedPerWorker,
          unackedBound: WORKERS * CONCURRENCY,
          peakReady: Math.max(0, ...samples.map((s) => s.ready)),
          backlogQueueMemoryBytes: backlogQueueMemory,
          queuesAfterDrain: afterDrain,
          exchangesDeclared: exchanges,
          leftQueues,
          leftProbeQueues,
          leftExchanges,
          leftConsumers,
          workerWarnings: started.map((w) => w.warnings),
          workerErrors: started.flatMap((w) => w.errors),
          exits: started.map((w) => w.exit),
        });

        expect({ done, seen, dup }).toEqual({ done: JOBS, seen: JOBS, dup: 0 });
        expect(
          samples.filter(bothWhileDraining).length,
          `samples with both consumers on a non-empty queue (of ${samples.length}; list_channels took ${sampler.callMs.join(", ")} ms; drain ${drainMs} ms)`,
        ).toBeGreaterThanOrEqual(2);
        for (const s of samples) {
          for (const p of s.prefetchPerWorker)
            if (p !== null) expect(p, "prefetch of a consuming channel").toBe(CONCURRENCY);
        }
        const unackedOver = samples.filter(
          (s) => s.unacked > WORKERS * CONCURRENCY || s.unackedPerWorker.some((n) => n !== null && n > CONCURRENCY),
        );
        expect(unackedOver.slice(0, 5), "samples with in-flight over the prefetch bound").toEqual([]);
        const rssOver = samples.filter((s) => s.rss.some((r) => r !== null && r > idleRss + RSS_HEADROOM_MIB));
        expect(rssOver.slice(0, 5), "samples with RSS over idle + 150 MiB").toEqual([]);
        for (const w of started) {
          expect(w.exit, `${w.name} exit`).toEqual({ code: 0, signal: null });
          expect(w.errors, `${w.name} error lines`).toEqual([]);
          expect(w.processed ?? 0, `${w.name} share of the jobs`).toBeGreaterThanOrEqual(JOBS * 0.2);
        }
        expect(afterDrain.map((q) => [q.name, q.messages])).toEqual([
          [workQueue, 0],
          [dlq, 0],
        ]);
        expect(exchanges, "exchanges declared under the prefix").toEqual([]);
        expect({ leftQueues, leftProbeQueues, leftExchanges, leftConsumers }).toEqual({
          leftQueues: [],
          leftProbeQueues: [],
          leftExchanges: [],
          leftConsumers: 0,
        });
        passed = true;
      } finally {
        await sampler?.stop().catch(() => undefined);
        await killWorkers(workers);
        const leftover = [
          ...(await queuesUnder(prefix).catch(() => [])),
          ...(await queuesUnder(probePrefix).catch(() => [])),
        ].map((q) => q.name);
        await deleteQueues(SERVICES.rabbitmq, leftover).catch((error: unknown) =>
          console.error(`[reliability] load-backlog-rabbitmq: could not delete ${leftover.join(", ")}: ${error}`),
        );
        books?.disconnect();
        await booksServer.kill();
        if (passed) rmSync(dir, { recursive: true, force: true });
        else console.error(`[reliability] load-backlog-rabbitmq: logs kept in ${dir}`);
      }
    },
    DRAIN_DEADLINE_MS + 120_000,
  );
});

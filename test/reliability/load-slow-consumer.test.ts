/**
 * L2 — slow consumer, fast producer (RELIABILITY §3.7 L2). Own redis-server (no persistence,
 * `noeviction`).
 *
 * One `chicory worker -c 4` process (built CLI, ledger-load-app.mjs, `--expose-gc`) runs
 * `slow(16)` jobs (sleep 16 ms: ~200 jobs/s, measured). The test process enqueues them at
 * {@link RATE} jobs/s (paced on the clock, sends not awaited one by one) for {@link PHASE_A_MS}
 * (CI 20 s, full tier 60 s) with no backlog limit; then a second producer with
 * `CHICORY_BROKER_REDIS_MAX_STREAM_LENGTH` = backlog + {@link HEADROOM} goes on at the same rate
 * for {@link PHASE_B_MS}.
 * Pass: the producer is not slowed by the worker (achieved rate ≥ 90 % of the target, no
 * failed publish in phase A); the backlog grows (XLEN sampled every second, reported); the
 * worker's heap after a full GC stays flat (least-squares slope) and its RSS within 150 MiB of
 * its first sample; in phase B every rejected publish says `queue "default" is full (…
 * MAX_STREAM_LENGTH)` (no other error), XLEN never exceeds the limit, and publishes are accepted
 * only as fast as the worker frees room; at the end every confirmed job is either in the ledger
 * (ran) or still in the stream, and nothing else is (a rejected publish left nothing behind).
 * Then the queue is purged (`purgeQueue`: waiting messages, the few entries the stopped worker
 * had fetched and handed back included) and holds nothing.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import { Chicory, ChicoryError } from "../../src/index.js";
import { readLedger } from "./harness/ledger.js";
import { freePort, OwnRedis } from "./infra/redis-server.js";
import { pendingCount, Sampler } from "./load/load-redis.js";
import {
  CLI,
  FULL,
  killWorkers,
  quantile,
  round,
  slope,
  startWorker,
  stopWorker,
  type WorkerProcess,
  writeReport,
} from "./load/load-workers.js";

const APP = "test/reliability/load/ledger-load-app.mjs";
const RATE = 2000;
const PHASE_A_MS = FULL ? 60_000 : 20_000;
const PHASE_B_MS = 3000;
/** Room left in the stream when the limit is switched on (filled in ~0.6 s at 2,000 − 200 jobs/s). */
const HEADROOM = 1000;
const TASK_MS = 16;
/** Worker concurrency: 4 slots × (16 ms + overhead) ≈ 200 jobs/s. */
const CONCURRENCY = 4;
/** Producer rate that must be achieved, as a fraction of {@link RATE}. */
const RATE_FLOOR = 0.9;
/** Heap-after-GC growth allowed, MiB/min (least squares after the first third). */
const HEAP_SLOPE_LIMIT = FULL ? 1 : 2;
const HEAP_EVERY_MS = 1000;
const RSS_GROWTH_LIMIT_MIB = 150;
const PREFIX = "slowc";
const GROUP = "chicory-workers";
const STREAM = `${PREFIX}:stream:{default}`;
const FULL_MESSAGE =
  /^QueueFullError BROKER_CONNECTION: queue "default" is full \(\d+ messages, CHICORY_BROKER_REDIS_MAX_STREAM_LENGTH\): message not published \(task [\w.]+, id [\w-]+\)$/;

const hasRedisServer = spawnSync("redis-server", ["--version"]).status === 0;

interface Phase {
  readonly sent: number;
  readonly confirmed: string[];
  readonly rejected: string[];
  readonly ms: number;
  readonly publishMs: number[];
  /** Epoch ms of the first rejection. */
  readonly firstRejectAt: number | null;
}

/** Enqueues `slow(TASK_MS)` at RATE jobs/s for `ms` through `app`. */
async function produce(app: Chicory, ms: number): Promise<Phase> {
  const slow = app.task(
    { name: "slow", deliveryMode: "at_least_once", ignoreResult: true },
    async (_ms: number) => null,
  );
  const confirmed: string[] = [];
  const rejected: string[] = [];
  const publishMs: number[] = [];
  let firstRejectAt: number | null = null;
  const inFlight = new Set<Promise<void>>();
  const t0 = Date.now();
  let sent = 0;
  while (Date.now() - t0 < ms) {
    const due = Math.floor(((Date.now() - t0) * RATE) / 1000) - sent;
    for (let k = 0; k < due; k++) {
      const at = Date.now();
      const p = slow.applyAsync([TASK_MS]).then(
        (result) => {
          confirmed.push(result.taskId);
          publishMs.push(Date.now() - at);
        },
        (error: unknown) => {
          firstRejectAt ??= Date.now();
          rejected.push(
            error instanceof ChicoryError ? `${error.name} ${error.code}: ${error.message}` : String(error),
          );
        },
      );
      inFlight.add(p);
      void p.finally(() => inFlight.delete(p));
    }
    sent += Math.max(0, due);
    await sleep(5);
  }
  await Promise.all(inFlight);
  return { sent, confirmed, rejected, ms: Date.now() - t0, publishMs: publishMs.sort((a, b) => a - b), firstRejectAt };
}

describe.skipIf(!hasRedisServer)("L2 slow consumer, fast producer (own redis-server)", () => {
  it(
    `absorbs ${RATE} jobs/s for ${PHASE_A_MS / 1000} s with a ~200 jobs/s worker, then rejects at the backlog limit`,
    async () => {
      if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` first`);
      const dir = mkdtempSync(join(tmpdir(), "chicory-load-slow-"));
      const ledgerDir = join(dir, "ledger");
      mkdirSync(ledgerDir);
      const server = new OwnRedis(await freePort(), dir, "none");
      const workers: WorkerProcess[] = [];
      let admin: Redis | undefined;
      let sampler: Sampler | undefined;
      const apps: Chicory[] = [];
      let passed = false;
      try {
        await server.start();
        const redis = new Redis(server.url, { connectionName: "slow-consumer-admin" });
        admin = redis;
        const worker = await startWorker(
          "worker1",
          CONCURRENCY,
          {
            CHICORY_BROKER_URL: server.url,
            CHICORY_BROKER_REDIS_KEY_PREFIX: PREFIX,
            CHICORY_BACKEND_REDIS_KEY_PREFIX: PREFIX,
            CHICORY_TEST_LEDGER_DIR: ledgerDir,
            CHICORY_TEST_HEAP_EVERY_MS: String(HEAP_EVERY_MS),
          },
          dir,
          [],
          ["--expose-gc"],
          APP,
        );
        workers.push(worker);
        sampler = new Sampler(redis, STREAM, GROUP, [worker.pid], 1000);

        const producerEnv = { CHICORY_BROKER_REDIS_KEY_PREFIX: PREFIX };
        const unlimited = new Chicory({ broker: server.url, backend: null, config: { env: producerEnv } });
        apps.push(unlimited);
        await unlimited.connect();

        // Phase A: no limit.
        sampler.start();
        const t0 = Date.now();
        const a = await produce(unlimited, PHASE_A_MS);
        const xlenAfterA = await redis.xlen(STREAM);
        const ranDuringA = readLedger(ledgerDir).startsById.size;

        // Phase B: backlog limit = current backlog + HEADROOM.
        const limit = xlenAfterA + HEADROOM;
        const limited = new Chicory({
          broker: server.url,
          backend: null,
          config: { env: { ...producerEnv, CHICORY_BROKER_REDIS_MAX_STREAM_LENGTH: String(limit) } },
        });
        apps.push(limited);
        await limited.connect();
        const tB = Date.now();
        // XLEN every 50 ms while phase B runs (the 1 s sampler is too coarse for it).
        const xlenDuringB: number[] = [];
        let bDone = false;
        const poll = (async () => {
          while (!bDone) {
            xlenDuringB.push(await redis.xlen(STREAM));
            await sleep(50);
          }
        })();
        const b = await produce(limited, PHASE_B_MS).finally(() => {
          bDone = true;
        });
        await poll;
        const bEnd = Date.now();
        await sleep(1000);
        await sampler.stop();
        await stopWorker(worker);

        // What is left: every confirmed job either ran (ledger) or is still in the stream.
        const ledger = readLedger(ledgerDir);
        const inStream = new Set<string>();
        let unreadable = 0;
        let cursor = "-";
        for (;;) {
          const batch = (await redis.xrange(STREAM, cursor, "+", "COUNT", 5000)) as Array<[string, string[]]>;
          for (const [entryId, fields] of batch) {
            // The task id is in the message body (field `data`).
            const data = fields[fields.indexOf("data") + 1];
            const id = data === undefined ? undefined : (JSON.parse(data) as { id?: unknown }).id;
            if (typeof id === "string") inStream.add(id);
            else unreadable++;
            cursor = `(${entryId}`;
          }
          if (batch.length < 5000) break;
        }
        const confirmed = new Set([...a.confirmed, ...b.confirmed]);
        const lost = [...confirmed].filter((id) => !inStream.has(id) && !ledger.startsById.has(id));
        const extra = [...inStream, ...ledger.startsById.keys()].filter((id) => !confirmed.has(id));
        const ranAndQueued = [...inStream].filter((id) => ledger.startsById.has(id)).length;
        const duplicates = [...ledger.startsById.values()].filter((s) => s.length > 1).length;
        const xlenBeforePurge = await redis.xlen(STREAM);
        // Entries the stopped worker had fetched but not started are back in the PEL, claimable by
        // the next worker: waiting, so purgeQueue deletes them too.
        const pendingBeforePurge = await pendingCount(redis, STREAM, GROUP);
        const purged = await unlimited.broker.purgeQueue("default");
        const xlenAfterPurge = await redis.xlen(STREAM);

        // Worker memory and rate.
        const samples = sampler.samples;
        const span = bEnd - t0;
        const heapWarm = worker.heap.filter(([at]) => at - t0 >= span / 3 && at <= bEnd);
        const heapSlope = slope(heapWarm) * 60_000;
        const rssFirst = samples[0]?.rss[0] ?? 0;
        const rssPeak = sampler.peakRss(0);
        const starts = ledger.entries.filter((e) => e.t >= t0 + 2000 && e.t <= t0 + PHASE_A_MS);
        const workerRate = starts.length / ((PHASE_A_MS - 2000) / 1000);
        const rejectedOther = b.rejected.filter((m) => !FULL_MESSAGE.test(m));

        writeReport("load-slow-consumer", {
          targetRate: RATE,
          taskMs: TASK_MS,
          concurrency: CONCURRENCY,
          phaseA: {
            seconds: PHASE_A_MS / 1000,
            sent: a.sent,
            confirmed: a.confirmed.length,
            failed: a.rejected.length,
            achievedRate: round(a.confirmed.length / (a.ms / 1000)),
            publishMs: { p50: quantile(a.publishMs, 0.5), p99: quantile(a.publishMs, 0.99), max: a.publishMs.at(-1) },
            ranByWorker: ranDuringA,
            xlenAtEnd: xlenAfterA,
          },
          workerRate: round(workerRate),
          xlenTimeline: samples.map((s) => [Math.round(s.t / 1000), s.xlen]),
          phaseB: {
            seconds: PHASE_B_MS / 1000,
            limit,
            sent: b.sent,
            accepted: b.confirmed.length,
            rejected: b.rejected.length,
            rejectedWithOtherMessage: rejectedOther.slice(0, 5),
            firstRejectionAfterMs: b.firstRejectAt === null ? null : b.firstRejectAt - tB,
            exampleMessage: b.rejected[0],
            xlenPolls: xlenDuringB.length,
            maxXlen: Math.max(0, ...xlenDuringB),
          },
          end: {
            confirmed: confirmed.size,
            ran: ledger.startsById.size,
            stillQueued: inStream.size,
            unreadableEntries: unreadable,
            lost: lost.length,
            extra: extra.length,
            ranAndStillQueued: ranAndQueued,
            duplicates,
            pendingBeforePurge,
            purged,
            xlenAfterPurge,
          },
          worker: {
            rssMiB: { first: round(rssFirst), last: round(samples.at(-1)?.rss[0] ?? 0), peak: round(rssPeak) },
            heapAfterGcMiB: {
              first: round(worker.heap[0]?.[1] ?? 0),
              last: round(worker.heap.at(-1)?.[1] ?? 0),
              samples: worker.heap.length,
            },
            heapSlopeMiBPerMin: round(heapSlope, 2),
            heapSlopeLimit: HEAP_SLOPE_LIMIT,
            warnings: worker.warnings,
            errors: worker.errors,
            exit: worker.exit,
          },
        });

        // Phase A: the producer is not slowed down; the backlog grows.
        expect(a.rejected, "failed publishes without a limit").toEqual([]);
        expect(a.confirmed.length / (a.ms / 1000), "achieved producer rate").toBeGreaterThanOrEqual(RATE * RATE_FLOOR);
        expect(xlenAfterA, "backlog after phase A").toBeGreaterThan(a.confirmed.length / 2);
        const xlens = samples.filter((s) => s.t <= PHASE_A_MS).map((s) => s.xlen);
        expect(xlens.at(-1) ?? 0, "backlog grows").toBeGreaterThan((xlens[1] ?? 0) + RATE);
        // The worker: slow next to the producer, flat memory, clean exit.
        expect(workerRate, "worker rate (jobs/s)").toBeGreaterThan(50);
        expect(workerRate, "worker rate (jobs/s)").toBeLessThan(RATE / 4);
        expect(heapWarm.length, "heap samples").toBeGreaterThanOrEqual(5);
        expect(heapSlope, "heap-after-GC slope (MiB/min)").toBeLessThan(HEAP_SLOPE_LIMIT);
        expect(rssPeak - rssFirst, "RSS growth (MiB)").toBeLessThan(RSS_GROWTH_LIMIT_MIB);
        expect(worker.exit).toEqual({ code: 0, signal: null });
        expect(worker.errors).toEqual([]);
        // Phase B: a clear "queue is full" error, never over the limit, nothing else.
        expect(b.rejected.length, "rejected publishes at the limit").toBeGreaterThan(0);
        expect(rejectedOther, "rejections with another message").toEqual([]);
        expect(Math.max(0, ...xlenDuringB), "XLEN during phase B").toBeLessThanOrEqual(limit);
        expect(xlenBeforePurge, "backlog at the end").toBeLessThanOrEqual(limit);
        // Accepted in phase B: the headroom plus what the worker freed meanwhile (it is the only room).
        expect(b.confirmed.length, "accepted at the limit").toBeLessThanOrEqual(
          HEADROOM + (PHASE_B_MS / 1000 + 1) * 400,
        );
        // Every confirmed job is accounted for; rejected publishes left nothing.
        expect(unreadable, "stream entries without a task id").toBe(0);
        expect(inStream.size, "task ids read from the stream").toBe(xlenBeforePurge);
        expect(lost, "confirmed jobs neither run nor queued").toEqual([]);
        expect(extra, "runs or entries of unconfirmed jobs").toEqual([]);
        expect(ranAndQueued, "jobs both run and still queued").toBe(0);
        expect(pendingBeforePurge, "entries returned by the stopped worker").toBeLessThanOrEqual(CONCURRENCY);
        // the entries the stopped worker gave back wait for the next worker: purged too
        expect(purged, "purged = waiting messages, given-back ones included").toBe(xlenBeforePurge);
        expect(xlenAfterPurge, "left after the purge").toBe(0);
        passed = true;
      } finally {
        await sampler?.stop().catch(() => undefined);
        for (const app of apps) await app.disconnect().catch(() => undefined);
        await killWorkers(workers);
        admin?.disconnect();
        await server.kill();
        if (passed) rmSync(dir, { recursive: true, force: true });
        else console.error(`[reliability] load-slow-consumer: logs kept in ${dir}`);
      }
    },
    PHASE_A_MS + 90_000,
  );
});

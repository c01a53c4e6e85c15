/**
 * L3 (bounded, no faults) — a soak at a steady rate with 2 worker processes (RELIABILITY §0
 * item 4, §3.7; issue 7 "Load and bounds"). Own redis-server (no persistence, `noeviction`).
 *
 * The test process enqueues `stamp()` jobs at a steady 200 jobs/s (paced on the clock, sends not
 * awaited one by one) and notes the time just before each `applyAsync`; the task returns
 * `Date.now()` when it starts, so `result − enqueuedAt` is the enqueue→start latency (one clock,
 * one machine). 2 `chicory worker -c 32` processes; every second: VmRSS of each, PEL, XLEN and
 * Redis `connected_clients`.
 * Pass: missing == 0 (every confirmed job SUCCESS); p99 latency < 1 s; PEL ≤ 2 workers × 2 × 32 (running + being stored and acked) at every
 * sample; heap after a full GC (workers run with `--expose-gc`; the app logs `heapUsed` after a
 * `gc()` every 2 s) grows by less than {@link HEAP_SLOPE_LIMIT} MiB/min per worker (least squares
 * over the samples after the first third of the run); RSS stays under its first sample + 150 MiB
 * (the L1 bound) and, in the full tier only, its slope is below {@link RSS_SLOPE_LIMIT} MiB/min
 * (over 60 s, V8 is still growing its heap in steps, so an RSS slope there says little:
 * measured anywhere from 1.7 to 17.5 MiB/min with no leak); `connected_clients` within ±20 % of its median
 * while everything runs; clean exits on SIGTERM, no error lines (an unhandled rejection would
 * print one and exit 1).
 * CI tier: 60 s; full tier (`CHICORY_RELIABILITY_FULL=1`): 5 minutes.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import { Chicory } from "../../src/index.js";
import { freePort, OwnRedis } from "./infra/redis-server.js";
import { pendingCount, Sampler, waitUntil } from "./load/load-redis.js";
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

const DURATION_MS = FULL ? 5 * 60_000 : 60_000;
const RATE = 200;
const WORKERS = 2;
const CONCURRENCY = 32;
/**
 * Unacknowledged messages one worker may hold: `concurrency` running plus at most `concurrency`
 * whose outcome is being stored and acknowledged in the background.
 */
const HELD_PER_WORKER = 2 * CONCURRENCY;
const P99_LIMIT_MS = 1000;
/**
 * Growth of the heap that survives a full GC, MiB per minute and worker, after the first third
 * of the run (least-squares slope). Each worker runs ~100 jobs/s, so a leak of 1 KB per job is
 * ~5.9 MiB/min and 200 bytes per job ~1.2 MiB/min.
 */
const HEAP_SLOPE_LIMIT = 1;
/** Every how many ms the workers run a full GC and log their heap. */
const HEAP_EVERY_MS = 2000;
/**
 * RSS growth allowed after the first third of the full (5-minute) run, MiB/min and worker: the
 * RELIABILITY L3 figure. V8 grows its heap towards a plateau within the first ~2 minutes.
 */
const RSS_SLOPE_LIMIT = 1;
/** RSS allowed above the first sample at any time (RELIABILITY L1: idle + 150 MB). */
const RSS_GROWTH_LIMIT_MIB = 150;
const PREFIX = "soak";
const GROUP = "chicory-workers";
const STREAM = `${PREFIX}:stream:{default}`;

const hasRedisServer = spawnSync("redis-server", ["--version"]).status === 0;

describe.skipIf(!hasRedisServer)("L3 soak at a steady rate (own redis-server)", () => {
  it(
    `runs ${DURATION_MS / 1000} s at ${RATE} jobs/s: p99 < 1 s, nothing missing, flat memory`,
    async () => {
      if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` first`);
      const dir = mkdtempSync(join(tmpdir(), "chicory-load-soak-"));
      const server = new OwnRedis(await freePort(), dir, "none");
      const workers: WorkerProcess[] = [];
      let admin: Redis | undefined;
      let sampler: Sampler | undefined;
      let producer: Chicory | undefined;
      let passed = false;
      try {
        await server.start();
        const redis = new Redis(server.url, { connectionName: "load-test-admin" });
        admin = redis;
        const env = {
          CHICORY_BROKER_URL: server.url,
          CHICORY_BROKER_REDIS_KEY_PREFIX: PREFIX,
          CHICORY_BACKEND_REDIS_KEY_PREFIX: PREFIX,
          CHICORY_TEST_LOAD_KEYS: `${PREFIX}:books`,
          CHICORY_TEST_HEAP_EVERY_MS: String(HEAP_EVERY_MS),
        };
        const app = new Chicory({
          broker: server.url,
          config: { env: { CHICORY_BROKER_REDIS_KEY_PREFIX: PREFIX, CHICORY_BACKEND_REDIS_KEY_PREFIX: PREFIX } },
        });
        producer = app;
        const stamp = app.task({ name: "stamp" }, () => Date.now());
        await app.connect();

        const pids: number[] = [];
        sampler = new Sampler(redis, STREAM, GROUP, pids, 1000);
        const started = await Promise.all(
          Array.from({ length: WORKERS }, (_, i) =>
            startWorker(`worker${i + 1}`, CONCURRENCY, env, dir, [], ["--expose-gc"]),
          ),
        );
        for (const w of started) {
          workers.push(w);
          pids.push(w.pid);
        }
        sampler.start();

        // Steady producer: at every step, send what the clock says is due.
        const enqueuedAt = new Map<string, number>();
        let failedPublishes = 0;
        let maxPublishMs = 0;
        const inFlight = new Set<Promise<void>>();
        const t0 = Date.now();
        let sent = 0;
        while (Date.now() - t0 < DURATION_MS) {
          const due = Math.floor(((Date.now() - t0) * RATE) / 1000) - sent;
          for (let k = 0; k < due; k++) {
            const at = Date.now();
            const p = stamp.applyAsync([]).then(
              (result) => {
                enqueuedAt.set(result.taskId, at);
                maxPublishMs = Math.max(maxPublishMs, Date.now() - at);
              },
              () => {
                failedPublishes++;
              },
            );
            inFlight.add(p);
            void p.finally(() => inFlight.delete(p));
          }
          sent += Math.max(0, due);
          const gone = started.find((w) => w.exit !== null);
          if (gone) throw new Error(`${gone.name} exited: ${JSON.stringify(gone.exit)} ${gone.errors.join("\n")}`);
          await sleep(10);
        }
        await Promise.all(inFlight);
        const produceMs = Date.now() - t0;

        await waitUntil(
          "the queue to drain",
          60_000,
          async () => (await redis.xlen(STREAM)) === 0 && (await pendingCount(redis, STREAM, GROUP)) === 0,
        );
        await sampler.stop();
        await Promise.all(started.map((w) => stopWorker(w)));

        // Results: every confirmed job must be SUCCESS with its start time.
        const backend = app.backend;
        if (!backend) throw new Error("the producer app has no backend");
        const ids = [...enqueuedAt.keys()];
        const latencies: number[] = [];
        let missing = 0;
        for (let i = 0; i < ids.length; i += 1000) {
          const chunk = ids.slice(i, i + 1000);
          const records = await Promise.all(chunk.map((id) => backend.getResult(id)));
          records.forEach((record, j) => {
            const id = chunk[j] as string;
            if (record?.state !== "SUCCESS" || typeof record.result !== "number") missing++;
            else latencies.push(record.result - (enqueuedAt.get(id) ?? 0));
          });
        }
        latencies.sort((a, b) => a - b);

        const samples = sampler.samples;
        const warm = samples.filter((s) => s.t >= DURATION_MS / 3 && s.t <= DURATION_MS);
        const slopes = started.map((_, i) => {
          const points = warm.flatMap((s) => {
            const r = s.rss[i];
            return r === null || r === undefined ? [] : [[s.t, r] as const];
          });
          return slope(points) * 60_000;
        });
        const heapSlopes = started.map(
          (w) => slope(w.heap.filter(([at]) => at - t0 >= DURATION_MS / 3 && at - t0 <= DURATION_MS)) * 60_000,
        );
        const rssGrowth = started.map((_, i) => (sampler?.peakRss(i) ?? 0) - (samples[0]?.rss[i] ?? 0));
        const running = samples.filter((s) => s.t <= DURATION_MS);
        const clients = running.map((s) => s.clients).sort((a, b) => a - b);
        const clientsMedian = quantile(clients, 0.5);
        writeReport("load-soak", {
          seconds: DURATION_MS / 1000,
          ratePerSecond: RATE,
          sent,
          confirmed: ids.length,
          failedPublishes,
          achievedRate: round(ids.length / (produceMs / 1000)),
          maxPublishMs,
          missing,
          latencyMs: {
            p50: quantile(latencies, 0.5),
            p95: quantile(latencies, 0.95),
            p99: quantile(latencies, 0.99),
            max: latencies.at(-1),
          },
          rssMiB: started.map((_, i) => ({
            first: round(samples[0]?.rss[i] ?? 0),
            last: round(running.at(-1)?.rss[i] ?? 0),
            peak: round(sampler?.peakRss(i) ?? 0),
          })),
          rssTimelineMiB: samples
            .filter((_, k) => k % 10 === 0)
            .map((x) => [Math.round(x.t / 1000), ...x.rss.map((r) => round(r ?? 0))]),
          rssSlopeMiBPerMin: slopes.map((s) => round(s, 2)),
          rssSlopeLimit: FULL ? RSS_SLOPE_LIMIT : null,
          rssGrowthMiB: rssGrowth.map((g) => round(g)),
          heapAfterGcMiB: started.map((w) => ({
            first: round(w.heap[0]?.[1] ?? 0),
            last: round(w.heap.at(-1)?.[1] ?? 0),
            samples: w.heap.length,
          })),
          heapSlopeMiBPerMin: heapSlopes.map((s) => round(s, 2)),
          heapSlopeLimit: HEAP_SLOPE_LIMIT,
          connectedClients: { min: clients[0], median: clientsMedian, max: clients.at(-1) },
          peakPel: sampler.peakPel,
          peakPelPerWorker: sampler.peakPelPerWorker,
          peakXlen: Math.max(0, ...samples.map((s) => s.xlen)),
          processedPerWorker: started.map((w) => w.processed),
          workerWarnings: started.map((w) => w.warnings),
          workerErrors: started.flatMap((w) => w.errors),
          exits: started.map((w) => w.exit),
        });

        expect(failedPublishes, "failed publishes").toBe(0);
        expect(missing, "confirmed jobs without a SUCCESS record").toBe(0);
        expect(latencies.length).toBe(ids.length);
        expect(quantile(latencies, 0.99), "p99 enqueue→start latency (ms)").toBeLessThan(P99_LIMIT_MS);
        expect(
          samples.filter((s) => s.pel > WORKERS * HELD_PER_WORKER),
          "samples with PEL over workers × 2 × concurrency",
        ).toEqual([]);
        expect(sampler.peakPelPerWorker, "PEL of one worker").toBeLessThanOrEqual(HELD_PER_WORKER);
        for (const w of started) {
          expect(w.heap.length, `${w.name} heap samples`).toBeGreaterThanOrEqual(DURATION_MS / HEAP_EVERY_MS / 2);
        }
        for (const s of heapSlopes) expect(s, "heap-after-GC slope (MiB/min)").toBeLessThan(HEAP_SLOPE_LIMIT);
        for (const g of rssGrowth)
          expect(g, "RSS growth over the first sample (MiB)").toBeLessThan(RSS_GROWTH_LIMIT_MIB);
        if (FULL) for (const s of slopes) expect(s, "RSS slope (MiB/min)").toBeLessThan(RSS_SLOPE_LIMIT);
        expect(clients[0] ?? 0, "connected_clients min").toBeGreaterThanOrEqual(clientsMedian * 0.8);
        expect(clients.at(-1) ?? 0, "connected_clients max").toBeLessThanOrEqual(clientsMedian * 1.2);
        for (const w of started) {
          expect(w.exit, `${w.name} exit`).toEqual({ code: 0, signal: null });
          expect(w.errors, `${w.name} error lines`).toEqual([]);
        }
        passed = true;
      } finally {
        await sampler?.stop().catch(() => undefined);
        await producer?.disconnect().catch(() => undefined);
        await killWorkers(workers);
        admin?.disconnect();
        await server.kill();
        if (passed) rmSync(dir, { recursive: true, force: true });
        else console.error(`[reliability] load-soak: logs kept in ${dir}`);
      }
    },
    DURATION_MS + 180_000,
  );
});

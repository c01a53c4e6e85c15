/**
 * Infrastructure fault (RELIABILITY §3.2 B1/B2/B3, issues 4 and 7): a redis-server the test
 * starts itself (own port and dir; never the shared :6379) is SIGKILLed in the middle of a
 * run of at-least-once jobs and restarted on the same port with the same dir. Redis broker and
 * backend both live on it; workers run in-process.
 *
 * - `appendfsync always`: every job whose publish was confirmed ends SUCCESS (0 lost).
 * - `appendfsync everysec`: loss measured; the lost jobs must have been confirmed within 2 s
 *   before the kill (the documented everysec window plus a postponed write).
 * - no persistence: the data is gone; loss measured and reported, and workers must resume on
 *   their own (consumer groups re-created after NOGROUP): every job confirmed after the
 *   restart runs.
 * In every mode: time from "Redis is back" to the first completed job ≤ 30 s (measured).
 * CI tier: `always` and no persistence, 400 jobs; `everysec` (and 2,000 jobs) in the full tier.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Chicory, silentLogger, Worker } from "../../src/index.js";
import { uniqueName } from "../helpers/services.js";
import { JobLedger, produce, report, sleepMs, waitFor } from "./infra/ledger.js";
import { freePort, OwnRedis, type RedisPersistence } from "./infra/redis-server.js";

const FULL = process.env.CHICORY_RELIABILITY_FULL === "1";
const JOBS = FULL ? 2000 : 400;
// The producer outpaces the workers (2 x 4 slots x ~80 ms = ~100 jobs/s; full tier 200 jobs/s) so that a backlog
// sits in the stream when Redis dies: that backlog is what persistence has to keep.
const RATE = FULL ? 250 : 200;
const CONCURRENCY = FULL ? 8 : 4;
const TASK_MS = 80;
const RECOVERY_BOUND_MS = 30_000;
const EVERYSEC_WINDOW_MS = 2000;

const hasRedisServer = await (async () => {
  const { spawnSync } = await import("node:child_process");
  return spawnSync("redis-server", ["--version"]).status === 0;
})();

async function runRestart(persistence: RedisPersistence): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "chicory-rel-redis-"));
  const server = new OwnRedis(await freePort(), dir, persistence);
  await server.start();
  const name = uniqueName("rel");
  const app = new Chicory({
    broker: server.url,
    config: {
      env: {
        CHICORY_BROKER_REDIS_KEY_PREFIX: name,
        CHICORY_BACKEND_REDIS_KEY_PREFIX: name,
        CHICORY_BROKER_REDIS_CLAIM_MIN_IDLE_MS: "3000",
      },
    },
  });
  const ledger = new JobLedger();
  const job = app.task({ name: "rel_redis_job" }, async (i: number) => {
    await sleepMs(TASK_MS - 5 + (i % 10));
    ledger.ran(i);
    return i;
  });
  const taskId = (i: number) => `${name}-${i}`;
  const workers = [0, 1].map(
    () => new Worker(app, { logger: silentLogger, concurrency: CONCURRENCY, heartbeatInterval: 1 }),
  );
  const times = { killAt: 0, upAt: 0 };
  let crash: Promise<void> | null = null;
  let maxPublishMs = 0;
  let backlogAtKill = 0;
  try {
    await app.connect();
    for (const w of workers) await w.start();
    await produce({
      count: JOBS,
      ratePerSec: RATE,
      parallel: 8,
      publish: async (i) => {
        const t = Date.now();
        await job.applyAsync([i], { taskId: taskId(i) });
        maxPublishMs = Math.max(maxPublishMs, Date.now() - t);
      },
      ledger,
      deadline: Date.now() + 120_000,
      onStart: (i) => {
        if (i !== Math.floor(JOBS * 0.4)) return;
        crash = (async () => {
          times.killAt = Date.now();
          backlogAtKill = ledger.confirmed.size - ledger.runs.size;
          await server.kill("SIGKILL");
          await sleepMs(1000);
          await server.start();
          times.upAt = Date.now();
        })();
      },
    });
    await crash;
    expect(times.upAt).toBeGreaterThan(0);
    const confirmedAfterUp = [...ledger.confirmed].filter(([, t]) => t >= times.upAt).map(([i]) => i);
    // Every job confirmed after the restart must run, whatever the persistence mode.
    const resumed = await waitFor(() => confirmedAfterUp.every((i) => ledger.runs.has(i)), 90_000, 100);
    // Then let redelivered survivors finish (lease 3 s), or everything for `always`.
    if (persistence === "always") await waitFor(() => ledger.notRun().length === 0, 60_000, 100);
    else await waitFor(() => ledger.notRun().length === 0, 8000, 200);
    const drainedAt = Date.now();

    const backend = app.backend;
    if (!backend) throw new Error("no backend");
    const noResult: number[] = [];
    for (const i of ledger.confirmed.keys()) {
      const r = await backend.getResult(taskId(i));
      if (r?.state !== "SUCCESS" || r.result !== i) noResult.push(i);
    }
    const lost = ledger.notRun();
    const lostConfirmTimes = lost.map((i) => ledger.confirmed.get(i) ?? 0);
    const lossWindowMs = lost.length ? times.killAt - Math.min(...lostConfirmTimes) : 0;
    const consumerRecoveryMs = (ledger.firstCompletionAfter(times.upAt) ?? Number.POSITIVE_INFINITY) - times.upAt;
    const endToEndRecoveryMs = (ledger.firstRunOfJobStartedAfter(times.upAt) ?? Number.POSITIVE_INFINITY) - times.upAt;
    report(`redis-restart ${persistence}`, {
      jobs: JOBS,
      confirmed: ledger.confirmed.size,
      failedPublishAttempts: ledger.failedAttempts,
      failureKinds: Object.fromEntries(ledger.failureKinds),
      confirmedBeforeKill: [...ledger.confirmed.values()].filter((t) => t < times.killAt).length,
      backlogAtKill: backlogAtKill,
      confirmedAfterRestart: confirmedAfterUp.length,
      lostConfirmed: lost.length,
      lossWindowMs,
      resultsMissing: noResult.length,
      duplicates: ledger.duplicates(),
      outageMs: times.upAt - times.killAt,
      consumerRecoveryMs,
      endToEndRecoveryMs,
      maxPublishMs,
      drainedAfterUpMs: drainedAt - times.upAt,
    });
    expect(ledger.confirmed.size).toBe(JOBS);
    expect(resumed).toBe(true);
    expect(consumerRecoveryMs).toBeLessThanOrEqual(RECOVERY_BOUND_MS);
    expect(endToEndRecoveryMs).toBeLessThanOrEqual(RECOVERY_BOUND_MS);
    if (persistence === "always") {
      expect(lost).toEqual([]);
      expect(noResult).toEqual([]);
    }
    if (persistence === "everysec") expect(lossWindowMs).toBeLessThanOrEqual(EVERYSEC_WINDOW_MS);
    expect(await waitFor(async () => (await app.broker.getPendingCount("default")) === 0, 10_000, 200)).toBe(true);
  } finally {
    await (crash as Promise<void> | null)?.catch(() => undefined);
    for (const w of workers) await w.stop(5).catch(() => undefined);
    await app.disconnect().catch(() => undefined);
    await server.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
}

describe.skipIf(!hasRedisServer)("infra: own redis-server SIGKILLed and restarted mid-run", () => {
  it("appendfsync always: 0 confirmed jobs lost, workers resume on their own", async () => {
    await runRestart("always");
  });

  it.skipIf(!FULL)("appendfsync everysec: loss measured, within the 2 s window", async () => {
    await runRestart("everysec");
  });

  it("no persistence: loss measured, workers resume on their own (groups re-created)", async () => {
    await runRestart("none");
  });
});

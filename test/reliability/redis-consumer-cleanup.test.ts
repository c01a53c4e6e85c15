/**
 * H1 on Redis (shared server, random key prefix): heartbeat expiry and stale-consumer cleanup,
 * with real `chicory worker` processes; the test process runs the broker's
 * `cleanupStaleClients` (the admin call the workers' cleanup loop and `chicory cleanup` use).
 * - A worker holding 8 jobs is SIGKILLed: its heartbeat key expires, a live worker reclaims its
 *   entries after the lease, and the cleanup deletes the dead consumer only once it owns nothing;
 *   a live worker with nothing to do is never deleted.
 * - C10 race: the cleanup runs every 50 ms with a stale time of 0 against 3 live workers
 *   draining thousands of jobs: it deletes live consumers between their reads (pending 0), and
 *   never one that owns an entry.
 */
import type { Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import { skipUnless } from "../helpers/services.js";
import { rawRedis } from "../integration/redis/redis-test-keys.js";
import { awaitBooks, report } from "./harness/books.js";
import { type ConsumerInfo, redisConsumers, workerIdOf } from "./harness/inspect.js";
import { readLedger, startsOf } from "./harness/ledger.js";
import { newProducerLedger, produce } from "./harness/producer.js";
import { openSandbox, type Sandbox } from "./harness/sandbox.js";
import { sleep, waitUntil } from "./harness/wait.js";

const skip = await skipUnless("redis");
const FULL = process.env.CHICORY_RELIABILITY_FULL === "1";

/** One cleanup call: the group's consumers just before and just after, and the call's result. */
interface CleanupRound {
  readonly at: number;
  readonly before: readonly ConsumerInfo[];
  readonly deleted: number;
  readonly after: readonly ConsumerInfo[];
}

/** Runs `cleanupStaleClients(queue, staleSeconds)` every `everyMs` until stopped, recording each round. */
function cleanupLoop(
  sb: Sandbox,
  redis: Redis,
  staleSeconds: number,
  everyMs: number,
  withSnapshots: boolean,
): { rounds: CleanupRound[]; deleted: () => number; stop(): Promise<void> } {
  const rounds: CleanupRound[] = [];
  let deleted = 0;
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const before = withSnapshots ? await redisConsumers(redis, sb) : [];
      const n = await sb.app.broker.cleanupStaleClients("default", staleSeconds);
      deleted += n;
      const after = withSnapshots ? await redisConsumers(redis, sb) : [];
      if (withSnapshots) rounds.push({ at: Date.now(), before, deleted: n, after });
      await sleep(everyMs);
    }
  })();
  return {
    rounds,
    deleted: () => deleted,
    async stop() {
      stopped = true;
      await loop;
    },
  };
}

const heartbeatKey = (sb: Sandbox, workerId: string) => `${sb.prefix}:heartbeat:${workerId}`;

describe.skipIf(skip)("Redis broker: heartbeats and stale consumers", () => {
  it("H1: a SIGKILLed worker's heartbeat expires, its 8 entries are reclaimed, and its consumer is deleted only once it owns nothing; a live idle worker is never deleted", async () => {
    const LEASE_MS = 6000;
    const STALE_S = 4;
    const HEARTBEAT_TTL_S = 3; // harness: --heartbeat-interval 1 --heartbeat-ttl 3
    const RECLAIM_INTERVAL_MS = Math.min(LEASE_MS / 2, 1000);
    const sb = openSandbox({ broker: "redis", claimMinIdleMs: LEASE_MS });
    const redis = rawRedis();
    let cleanup: ReturnType<typeof cleanupLoop> | undefined;
    try {
      const workUntil = sb.app.task({ name: "work_until", deliveryMode: "at_least_once" }, async (_until: number) => {
        throw new Error("the test process never runs tasks");
      });
      await sb.app.connect();
      const a = await sb.processes.startWorker({ name: "a", concurrency: 8, env: sb.env });
      const aId = workerIdOf(a.output.stderr);
      // Each job runs until `until` on A (which is killed first); a rerun after it is short.
      const until = Date.now() + 6000;
      const jobs = newProducerLedger();
      await produce(workUntil, jobs, { count: 8, ms: () => until });
      await waitUntil(() => startsOf(readLedger(sb.ledgerDir), a.pid) >= 8, {
        timeoutMs: 10_000,
        what: "8 jobs running on worker a",
      });
      // B: a live worker with nothing to do (A holds every job) until it reclaims A's entries.
      const b = await sb.processes.startWorker({ name: "b", concurrency: 8, env: sb.env });
      const bId = workerIdOf(b.output.stderr);
      cleanup = cleanupLoop(sb, redis, STALE_S, 100, true);
      const aHeldAtKill = (await redisConsumers(redis, sb)).find((c) => c.name === aId)?.pending ?? -1;
      const killAt = Date.now();
      a.signal("SIGKILL");
      await a.exited;
      const heartbeatGoneAt = await waitUntil(
        async () => ((await redis.exists(heartbeatKey(sb, aId))) === 0 ? Date.now() : undefined),
        { timeoutMs: (HEARTBEAT_TTL_S + 5) * 1000, what: "the killed worker's heartbeat key to expire" },
      );
      const reclaimedAt = await waitUntil(
        () => {
          const ledger = readLedger(sb.ledgerDir);
          const onB = jobs.confirmed.map((id) => ledger.startsById.get(id)?.find((s) => s.pid === b.pid)?.t);
          return onB.every((t) => t !== undefined) ? Math.max(...(onB as number[])) : undefined;
        },
        { timeoutMs: LEASE_MS + 10_000, what: "worker b to rerun the 8 jobs" },
      );
      const books = await awaitBooks(sb.app, jobs.confirmed, sb.ledgerDir, 20_000);
      const aDeletedAt = await waitUntil(
        () =>
          cleanup?.rounds.find((r) => r.before.some((c) => c.name === aId) && !r.after.some((c) => c.name === aId))?.at,
        { timeoutMs: 10_000, what: "the cleanup to delete the dead consumer" },
      );
      await sleep(500); // a few more rounds with B idle again
      await cleanup.stop();
      const rounds = cleanup.rounds;
      cleanup = undefined;
      const bHeartbeat = await redis.exists(heartbeatKey(sb, bId));
      // Rounds in which the dead consumer looked stale by its idle time alone, still owning entries.
      const guarded = rounds.filter((r) =>
        r.before.some((c) => c.name === aId && c.pending > 0 && c.idle > STALE_S * 1000),
      );
      const deletedWhileOwning = rounds.filter(
        (r) => r.after.every((c) => c.name !== aId) && r.before.some((c) => c.name === aId && c.pending > 0),
      );
      // B registers itself just after it logs "worker started": count from its first appearance.
      const bFirst = rounds.findIndex((r) => r.before.some((c) => c.name === bId));
      const bMissing = rounds
        .slice(Math.max(0, bFirst))
        .filter((r) => !r.before.some((c) => c.name === bId) || !r.after.some((c) => c.name === bId));
      const bMaxIdle = Math.max(...rounds.flatMap((r) => r.before.filter((c) => c.name === bId).map((c) => c.idle)));
      const finalConsumers = await redisConsumers(redis, sb);
      report("redis-heartbeat-expiry-stale-consumer", {
        leaseMs: LEASE_MS,
        staleSeconds: STALE_S,
        heartbeatTtlS: HEARTBEAT_TTL_S,
        reclaimIntervalMs: RECLAIM_INTERVAL_MS,
        aHeldAtKill,
        heartbeatGoneAfterKillMs: heartbeatGoneAt - killAt,
        reclaimedAfterKillMs: reclaimedAt - killAt,
        deadConsumerDeletedAfterKillMs: aDeletedAt - killAt,
        cleanupRounds: rounds.length,
        cleanupDeleted: rounds.reduce((n, r) => n + r.deleted, 0),
        roundsDeadConsumerStaleButOwning: guarded.length,
        roundsDeadConsumerGoneWhileOwningBefore: deletedWhileOwning.length,
        liveIdleConsumerFirstSeenRound: bFirst,
        roundsLiveIdleConsumerMissing: bMissing.length,
        liveIdleConsumerMaxIdleMs: bMaxIdle,
        liveHeartbeatAtEnd: bHeartbeat === 1,
        finalConsumers,
        books,
      });
      expect(aHeldAtKill).toBe(8);
      expect(heartbeatGoneAt - killAt).toBeLessThanOrEqual((HEARTBEAT_TTL_S + 1) * 1000);
      expect(reclaimedAt - killAt).toBeLessThanOrEqual(LEASE_MS + RECLAIM_INTERVAL_MS + 500);
      expect(books.missing).toBe(0);
      expect(books.success).toBe(8);
      // The guard was exercised: the cleanup saw the dead consumer stale yet owning entries, and
      // left it; it deleted it once its entries had moved to B (the jobs above all ran again).
      expect(guarded.length).toBeGreaterThan(0);
      expect(aDeletedAt).toBeGreaterThanOrEqual(reclaimedAt - 1000);
      expect(finalConsumers.map((c) => c.name)).not.toContain(aId);
      // The live worker, idle for seconds before the reclaim, was never deleted.
      expect(bFirst).toBeGreaterThanOrEqual(0);
      expect(bMissing).toEqual([]);
      expect(bHeartbeat).toBe(1);
      expect(await sb.app.broker.getPendingCount("default")).toBe(0);
      expect(await sb.app.broker.getQueueSize("default")).toBe(0);
    } catch (error) {
      console.error(sb.processes.describe());
      throw error;
    } finally {
      await cleanup?.stop().catch(() => undefined);
      redis.disconnect();
      await sb.close();
    }
  }, 90_000);

  it(`C10 race: cleanup every 50 ms (stale 0 s) against 3 live workers draining ${FULL ? "20,000" : "5,000"} jobs never deletes a consumer that owns an entry`, async () => {
    const JOBS = FULL ? 20_000 : 5000;
    const sb = openSandbox({ broker: "redis", claimMinIdleMs: 1000 });
    const redis = rawRedis();
    let cleanup: ReturnType<typeof cleanupLoop> | undefined;
    try {
      await sb.app.connect();
      const workers = [];
      for (const name of ["w1", "w2", "w3"])
        workers.push(await sb.processes.startWorker({ name, concurrency: 8, env: sb.env }));
      const ids = workers.map((w) => workerIdOf(w.output.stderr));
      cleanup = cleanupLoop(sb, redis, 0, 50, false);
      const startedAt = Date.now();
      const producer = newProducerLedger();
      // At 500 jobs/s the workers keep up, so each often owns nothing between two reads: the
      // moments a stale-0 cleanup can delete it, racing its next read.
      await produce(sb.work, producer, { count: JOBS, ms: (i) => 1 + (i % 3), ratePerSecond: 500 });
      expect(producer.failed).toEqual([]);
      const books = await awaitBooks(sb.app, producer.confirmed, sb.ledgerDir, FULL ? 240_000 : 60_000);
      const drainedMs = Date.now() - startedAt;
      await cleanup.stop();
      const deleted = cleanup.deleted();
      cleanup = undefined;
      // Deleted consumers come back by themselves (a live consumer marks itself active every 2 s).
      const back = await waitUntil(
        async () => {
          const names = (await redisConsumers(redis, sb)).map((c) => c.name);
          return ids.every((id) => names.includes(id)) ? names : undefined;
        },
        { timeoutMs: 5000, what: "the 3 live consumers to be registered again" },
      ).catch(() => null);
      const missedAcks = workers.reduce(
        (n, w) => n + (w.output.stderr.match(/entries no longer pending for this consumer/g) ?? []).length,
        0,
      );
      report("redis-cleanup-race", {
        jobs: JOBS,
        tier: FULL ? "full" : "ci",
        workers: 3,
        concurrency: 8,
        cleanupEveryMs: 50,
        staleSeconds: 0,
        consumersDeleted: deleted,
        drainedMs,
        missedAckWarnings: missedAcks,
        consumersAfter: back?.length ?? null,
        books,
      });
      expect(books.missingSample).toEqual([]);
      expect(books.missing).toBe(0);
      expect(books.success).toBe(JOBS);
      // The race happened: live consumers were deleted between their reads, many times.
      expect(deleted).toBeGreaterThan(0);
      // No consumer was deleted while it owned an entry: every ack found its entry still pending
      // for its consumer (a deletion would have dropped it from the PEL: the ack then matches
      // nothing, and the worker logs it), and nothing is left in the stream or the PEL.
      expect(missedAcks).toBe(0);
      expect(await sb.app.broker.getPendingCount("default")).toBe(0);
      expect(await sb.app.broker.getQueueSize("default")).toBe(0);
      expect(back).not.toBeNull();
    } catch (error) {
      console.error(sb.processes.describe());
      throw error;
    } finally {
      await cleanup?.stop().catch(() => undefined);
      redis.disconnect();
      await sb.close();
    }
  }, 300_000);
});

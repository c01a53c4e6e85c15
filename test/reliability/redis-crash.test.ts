/**
 * Process-crash tests on Redis (shared server 127.0.0.1:6379, a random key prefix per test,
 * lease 1 s) with real `chicory worker` processes and the ledger oracle:
 * - R1: random SIGKILLs during 2,000 at-least-once jobs, replacements started: missing == 0;
 * - R4: a task running 3.5× the lease with two live workers runs exactly once;
 * - G1: SIGTERM with running and queued jobs: exit 0, running jobs finish and are acked
 *   (never redelivered), queued jobs are run promptly by another worker;
 * - read-ahead on (`CHICORY_BROKER_REDIS_PREFETCH`): jobs a worker read ahead are given back at
 *   once when it stops (SIGTERM: not run by it, not left to their lease, no delivery counted)
 *   and reclaimed with its running jobs when it is killed (SIGKILL: run once, elsewhere).
 */
import { describe, expect, it } from "vitest";
import { skipUnless } from "../helpers/services.js";
import { awaitBooks, report } from "./harness/books.js";
import { leaseOwners, workerIdOf } from "./harness/inspect.js";
import { readLedger, recoveries, startsOf } from "./harness/ledger.js";
import type { ProcessHandle } from "./harness/processes.js";
import { newProducerLedger, produce } from "./harness/producer.js";
import { openSandbox } from "./harness/sandbox.js";
import { CLAIM_MS, longTaskScenario, secondSignalScenario, sigtermScenario } from "./harness/scenarios.js";
import { runSeed, seededRandom, sleep, waitUntil } from "./harness/wait.js";

const skip = await skipUnless("redis");

describe.skipIf(skip)("Redis broker: process crashes", () => {
  it("random SIGKILLs during 2,000 at-least-once jobs lose nothing (3 kills, replacements started)", async () => {
    const seed = runSeed();
    const random = seededRandom(seed);
    const sb = openSandbox({ broker: "redis", claimMinIdleMs: CLAIM_MS });
    const concurrency = 8;
    const JOBS = 2000;
    const KILLS = 3;
    try {
      await sb.app.connect();
      let n = 0;
      const start = (): Promise<ProcessHandle> =>
        sb.processes.startWorker({ name: `w${++n}`, concurrency, env: sb.env });
      const live: ProcessHandle[] = [await start(), await start()];
      const producer = newProducerLedger();
      const produced = produce(sb.work, producer, {
        count: JOBS,
        ms: () => 2 + Math.floor(random() * 9),
        ratePerSecond: 500,
      });
      const kills: Array<{ pid: number; at: number; startedJobs: number }> = [];
      for (let k = 0; k < KILLS; k++) {
        await sleep(600 + Math.floor(random() * 800));
        const index = Math.floor(random() * live.length);
        const victim = live[index] as ProcessHandle;
        const at = Date.now();
        victim.signal("SIGKILL");
        await victim.exited;
        kills.push({ pid: victim.pid, at, startedJobs: startsOf(readLedger(sb.ledgerDir), victim.pid) });
        live.splice(index, 1, await start());
      }
      await produced;
      expect(producer.failed).toEqual([]);
      const lastKillAt = kills[kills.length - 1]?.at ?? Date.now();
      const books = await awaitBooks(sb.app, producer.confirmed, sb.ledgerDir, 60_000);
      const ledger = readLedger(sb.ledgerDir);
      const perKill = kills.map((kill) => {
        const r = recoveries(ledger, kill.pid, kill.at);
        return {
          ...kill,
          interrupted: r.interrupted.length,
          neverRestarted: r.neverRestarted.length,
          maxRecoveryMs: Math.max(0, ...r.recoveryMs),
        };
      });
      report("redis-worker-sigkill-chaos", {
        seed,
        jobs: JOBS,
        concurrency,
        workers: 2,
        claimMinIdleMs: CLAIM_MS,
        kills: perKill,
        books,
        drainedAfterLastKillMs: Date.now() - lastKillAt,
      });
      expect(books.confirmed).toBe(JOBS);
      expect(books.missingSample).toEqual([]);
      expect(books.missing).toBe(0);
      expect(books.success).toBe(JOBS);
      for (const kill of perKill) expect(kill.neverRestarted).toBe(0);
      // ≤ one extra run per job in flight at each kill (no prefetch beyond free slots on Redis).
      // a killed worker held up to 2 × concurrency unacknowledged jobs (running + settling)
      expect(books.duplicateStarts).toBeLessThanOrEqual(KILLS * 2 * concurrency);
      expect(books.duplicates).toBeLessThanOrEqual(KILLS * 2 * concurrency);
      // Nothing stranded: stream empty, no pending entries (dead consumers' PELs reclaimed).
      expect(await sb.app.broker.getQueueSize("default")).toBe(0);
      expect(await sb.app.broker.getPendingCount("default")).toBe(0);
    } catch (error) {
      console.error(sb.processes.describe());
      throw error;
    } finally {
      await sb.close();
    }
  }, 120_000);

  it("a task running 3.5x the lease with two live workers runs exactly once", async () => {
    await longTaskScenario("redis");
  }, 60_000);

  it("SIGTERM: running jobs finish and are acked (no redelivery), queued jobs go to another worker promptly, exit 0", async () => {
    await sigtermScenario("redis");
  }, 60_000);

  it("a second signal during a graceful stop exits at once; the running jobs are rerun by another worker", async () => {
    await secondSignalScenario("redis");
  }, 60_000);

  it.each([
    ["SIGTERM", "given back at once"],
    ["SIGKILL", "reclaimed after the lease"],
  ] as const)(
    "%s with read-ahead on: the jobs read ahead are %s and run once, by another worker",
    async (signal, _what) => {
      // SIGTERM: a 60 s lease, so only the release on stop makes them claimable in time.
      const LEASE_MS = signal === "SIGTERM" ? 60_000 : CLAIM_MS;
      const PREFETCH = 8;
      const RUN_MS = 2000;
      const sb = openSandbox({
        broker: "redis",
        claimMinIdleMs: LEASE_MS,
        env: { CHICORY_BROKER_REDIS_PREFETCH: String(PREFETCH) },
      });
      try {
        await sb.app.connect();
        // In stream order: 4 long jobs for a's 4 slots, then 8 that a reads ahead.
        const running = newProducerLedger();
        await produce(sb.work, running, { count: 4, ms: () => RUN_MS });
        const queued = newProducerLedger();
        await produce(sb.work, queued, { count: PREFETCH, ms: () => 50 });
        const a = await sb.processes.startWorker({ name: "a", concurrency: 4, env: sb.env });
        const aId = workerIdOf(a.output.stderr);
        await waitUntil(() => startsOf(readLedger(sb.ledgerDir), a.pid) >= 4, {
          timeoutMs: 10_000,
          what: "4 running jobs on worker a",
        });
        const heldByA = [...(await leaseOwners(sb)).values()].filter((owner) => owner === aId).length;
        const at = Date.now();
        a.signal(signal);
        const b = await sb.processes.startWorker({ name: "b", concurrency: 4, env: sb.env });
        const aExit = await a.exited;
        const all = [...running.confirmed, ...queued.confirmed];
        const books = await awaitBooks(sb.app, all, sb.ledgerDir, 30_000);
        const ledger = readLedger(sb.ledgerDir);
        const queuedStarts = queued.confirmed.flatMap((id) => ledger.startsById.get(id) ?? []);
        const firstQueuedStart = Math.min(...queuedStarts.map((t) => t.t));
        report(`redis-${signal.toLowerCase()}-read-ahead`, {
          prefetch: PREFETCH,
          leaseMs: LEASE_MS,
          heldByABeforeSignal: heldByA,
          exit: aExit,
          exitAfterSignalMs: aExit.at - at,
          queuedPickedUpAfterSignalMs: firstQueuedStart - at,
          queuedRunByA: queuedStarts.filter((t) => t.pid === a.pid).length,
          books,
        });
        // a held its 4 running jobs and the 8 read ahead
        expect(heldByA).toBe(4 + PREFETCH);
        expect(books.missing).toBe(0);
        expect(queuedStarts.every((t) => t.pid === b.pid)).toBe(true);
        expect(queuedStarts).toHaveLength(PREFETCH);
        if (signal === "SIGTERM") {
          expect(aExit.code).toBe(0);
          expect(books.duplicateStarts).toBe(0);
          // given back, not left to the 60 s lease
          expect(firstQueuedStart - at).toBeLessThan(10_000);
        } else {
          // only the 4 running jobs were cut short and run again
          expect(books.duplicateStarts).toBe(4);
        }
        expect(books.duplicates).toBe(0);
        expect(await sb.app.broker.getPendingCount("default")).toBe(0);
        expect(await sb.app.broker.getQueueSize("default")).toBe(0);
      } catch (error) {
        console.error(sb.processes.describe());
        throw error;
      } finally {
        await sb.close();
      }
    },
    60_000,
  );
});

/**
 * Process-crash tests on Redis (shared server 127.0.0.1:6379, a random key prefix per test,
 * lease 1 s) with real `chicory worker` processes and the ledger oracle:
 * - R1: random SIGKILLs during 2,000 at-least-once jobs, replacements started: missing == 0;
 * - R4: a task running 3.5× the lease with two live workers runs exactly once;
 * - G1: SIGTERM with running and queued jobs: exit 0, running jobs finish and are acked
 *   (never redelivered), queued jobs are run promptly by another worker.
 */
import { describe, expect, it } from "vitest";
import { skipUnless } from "../helpers/services.js";
import { awaitBooks, report } from "./harness/books.js";
import { readLedger, recoveries, startsOf } from "./harness/ledger.js";
import type { ProcessHandle } from "./harness/processes.js";
import { newProducerLedger, produce } from "./harness/producer.js";
import { openSandbox } from "./harness/sandbox.js";
import { CLAIM_MS, longTaskScenario, secondSignalScenario, sigtermScenario } from "./harness/scenarios.js";
import { runSeed, seededRandom, sleep } from "./harness/wait.js";

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
});

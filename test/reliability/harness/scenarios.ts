/**
 * Crash scenarios shared by the SQLite and Redis test files (same fixture, same books):
 * - R4 long task: a task running 3.5× the lease with two live workers runs exactly once;
 * - G1 graceful SIGTERM with running and queued jobs: exit 0, running jobs finish and are acked
 *   (never redelivered: duplicates == 0), queued jobs run on another worker promptly.
 */
import { expect } from "vitest";
import { awaitBooks, report } from "./books.js";
import { leaseOwners, workerIdOf } from "./inspect.js";
import { readLedger, startsOf } from "./ledger.js";
import { newProducerLedger, produce } from "./producer.js";
import { type BrokerKind, openSandbox } from "./sandbox.js";
import { waitUntil } from "./wait.js";

/** Lease length of these scenarios (ms). */
export const CLAIM_MS = 1000;

/** R4: see module doc. */
export async function longTaskScenario(broker: BrokerKind): Promise<void> {
  const sb = openSandbox({ broker, claimMinIdleMs: CLAIM_MS });
  const LONG_MS = 3500;
  try {
    await sb.app.connect();
    const w1 = await sb.processes.startWorker({ name: "w1", concurrency: 4, env: sb.env });
    const w2 = await sb.processes.startWorker({ name: "w2", concurrency: 4, env: sb.env });
    const long = newProducerLedger();
    await produce(sb.work, long, { count: 4, ms: () => LONG_MS });
    // Short jobs keep both workers fetching (and reclaiming) while the long ones run.
    const short = newProducerLedger();
    await produce(sb.work, short, { count: 200, ms: () => 10, ratePerSecond: 80 });
    const all = [...long.confirmed, ...short.confirmed];
    const books = await awaitBooks(sb.app, all, sb.ledgerDir, 30_000);
    const ledger = readLedger(sb.ledgerDir);
    const longStarts = long.confirmed.map((id) => ledger.startsById.get(id)?.length ?? 0);
    report(`${broker}-long-task-lease-renewal`, {
      broker,
      claimMinIdleMs: CLAIM_MS,
      taskMs: LONG_MS,
      longJobs: 4,
      shortJobs: 200,
      longStarts,
      workers: [w1.pid, w2.pid],
      books,
    });
    expect(books.missing).toBe(0);
    expect(longStarts).toEqual([1, 1, 1, 1]);
    expect(books.duplicateStarts).toBe(0);
    expect(books.duplicates).toBe(0);
  } catch (error) {
    console.error(sb.processes.describe());
    throw error;
  } finally {
    await sb.close();
  }
}

/** G1: see module doc. */
export async function sigtermScenario(broker: BrokerKind): Promise<void> {
  const sb = openSandbox({ broker, claimMinIdleMs: CLAIM_MS });
  const RUN_MS = 2000;
  try {
    await sb.app.connect();
    const a = await sb.processes.startWorker({ name: "a", concurrency: 4, env: sb.env });
    const aId = workerIdOf(a.output.stderr);
    const running = newProducerLedger();
    await produce(sb.work, running, { count: 4, ms: () => RUN_MS });
    await waitUntil(() => startsOf(readLedger(sb.ledgerDir), a.pid) >= 4, {
      timeoutMs: 10_000,
      what: "4 running jobs on worker a",
    });
    const queued = newProducerLedger();
    await produce(sb.work, queued, { count: 8, ms: () => 200 });
    const termAt = Date.now();
    a.signal("SIGTERM");
    const bStarting = sb.processes.startWorker({ name: "b", concurrency: 4, env: sb.env });
    const aExit = await a.exited;
    const b = await bStarting;
    const all = [...running.confirmed, ...queued.confirmed];
    const books = await awaitBooks(sb.app, all, sb.ledgerDir, 30_000);
    const ledger = readLedger(sb.ledgerDir);
    const runningEndedOnA = running.confirmed.every((id) => ledger.endsById.get(id)?.some((e) => e.pid === a.pid));
    const queuedStarts = queued.confirmed.flatMap((id) => ledger.startsById.get(id) ?? []);
    const bReadyAt = b.startedAt; // spawn time; its "worker started" line came later
    const firstQueuedStart = Math.min(...queuedStarts.map((s) => s.t));
    const heartbeat = await sb.app.backend?.getHeartbeat(aId);
    report(`${broker}-sigterm-graceful`, {
      broker,
      runMs: RUN_MS,
      runningJobs: 4,
      queuedJobs: 8,
      exit: aExit,
      exitAfterTermMs: aExit.at - termAt,
      queuedPickedUpAfterTermMs: firstQueuedStart - termAt,
      queuedPickedUpAfterSpawnOfBMs: firstQueuedStart - bReadyAt,
      queuedRunByA: queuedStarts.filter((s) => s.pid === a.pid).length,
      finalHeartbeatRunning: heartbeat?.isRunning ?? null,
      books,
    });
    expect(aExit.code).toBe(0);
    expect(aExit.at - termAt).toBeLessThan(RUN_MS + 2000);
    expect(runningEndedOnA).toBe(true);
    expect(books.missing).toBe(0);
    expect(books.duplicateStarts).toBe(0);
    expect(books.duplicates).toBe(0);
    // Queued jobs were not started by the stopping worker, and another picked them up promptly.
    expect(queuedStarts.every((s) => s.pid === b.pid)).toBe(true);
    expect(firstQueuedStart - bReadyAt).toBeLessThan(5000);
    expect(heartbeat?.isRunning ?? false).toBe(false);
    expect((await leaseOwners(sb)).size).toBe(0);
  } catch (error) {
    console.error(sb.processes.describe());
    throw error;
  } finally {
    await sb.close();
  }
}

/**
 * G3: SIGTERM, then a second signal 300 ms later: the worker exits at once (code 130) without
 * waiting for its running jobs; those jobs are not lost: another worker runs them again once
 * their lease runs out (at-least-once), so each counts one duplicate start.
 */
export async function secondSignalScenario(broker: BrokerKind): Promise<void> {
  const sb = openSandbox({ broker, claimMinIdleMs: CLAIM_MS });
  const RUN_MS = 3000;
  try {
    await sb.app.connect();
    const a = await sb.processes.startWorker({ name: "a", concurrency: 4, env: sb.env });
    const running = newProducerLedger();
    await produce(sb.work, running, { count: 4, ms: () => RUN_MS });
    await waitUntil(() => startsOf(readLedger(sb.ledgerDir), a.pid) >= 4, {
      timeoutMs: 10_000,
      what: "4 running jobs on worker a",
    });
    const termAt = Date.now();
    a.signal("SIGTERM");
    await new Promise((r) => setTimeout(r, 300));
    a.signal("SIGINT");
    const aExit = await a.exited;
    const b = await sb.processes.startWorker({ name: "b", concurrency: 4, env: sb.env });
    const books = await awaitBooks(sb.app, running.confirmed, sb.ledgerDir, 30_000);
    const ledger = readLedger(sb.ledgerDir);
    const rerunOnB = running.confirmed.filter((id) => ledger.startsById.get(id)?.some((s) => s.pid === b.pid));
    const rerunAfterMs = Math.max(
      ...running.confirmed.map((id) => (ledger.startsById.get(id)?.find((s) => s.pid === b.pid)?.t ?? termAt) - termAt),
    );
    report(`${broker}-second-signal`, {
      broker,
      claimMinIdleMs: CLAIM_MS,
      exit: aExit,
      exitAfterTermMs: aExit.at - termAt,
      rerunOnB: rerunOnB.length,
      rerunAfterTermMs: rerunAfterMs,
      books,
    });
    expect(aExit.code).toBe(130);
    expect(aExit.at - termAt).toBeLessThan(RUN_MS);
    expect(books.missing).toBe(0);
    expect(rerunOnB.length).toBe(4);
    expect(books.duplicates).toBe(0);
  } catch (error) {
    console.error(sb.processes.describe());
    throw error;
  } finally {
    await sb.close();
  }
}

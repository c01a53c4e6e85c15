/**
 * Lease loss (R5, "zombie worker"): a worker frozen with SIGSTOP longer than the lease loses
 * its jobs to another worker; after SIGCONT it finishes its (now stale) runs and tries to settle
 * them. Checked on SQLite and Redis:
 * - books: missing == 0; duplicates counted (each job both runs completed: 1 per job);
 * - fencing: the zombie's late ack must not remove the job from the NEW owner (the broker still
 *   shows the job leased/pending to the new owner until the new owner settles it);
 * - state monotonic: the final state is SUCCESS.
 * A second scenario runs tasks that honour `ctx.signal`: once resumed, the zombie's lease
 * renewal finds the jobs taken over and the worker aborts its stale runs (RELIABILITY R5: within
 * one renewal interval), so each job completes once, on the heir.
 */
import { describe, expect, it } from "vitest";
import { skipUnless } from "../helpers/services.js";
import { awaitBooks, report } from "./harness/books.js";
import { leaseOwners, workerIdOf } from "./harness/inspect.js";
import { readLedger } from "./harness/ledger.js";
import { newProducerLedger, produce } from "./harness/producer.js";
import { type BrokerKind, openSandbox } from "./harness/sandbox.js";
import { waitUntil } from "./harness/wait.js";

const CLAIM_MS = 1000;
const TASK_MS = 4000;
const JOBS = 4;

const skipRedis = await skipUnless("redis");

/**
 * Redis settle scripts (`ack.lua`, `retry.lua`, `dead-letter.lua`) check the entry's owner: a
 * zombie's late ack after SIGCONT changes nothing while the new owner runs the job.
 */
const REDIS_LATE_ACK_UNFENCED = false;

async function zombieScenario(broker: BrokerKind, lateAckUnfenced = false): Promise<void> {
  const sb = openSandbox({ broker, claimMinIdleMs: CLAIM_MS });
  try {
    await sb.app.connect();
    const zombie = await sb.processes.startWorker({ name: "zombie", concurrency: JOBS, env: sb.env });
    const zombieId = workerIdOf(zombie.output.stderr);
    const producer = newProducerLedger();
    await produce(sb.work, producer, { count: JOBS, ms: () => TASK_MS });
    const ids = producer.confirmed;
    const startedBy = (pid: number) => {
      const ledger = readLedger(sb.ledgerDir);
      return ids.every((id) => ledger.startsById.get(id)?.some((s) => s.pid === pid));
    };
    await waitUntil(() => startedBy(zombie.pid), { timeoutMs: 15_000, what: "the zombie running every job" });
    const stoppedAt = Date.now();
    zombie.signal("SIGSTOP");
    const heir = await sb.processes.startWorker({ name: "heir", concurrency: JOBS, env: sb.env });
    const heirId = workerIdOf(heir.output.stderr);
    await waitUntil(() => startedBy(heir.pid), { timeoutMs: 15_000, what: "the heir reclaiming every job" });
    const reclaimedAfterMs = Date.now() - stoppedAt;
    const ownersBefore = await leaseOwners(sb);
    zombie.signal("SIGCONT");
    const resumedAt = Date.now();
    // The zombie's runs end first (they started TASK_MS earlier); it then stores and acks.
    await waitUntil(
      () => {
        const ledger = readLedger(sb.ledgerDir);
        return ids.every((id) => ledger.endsById.get(id)?.some((e) => e.pid === zombie.pid));
      },
      { timeoutMs: TASK_MS + 5000, what: "the zombie finishing its stale runs" },
    );
    // Give the zombie's settle steps (store result, ack) time to reach the broker.
    await new Promise((r) => setTimeout(r, 300));
    const ledgerMid = readLedger(sb.ledgerDir);
    const heirStillRunning = ids.every((id) => !ledgerMid.endsById.get(id)?.some((e) => e.pid === heir.pid));
    const ownersAfterZombieAck = await leaseOwners(sb);
    // The heir's runs go on (the zombie's settle must not stop them): wait for their end too.
    await waitUntil(
      () => {
        const ledger = readLedger(sb.ledgerDir);
        return ids.every((id) => ledger.endsById.get(id)?.some((e) => e.pid === heir.pid));
      },
      { timeoutMs: TASK_MS + 5000, what: "the heir finishing its runs" },
    );
    const books = await awaitBooks(sb.app, ids, sb.ledgerDir, 30_000);
    const fencedIds = ids.filter((id) => ownersAfterZombieAck.get(id) === heirId);
    report(`${broker}-lease-loss-sigstop`, {
      broker,
      claimMinIdleMs: CLAIM_MS,
      taskMs: TASK_MS,
      jobs: JOBS,
      stoppedForMs: resumedAt - stoppedAt,
      reclaimedAfterMs,
      heirStillRunningAtCheck: heirStillRunning,
      jobsStillOwnedByHeirAfterZombieAck: fencedIds.length,
      knownDefectLateAckUnfenced: lateAckUnfenced,
      books,
    });
    // Before SIGCONT: every job is leased to the heir, none to the zombie.
    for (const id of ids) expect(ownersBefore.get(id)).toBe(heirId);
    expect([...ownersBefore.values()]).not.toContain(zombieId);
    expect(heirStillRunning).toBe(true); // otherwise the fencing check below proves nothing
    // Fencing: the zombie's late ack left the heir's jobs in place.
    if (lateAckUnfenced) expect(fencedIds).toEqual([]);
    else expect(fencedIds).toEqual(ids);
    expect(books.missingSample).toEqual([]);
    expect(books.missing).toBe(0);
    expect(books.success).toBe(JOBS);
    // Both runs of each job completed (documented: a paused process can still finish its run).
    expect(books.duplicates).toBe(JOBS);
    expect(books.maxRunsPerId).toBe(2);
  } catch (error) {
    console.error(sb.processes.describe());
    throw error;
  } finally {
    await sb.close();
  }
}

/**
 * The reviewer's case of R5: the heir finishes the jobs (SUCCESS stored) while the zombie is
 * frozen; once resumed, the zombie's stale runs end at once and fail for good (task
 * `work_or_fail` fails in that process only). Their timers are overdue, so the runs end before
 * the lease renewal's reply tells the zombie it lost the jobs: its settle goes out (with its
 * FAILURE record in the ack call, or a DEAD_LETTERED record stored before the dead-letter move)
 * and must not replace the heir's SUCCESS.
 */
async function zombieFailsLateScenario(broker: BrokerKind, useDeadLetterQueue: boolean): Promise<void> {
  const env: Record<string, string> = { CHICORY_WORKER_USE_DEAD_LETTER_QUEUE: String(useDeadLetterQueue) };
  const sb = openSandbox({ broker, claimMinIdleMs: CLAIM_MS, env });
  try {
    await sb.app.connect();
    const task = sb.app.task({ name: "work_or_fail", deliveryMode: "at_least_once" }, (_ms: number): number => {
      throw new Error("runs in the worker processes only");
    });
    const zombieEnv = { ...sb.env, CHICORY_TEST_FAIL_HERE: "1" };
    const zombie = await sb.processes.startWorker({ name: "zombie", concurrency: JOBS, env: zombieEnv });
    const producer = newProducerLedger();
    await produce(task, producer, { count: JOBS, ms: () => TASK_MS });
    const ids = producer.confirmed;
    const by = (kind: "startsById" | "endsById", pid: number) => {
      const ledger = readLedger(sb.ledgerDir);
      return ids.every((id) => ledger[kind].get(id)?.some((s) => s.pid === pid));
    };
    await waitUntil(() => by("startsById", zombie.pid), { timeoutMs: 15_000, what: "the zombie running every job" });
    zombie.signal("SIGSTOP");
    await sb.processes.startWorker({ name: "heir", concurrency: JOBS, env: sb.env });
    const states = () => Promise.all(ids.map(async (id) => (await sb.app.backend?.getResult(id))?.state));
    await waitUntil(async () => (await states()).every((state) => state === "SUCCESS"), {
      timeoutMs: 15_000 + TASK_MS,
      what: "the heir storing every job's success",
    });
    zombie.signal("SIGCONT");
    await waitUntil(() => by("endsById", zombie.pid), { timeoutMs: 5000, what: "the zombie ending its stale runs" });
    // The zombie's settle calls go out right after its runs end: wait for its log line about them.
    await zombie.waitForStderr(/lease lost before the outcome was stored|no longer pending for this consumer/, 5000);
    const after = await states();
    const books = await awaitBooks(sb.app, ids, sb.ledgerDir, 30_000);
    report(`${broker}-lease-loss-zombie-fails`, { broker, useDeadLetterQueue, statesAfterZombie: after, books });
    expect(after).toEqual(ids.map(() => "SUCCESS"));
    expect(books.missing).toBe(0);
    expect(books.success).toBe(JOBS);
    expect(books.deadLettered).toBe(0);
    expect(await sb.app.broker.getDlqCount("default")).toBe(0);
  } catch (error) {
    console.error(sb.processes.describe());
    throw error;
  } finally {
    await sb.close();
  }
}

/** Zombie whose tasks honour their AbortSignal: its stale runs are aborted soon after SIGCONT. */
async function abortedZombieScenario(broker: BrokerKind): Promise<void> {
  const sb = openSandbox({ broker, claimMinIdleMs: CLAIM_MS });
  try {
    await sb.app.connect();
    const abortable = sb.app.task({ name: "long_abortable", deliveryMode: "at_least_once" }, (_ms: number): number => {
      throw new Error("runs in the worker processes only");
    });
    const zombie = await sb.processes.startWorker({ name: "zombie", concurrency: JOBS, env: sb.env });
    const producer = newProducerLedger();
    await produce(abortable, producer, { count: JOBS, ms: () => TASK_MS });
    const ids = producer.confirmed;
    const by = (kind: "startsById" | "endsById" | "abortsById", pid: number) => {
      const ledger = readLedger(sb.ledgerDir);
      return ids.every((id) => ledger[kind].get(id)?.some((s) => s.pid === pid));
    };
    await waitUntil(() => by("startsById", zombie.pid), { timeoutMs: 15_000, what: "the zombie running every job" });
    zombie.signal("SIGSTOP");
    const heir = await sb.processes.startWorker({ name: "heir", concurrency: JOBS, env: sb.env });
    await waitUntil(() => by("startsById", heir.pid), { timeoutMs: 15_000, what: "the heir reclaiming every job" });
    zombie.signal("SIGCONT");
    const resumedAt = Date.now();
    await waitUntil(() => by("abortsById", zombie.pid), { timeoutMs: 5000, what: "the zombie aborting its runs" });
    const abortedAfterMs = Date.now() - resumedAt;
    const books = await awaitBooks(sb.app, ids, sb.ledgerDir, 30_000);
    const ledger = readLedger(sb.ledgerDir);
    const zombieEnds = ids.filter((id) => ledger.endsById.get(id)?.some((e) => e.pid === zombie.pid)).length;
    report(`${broker}-lease-loss-abort`, {
      broker,
      claimMinIdleMs: CLAIM_MS,
      taskMs: TASK_MS,
      jobs: JOBS,
      abortedAfterResumeMs: abortedAfterMs,
      zombieRunsCompleted: zombieEnds,
      books,
    });
    expect(zombieEnds).toBe(0);
    // One renewal interval (claimMinIdle / 3) plus the time the resumed process needs.
    expect(abortedAfterMs).toBeLessThan(CLAIM_MS);
    expect(books.missing).toBe(0);
    expect(books.success).toBe(JOBS);
    expect(books.duplicates).toBe(0);
  } catch (error) {
    console.error(sb.processes.describe());
    throw error;
  } finally {
    await sb.close();
  }
}

describe("lease loss (SIGSTOP longer than the lease, then SIGCONT)", () => {
  it("SQLite: jobs move to another worker; the zombie's late acks are fenced; nothing lost", async () => {
    await zombieScenario("sqlite");
  }, 60_000);

  it.skipIf(skipRedis)(
    "Redis: jobs move to another worker; nothing lost; late acks are fenced",
    async () => {
      await zombieScenario("redis", REDIS_LATE_ACK_UNFENCED);
    },
    60_000,
  );

  it.skipIf(skipRedis)(
    "Redis: a zombie's late failure of the runs it lost leaves the heir's SUCCESS in place",
    async () => {
      await zombieFailsLateScenario("redis", false); // FAILURE record carried by the (fenced) ack
      await zombieFailsLateScenario("redis", true); // DEAD_LETTERED record stored before the move
    },
    90_000,
  );

  it("SQLite: once resumed, the zombie aborts the runs it lost (tasks honouring ctx.signal run once)", async () => {
    await abortedZombieScenario("sqlite");
  }, 60_000);

  it.skipIf(skipRedis)(
    "Redis: once resumed, the zombie aborts the runs it lost (tasks honouring ctx.signal run once)",
    async () => {
      await abortedZombieScenario("redis");
    },
    60_000,
  );
});

/**
 * G2, shutdown timeout exceeded (SPEC §6 `stop(timeout)`), on SQLite and Redis, with real
 * `chicory worker` processes (`--shutdown-timeout 2`) and the ledger oracle. Worker A runs three
 * 60 s jobs: an at-least-once task that honours its AbortSignal, an at-least-once task that
 * ignores it, and an at-most-once task that honours it. SIGTERM; worker B stands by.
 * - Each task's `ctx.signal` aborts at the timeout (the tasks write an `abort` ledger line).
 * - A exits within timeout + 2 s, although one task ignores the abort and its timer still runs.
 * - The at-least-once jobs are not acknowledged: A releases them and B starts them again at
 *   once, long before the lease (10 s here) would have run out.
 * - The at-most-once job (acknowledged before it ran) is not run again, and its stored state is
 *   FAILURE with error type TaskAbortedError (the SPEC has no ABORTED state).
 */
import { describe, expect, it } from "vitest";
import { skipUnless } from "../helpers/services.js";
import { report } from "./harness/books.js";
import { leaseOwners, workerIdOf } from "./harness/inspect.js";
import { readLedger } from "./harness/ledger.js";
import { type BrokerKind, openSandbox } from "./harness/sandbox.js";
import { waitUntil } from "./harness/wait.js";

const skipRedis = await skipUnless("redis");

async function shutdownTimeoutScenario(broker: BrokerKind): Promise<void> {
  const LEASE_MS = 10_000;
  const TIMEOUT_S = 2;
  const LONG_MS = 60_000;
  const sb = openSandbox({ broker, claimMinIdleMs: LEASE_MS });
  try {
    const never = async (_ms: number): Promise<number> => {
      throw new Error("the test process never runs tasks");
    };
    const abortable = sb.app.task({ name: "long_abortable", deliveryMode: "at_least_once" }, never);
    const ignoring = sb.app.task({ name: "long_ignoring", deliveryMode: "at_least_once" }, never);
    const abortableAmo = sb.app.task({ name: "long_abortable_amo", deliveryMode: "at_most_once" }, never);
    await sb.app.connect();
    const a = await sb.processes.startWorker({
      name: "a",
      concurrency: 3,
      env: sb.env,
      shutdownTimeoutSeconds: TIMEOUT_S,
    });
    const ids = {
      abortable: (await abortable.delay(LONG_MS)).taskId,
      ignoring: (await ignoring.delay(LONG_MS)).taskId,
      abortableAmo: (await abortableAmo.delay(LONG_MS)).taskId,
    };
    const all = Object.values(ids);
    await waitUntil(
      () => {
        const ledger = readLedger(sb.ledgerDir);
        return all.every((id) => ledger.startsById.get(id)?.some((s) => s.pid === a.pid));
      },
      { timeoutMs: 10_000, what: "the 3 long jobs running on worker a" },
    );
    const b = await sb.processes.startWorker({ name: "b", concurrency: 3, env: sb.env });
    const bId = workerIdOf(b.output.stderr);
    const termAt = Date.now();
    a.signal("SIGTERM");
    const aExit = await a.exited;
    const rerunAt = await waitUntil(
      () => {
        const ledger = readLedger(sb.ledgerDir);
        const onB = [ids.abortable, ids.ignoring].map(
          (id) => ledger.startsById.get(id)?.find((s) => s.pid === b.pid)?.t,
        );
        return onB.every((t) => t !== undefined) ? Math.max(...(onB as number[])) : undefined;
      },
      { timeoutMs: LEASE_MS + 10_000, what: "worker b to start the two at-least-once jobs again" },
    );
    const amoRecord = await waitUntil(
      async () => {
        const record = await sb.app.backend?.getResult(ids.abortableAmo);
        return record && record.state !== "STARTED" ? record : undefined;
      },
      { timeoutMs: 5000, what: "the at-most-once job's final state" },
    );
    const ledger = readLedger(sb.ledgerDir);
    const abortAfterTerm = Object.fromEntries(
      Object.entries(ids).map(([name, id]) => {
        const abort = ledger.abortsById.get(id)?.find((e) => e.pid === a.pid);
        return [name, abort ? abort.t - termAt : null];
      }),
    );
    const ends = all.filter((id) => ledger.endsById.has(id));
    const amoStarts = ledger.startsById.get(ids.abortableAmo)?.length ?? 0;
    const owners = await leaseOwners(sb);
    const queued = await sb.app.broker.getQueueSize("default");
    report(`${broker}-shutdown-timeout`, {
      broker,
      shutdownTimeoutS: TIMEOUT_S,
      leaseMs: LEASE_MS,
      taskMs: LONG_MS,
      exit: aExit,
      exitAfterTermMs: aExit.at - termAt,
      abortAfterTermMs: abortAfterTerm,
      rerunOnBAfterTermMs: rerunAt - termAt,
      rerunOnBAfterExitMs: rerunAt - aExit.at,
      atMostOnce: { starts: amoStarts, state: amoRecord.state, errorType: amoRecord.error?.type ?? null },
      endLines: ends.length,
      leasedToB: [ids.abortable, ids.ignoring].filter((id) => owners.get(id) === bId).length,
      queued,
    });
    // The AbortSignal fires at the timeout, for the tasks that honour it and the one that does not.
    for (const ms of Object.values(abortAfterTerm)) {
      expect(ms).not.toBeNull();
      expect(ms as number).toBeGreaterThanOrEqual(TIMEOUT_S * 1000 - 50);
      expect(ms as number).toBeLessThanOrEqual(TIMEOUT_S * 1000 + 1000);
    }
    // The process exits within timeout + 2 s, even with a task that ignores the abort.
    expect(aExit.code).toBe(0);
    expect(aExit.at - termAt).toBeLessThanOrEqual(TIMEOUT_S * 1000 + 2000);
    expect(ends).toEqual([]);
    // At-least-once: released, not left to the lease: B runs them again within 2 s of the exit.
    expect(rerunAt - aExit.at).toBeLessThan(2000);
    expect(rerunAt - termAt).toBeLessThan(LEASE_MS);
    expect([ids.abortable, ids.ignoring].every((id) => owners.get(id) === bId)).toBe(true);
    // At-most-once: never rerun; recorded as a failure by abort.
    expect(amoStarts).toBe(1);
    expect(amoRecord.state).toBe("FAILURE");
    expect(amoRecord.error?.type).toBe("TaskAbortedError");
    expect(owners.has(ids.abortableAmo)).toBe(false);
    expect(queued).toBe(0);
  } catch (error) {
    console.error(sb.processes.describe());
    throw error;
  } finally {
    await sb.close();
  }
}

describe("shutdown timeout exceeded (G2)", () => {
  it("SQLite: tasks are aborted at the timeout, the worker exits, at-least-once jobs are released at once, the at-most-once job ends FAILURE", async () => {
    await shutdownTimeoutScenario("sqlite");
  }, 60_000);

  it.skipIf(skipRedis)(
    "Redis: tasks are aborted at the timeout, the worker exits, at-least-once jobs are released at once, the at-most-once job ends FAILURE",
    async () => {
      await shutdownTimeoutScenario("redis");
    },
    60_000,
  );
});

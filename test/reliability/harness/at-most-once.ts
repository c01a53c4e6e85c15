/**
 * Books of at-most-once runs. An at-most-once job is acknowledged before it runs, so a kill of
 * the worker running it may lose it, but nothing may run it twice. Once the broker holds
 * nothing, every confirmed id is either SUCCESS or lost, and each lost id falls in one class:
 * - `interrupted`: started on a killed worker, no `end` line (cut short by the kill);
 * - `resultLost`: ended on a killed worker, result never stored (killed between the two);
 * - `neverStarted`: no `start` line anywhere: acknowledged by a worker that was killed before the
 *   run began (the ledger cannot see that window, between the ack reply and the handler);
 * - `onLiveWorker`: started on a worker that was never killed, yet not SUCCESS (a defect).
 * Plus a sampler of what the broker holds leased (Redis: the group's PEL) during a run.
 */
import Database from "better-sqlite3";
import type { TaskState } from "../../../src/backends/backend.js";
import { rawRedis } from "../../integration/redis/redis-test-keys.js";
import { type Books, computeBooks, dlqIds, fetchStates } from "./books.js";
import { redisPending } from "./inspect.js";
import { type Ledger, readLedger } from "./ledger.js";
import type { Sandbox } from "./sandbox.js";
import { sleep } from "./wait.js";

/** Lost at-most-once jobs by class (see module doc), with a few ids of each. */
export interface LostJobs {
  readonly total: number;
  readonly interrupted: number;
  readonly resultLost: number;
  readonly neverStarted: number;
  readonly onLiveWorker: number;
  readonly sample: Record<string, readonly string[]>;
}

/** Ids that `pid` started and did not end (its in-flight runs when it was killed). */
export function inFlightOf(ledger: Ledger, pid: number): string[] {
  const ids: string[] = [];
  for (const [id, starts] of ledger.startsById) {
    if (!starts.some((s) => s.pid === pid)) continue;
    if ((ledger.endsById.get(id) ?? []).some((e) => e.pid === pid)) continue;
    ids.push(id);
  }
  return ids;
}

/** Classifies the confirmed ids that did not reach SUCCESS. */
export function classifyLost(
  confirmed: readonly string[],
  states: ReadonlyMap<string, TaskState | "UNKNOWN">,
  ledger: Ledger,
  killed: ReadonlySet<number>,
): LostJobs {
  const classes: Record<"interrupted" | "resultLost" | "neverStarted" | "onLiveWorker", string[]> = {
    interrupted: [],
    resultLost: [],
    neverStarted: [],
    onLiveWorker: [],
  };
  for (const id of new Set(confirmed)) {
    if (states.get(id) === "SUCCESS") continue;
    const starts = ledger.startsById.get(id) ?? [];
    const ends = ledger.endsById.get(id) ?? [];
    if (starts.length === 0) classes.neverStarted.push(id);
    else if (starts.some((s) => !killed.has(s.pid))) classes.onLiveWorker.push(id);
    else if (ends.length === 0) classes.interrupted.push(id);
    else classes.resultLost.push(id);
  }
  const sample: Record<string, string[]> = {};
  for (const [name, ids] of Object.entries(classes)) if (ids.length > 0) sample[name] = ids.slice(0, 10);
  return {
    total: Object.values(classes).reduce((n, ids) => n + ids.length, 0),
    interrupted: classes.interrupted.length,
    resultLost: classes.resultLost.length,
    neverStarted: classes.neverStarted.length,
    onLiveWorker: classes.onLiveWorker.length,
    sample,
  };
}

/**
 * Waits until the broker holds nothing (queued or leased) and every run begun on a live worker
 * has ended with its result stored; then returns the books and the lost jobs. At the deadline,
 * returns what it has (the test asserts on it).
 */
export async function awaitAtMostOnce(
  sb: Sandbox,
  confirmed: readonly string[],
  killed: ReadonlySet<number>,
  timeoutMs: number,
): Promise<{
  books: Books;
  lost: LostJobs;
  states: ReadonlyMap<string, TaskState | "UNKNOWN">;
  ledger: Ledger;
  settledAfterMs: number;
  timedOut: boolean;
}> {
  const start = Date.now();
  const deadline = start + timeoutMs;
  const unique = [...new Set(confirmed)];
  for (;;) {
    const timedOut = Date.now() > deadline;
    const [size, pending] = await Promise.all([
      sb.app.broker.getQueueSize("default"),
      sb.app.broker.getPendingCount("default"),
    ]);
    if ((size === 0 && pending === 0) || timedOut) {
      const ledger = readLedger(sb.ledgerDir);
      const runningOnLive = unique.some((id) => {
        const starts = ledger.startsById.get(id) ?? [];
        const ends = ledger.endsById.get(id) ?? [];
        return starts.some((s) => !killed.has(s.pid) && !ends.some((e) => e.pid === s.pid));
      });
      if (!runningOnLive || timedOut) {
        const states = await fetchStates(sb.app, unique);
        const unstored = unique.some((id) => {
          const ends = ledger.endsById.get(id) ?? [];
          return ends.some((e) => !killed.has(e.pid)) && states.get(id) !== "SUCCESS";
        });
        if (!unstored || timedOut) {
          const books = computeBooks(unique, states, await dlqIds(sb.app), ledger);
          const lost = classifyLost(unique, states, ledger, killed);
          return { books, lost, states, ledger, settledAfterMs: Date.now() - start, timedOut };
        }
      }
    }
    await sleep(100);
  }
}

/** What a {@link sampleLeases} sampler saw. */
export interface LeaseSamples {
  readonly samples: number;
  /** Samples at which the broker held no leased / pending entry. */
  readonly zeroSamples: number;
  /** Largest leased / pending count seen. */
  readonly maxPending: number;
  /** Largest count of entries unsettled for ≥ `staleMs` seen (left behind, not just in transit). */
  readonly maxStale: number;
  readonly staleMs: number;
  readonly intervalMs: number;
}

/**
 * Samples, every `intervalMs`, what the broker holds leased: Redis = XPENDING of the group
 * (entries delivered and not acknowledged), SQLite = rows with a lease holder. `staleMs`: an
 * entry counts as stale when unsettled and not renewed for that long (Redis: XPENDING IDLE;
 * SQLite: its lease ran out `staleMs − leaseMs` ago).
 */
export function sampleLeases(
  sb: Sandbox,
  options: { intervalMs: number; staleMs: number; leaseMs: number },
): { stop(): Promise<LeaseSamples> } {
  let stopped = false;
  let samples = 0;
  let zeroSamples = 0;
  let maxPending = 0;
  let maxStale = 0;
  const redis = sb.broker === "redis" ? rawRedis() : undefined;
  const db =
    sb.broker === "sqlite" ? new Database(sb.dbPath ?? "", { readonly: true, fileMustExist: true }) : undefined;
  const probe = async (): Promise<{ pending: number; stale: number }> => {
    if (redis) return redisPending(redis, sb, options.staleMs);
    const row = db
      ?.prepare(
        "SELECT COUNT(*) AS pending, COALESCE(SUM(locked_until <= ?), 0) AS stale FROM chicory_jobs WHERE locked_by IS NOT NULL",
      )
      .get(Date.now() - options.staleMs + options.leaseMs) as { pending: number; stale: number } | undefined;
    return { pending: Number(row?.pending ?? 0), stale: Number(row?.stale ?? 0) };
  };
  const loop = (async () => {
    while (!stopped) {
      try {
        const { pending, stale } = await probe();
        samples++;
        if (pending === 0) zeroSamples++;
        maxPending = Math.max(maxPending, pending);
        maxStale = Math.max(maxStale, stale);
      } catch {
        // the SQLite file may be busy for a moment: skip this sample
      }
      await sleep(options.intervalMs);
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      redis?.disconnect();
      db?.close();
      return { samples, zeroSamples, maxPending, maxStale, staleMs: options.staleMs, intervalMs: options.intervalMs };
    },
  };
}

/**
 * The books check: every confirmed job id → its final state (backend: SUCCESS / DEAD_LETTERED,
 * and the broker's DLQ) → `missing = confirmed − (SUCCESS ∪ DLQ)`; duplicates from the
 * execution ledger: `duplicates = Σ max(0, endLines(id) − 1)` (completed runs beyond one) and
 * `duplicateStarts = Σ max(0, startLines(id) − 1)` (runs begun beyond one, including runs killed
 * mid-way). Plus a summary object the tests assert on and print.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { TaskState } from "../../../src/backends/backend.js";
import type { Chicory } from "../../../src/index.js";
import { type Ledger, readLedger } from "./ledger.js";
import { sleep } from "./wait.js";

/** A confirmed id with no terminal state, and what the ledger knows of it. */
export interface MissingJob {
  readonly id: string;
  readonly state: TaskState | "UNKNOWN";
  readonly starts: number;
  readonly lastLedgerLine: string | null;
}

/** The summary the tests assert on and print. */
export interface Books {
  readonly confirmed: number;
  readonly success: number;
  readonly deadLettered: number;
  /** confirmed − (SUCCESS ∪ DLQ). */
  readonly missing: number;
  /** Up to 20 of them, with their last ledger line. */
  readonly missingSample: readonly MissingJob[];
  /** Completed runs (ledger `end` lines of confirmed ids). */
  readonly completedRuns: number;
  /** Runs begun (ledger `start` lines of confirmed ids). */
  readonly startedRuns: number;
  /** Σ max(0, end lines − 1): completed runs beyond one per id. */
  readonly duplicates: number;
  /** Σ max(0, start lines − 1): runs begun beyond one per id (includes runs killed mid-way). */
  readonly duplicateStarts: number;
  /** Ids run to completion more than once. */
  readonly duplicateIds: readonly string[];
  /** Start lines without an end line in the same process (runs cut short by a kill). */
  readonly startedNotFinished: number;
  /** Most completed runs of one id. */
  readonly maxRunsPerId: number;
  /** Unparseable ledger lines (torn by a kill). */
  readonly tornLines: number;
}

/** Final states of `ids` from the backend (absent = UNKNOWN). */
export async function fetchStates(app: Chicory, ids: readonly string[]): Promise<Map<string, TaskState | "UNKNOWN">> {
  const backend = app.backend;
  if (!backend) throw new Error("the books need a result backend");
  const states = new Map<string, TaskState | "UNKNOWN">();
  for (let i = 0; i < ids.length; i += 200) {
    const chunk = ids.slice(i, i + 200);
    const records = await Promise.all(chunk.map((id) => backend.getResult(id)));
    chunk.forEach((id, k) => {
      states.set(id, records[k]?.state ?? "UNKNOWN");
    });
  }
  return states;
}

/** Task ids in the DLQ of `queue`. */
export async function dlqIds(app: Chicory, queue = "default"): Promise<Set<string>> {
  const entries = await app.broker.getDlqMessages(queue, 100_000);
  const ids = new Set<string>();
  for (const entry of entries) if (typeof entry.originalMessage?.id === "string") ids.add(entry.originalMessage.id);
  return ids;
}

/** Computes the books from the backend, the DLQ and the ledger. */
export async function checkBooks(app: Chicory, confirmed: readonly string[], ledgerDir: string): Promise<Books> {
  const states = await fetchStates(app, confirmed);
  const dlq = await dlqIds(app);
  return computeBooks(confirmed, states, dlq, readLedger(ledgerDir));
}

/** Pure part of {@link checkBooks}. */
export function computeBooks(
  confirmed: readonly string[],
  states: ReadonlyMap<string, TaskState | "UNKNOWN">,
  dlq: ReadonlySet<string>,
  ledger: Ledger,
): Books {
  let success = 0;
  let deadLettered = 0;
  const missing: MissingJob[] = [];
  let completedRuns = 0;
  let startedRuns = 0;
  let duplicates = 0;
  let duplicateStarts = 0;
  let maxRunsPerId = 0;
  const duplicateIds: string[] = [];
  for (const id of new Set(confirmed)) {
    const state = states.get(id) ?? "UNKNOWN";
    const ends = ledger.endsById.get(id)?.length ?? 0;
    const starts = ledger.startsById.get(id)?.length ?? 0;
    completedRuns += ends;
    startedRuns += starts;
    duplicates += Math.max(0, ends - 1);
    duplicateStarts += Math.max(0, starts - 1);
    maxRunsPerId = Math.max(maxRunsPerId, ends);
    if (ends > 1) duplicateIds.push(id);
    if (state === "SUCCESS") success++;
    else if (state === "DEAD_LETTERED" || dlq.has(id)) deadLettered++;
    else {
      const lines = ledger.entries.filter((e) => e.id === id);
      const last = lines[lines.length - 1];
      missing.push({ id, state, starts, lastLedgerLine: last ? JSON.stringify(last) : null });
    }
  }
  return {
    confirmed: new Set(confirmed).size,
    success,
    deadLettered,
    missing: missing.length,
    missingSample: missing.slice(0, 20),
    completedRuns,
    startedRuns,
    duplicates,
    duplicateStarts,
    duplicateIds: duplicateIds.slice(0, 50),
    startedNotFinished: startedRuns - completedRuns,
    maxRunsPerId,
    tornLines: ledger.tornLines,
  };
}

/**
 * Waits until every confirmed id has a terminal state (SUCCESS or dead-lettered), or the
 * deadline passes; returns the books either way (the test asserts on them). Cheap first: the
 * ledger's `end` lines must cover every id before the backend is asked.
 */
export async function awaitBooks(
  app: Chicory,
  confirmed: readonly string[],
  ledgerDir: string,
  timeoutMs: number,
): Promise<Books & { settledAfterMs: number; brokerQuietAfterMs: number }> {
  const start = Date.now();
  const deadline = start + timeoutMs;
  const unique = new Set(confirmed);
  for (let round = 1; ; round++) {
    const ledger = readLedger(ledgerDir);
    let ended = 0;
    for (const id of unique) if (ledger.endsById.has(id)) ended++;
    // Dead-lettered jobs have no `end` line: ask the backend every 2 s regardless.
    if (ended >= unique.size || round % 20 === 0 || Date.now() > deadline) {
      const books = await checkBooks(app, confirmed, ledgerDir);
      if (books.missing === 0 || Date.now() > deadline) {
        const settledAfterMs = Date.now() - start;
        // Quiesce: duplicate runs may still be in flight; wait until the broker holds nothing
        // (queued or leased) before counting them.
        const quiet = await waitQuiet(app, deadline);
        const final = quiet ? await checkBooks(app, confirmed, ledgerDir) : books;
        return { ...final, settledAfterMs, brokerQuietAfterMs: Date.now() - start };
      }
    }
    await sleep(100);
  }
}

/** Waits until `queue` has nothing waiting and nothing leased; false at the deadline. */
export async function waitQuiet(app: Chicory, deadline: number, queue = "default"): Promise<boolean> {
  for (;;) {
    const [size, pending] = await Promise.all([app.broker.getQueueSize(queue), app.broker.getPendingCount(queue)]);
    if (size === 0 && pending === 0) return true;
    if (Date.now() > deadline) return false;
    await sleep(100);
  }
}

/** Prints a tagged JSON line (quoted by the docs) and, with CHICORY_RELIABILITY_REPORT_DIR, writes `<name>.json`. */
export function report(name: string, data: Record<string, unknown>): void {
  const payload = { test: name, at: new Date().toISOString(), node: process.version, ...data };
  console.log(`[reliability] ${name} ${JSON.stringify(payload)}`);
  const dir = process.env.CHICORY_RELIABILITY_REPORT_DIR;
  if (dir) {
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, `${name}.json`), `${JSON.stringify(payload, null, 2)}\n`);
  }
}

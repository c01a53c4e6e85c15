/**
 * The execution ledger (the oracle, independent of the system under test): JSONL files written
 * by the fixture app's tasks, one per worker process, `start` before and `end` after the
 * simulated work, and `abort` when a long task's AbortSignal fired. A torn last line (the writer
 * was killed mid-write) is ignored.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

/** One ledger line. */
export interface LedgerEntry {
  readonly e: "start" | "end" | "abort";
  /** Task id. */
  readonly id: string;
  /** Worker process. */
  readonly pid: number;
  /** Epoch ms. */
  readonly t: number;
  /** Retries of the message. */
  readonly r: number;
}

/** The ledger read back, indexed. */
export interface Ledger {
  readonly entries: readonly LedgerEntry[];
  readonly startsById: ReadonlyMap<string, readonly LedgerEntry[]>;
  readonly endsById: ReadonlyMap<string, readonly LedgerEntry[]>;
  readonly abortsById: ReadonlyMap<string, readonly LedgerEntry[]>;
  /** Lines that did not parse (torn last lines); expected ≤ 1 per killed process. */
  readonly tornLines: number;
}

function isEntry(value: unknown): value is LedgerEntry {
  if (typeof value !== "object" || value === null) return false;
  const v = value as Record<string, unknown>;
  return (v.e === "start" || v.e === "end" || v.e === "abort") && typeof v.id === "string" && typeof v.pid === "number";
}

/** Reads every `ledger-*.jsonl` of `dir`. */
export function readLedger(dir: string): Ledger {
  const entries: LedgerEntry[] = [];
  let tornLines = 0;
  for (const name of readdirSync(dir)) {
    if (!name.startsWith("ledger-") || !name.endsWith(".jsonl")) continue;
    for (const line of readFileSync(join(dir, name), "utf8").split("\n")) {
      if (line === "") continue;
      try {
        const parsed: unknown = JSON.parse(line);
        if (isEntry(parsed)) entries.push(parsed);
        else tornLines++;
      } catch {
        tornLines++;
      }
    }
  }
  entries.sort((a, b) => a.t - b.t);
  const startsById = new Map<string, LedgerEntry[]>();
  const endsById = new Map<string, LedgerEntry[]>();
  const abortsById = new Map<string, LedgerEntry[]>();
  for (const entry of entries) {
    const index = entry.e === "start" ? startsById : entry.e === "end" ? endsById : abortsById;
    const list = index.get(entry.id);
    if (list) list.push(entry);
    else index.set(entry.id, [entry]);
  }
  return { entries, startsById, endsById, abortsById, tornLines };
}

/** Number of `start` lines written by `pid` (all ids). */
export function startsOf(ledger: Ledger, pid: number): number {
  return ledger.entries.filter((e) => e.e === "start" && e.pid === pid).length;
}

/**
 * Recovery after a fault at `faultAt` on `pid`: for every id that `pid` started and did not end,
 * the delay until another process started it again. Returns the ids and the delays (ms).
 */
export function recoveries(
  ledger: Ledger,
  pid: number,
  faultAt: number,
): { interrupted: string[]; recoveryMs: number[]; neverRestarted: string[] } {
  const interrupted: string[] = [];
  const recoveryMs: number[] = [];
  const neverRestarted: string[] = [];
  for (const [id, starts] of ledger.startsById) {
    const mine = starts.filter((s) => s.pid === pid && s.t <= faultAt);
    if (mine.length === 0) continue;
    const ended = (ledger.endsById.get(id) ?? []).some((e) => e.pid === pid && e.t <= faultAt);
    if (ended) continue;
    interrupted.push(id);
    const again = starts.find((s) => s.pid !== pid && s.t > faultAt);
    if (again) recoveryMs.push(again.t - faultAt);
    else neverRestarted.push(id);
  }
  return { interrupted, recoveryMs, neverRestarted };
}

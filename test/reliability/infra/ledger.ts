/**
 * The oracle of the infrastructure fault tests, kept in the test process and independent of
 * the system under test: which jobs the producer saw confirmed, which publishes failed, and
 * which jobs the task handler ran to completion (and how often).
 */

/** Resolves when `condition` holds, polling every `intervalMs`; false after `timeoutMs`. */
export async function waitFor(
  condition: () => boolean | Promise<boolean>,
  timeoutMs: number,
  intervalMs = 50,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return true;
    if (Date.now() >= deadline) return false;
    await sleepMs(intervalMs);
  }
}

/** A plain timer sleep (fault tests pace load and wait out outages). */
export function sleepMs(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Producer and execution ledger of one run, by job index. */
export class JobLedger {
  /** Job index -> time its publish was confirmed (delay() resolved). */
  readonly confirmed = new Map<number, number>();
  /** Job index -> completed executions of the handler. */
  readonly runs = new Map<number, number>();
  /** Publish attempts that rejected (not confirmed; the job may or may not exist). */
  failedAttempts = 0;
  /** Error names/codes of the failed attempts, counted. */
  readonly failureKinds = new Map<string, number>();
  /** Times of completed executions, in order. */
  readonly completions: number[] = [];
  /** Job index -> time its first publish attempt started. */
  readonly startedAt = new Map<number, number>();
  /** Job index -> time of its first completed execution. */
  readonly ranAt = new Map<number, number>();

  /** Records a confirmed publish. */
  confirm(index: number): void {
    if (!this.confirmed.has(index)) this.confirmed.set(index, Date.now());
  }

  /** Records a rejected publish attempt. */
  fail(error: unknown): void {
    this.failedAttempts += 1;
    const kind =
      error instanceof Error ? `${error.name}${"code" in error ? `:${String(error.code)}` : ""}` : String(error);
    this.failureKinds.set(kind, (this.failureKinds.get(kind) ?? 0) + 1);
  }

  /** Records a completed execution (called at the end of the task handler). */
  ran(index: number): void {
    const now = Date.now();
    this.runs.set(index, (this.runs.get(index) ?? 0) + 1);
    this.completions.push(now);
    if (!this.ranAt.has(index)) this.ranAt.set(index, now);
  }

  /** Confirmed jobs the handler never completed. */
  notRun(): number[] {
    return [...this.confirmed.keys()].filter((i) => !this.runs.has(i));
  }

  /** Extra executions: Σ max(0, runs − 1). */
  duplicates(): number {
    let n = 0;
    for (const count of this.runs.values()) n += Math.max(0, count - 1);
    return n;
  }

  /** First completion at or after `t`, or undefined. */
  firstCompletionAfter(t: number): number | undefined {
    return this.completions.find((c) => c >= t);
  }

  /**
   * First completion of a job whose first publish attempt started at or after `t`: the first
   * job that went all the way through the broker after `t` (jobs already published or running
   * at `t`, and re-publishes of them, do not count).
   */
  firstRunOfJobStartedAfter(t: number): number | undefined {
    let first: number | undefined;
    for (const [index, startedAt] of this.startedAt) {
      const ranAt = this.ranAt.get(index);
      if (startedAt >= t && ranAt !== undefined && (first === undefined || ranAt < first)) first = ranAt;
    }
    return first;
  }

  /** Completions at or after `t`. */
  completionsAfter(t: number): number {
    return this.completions.filter((c) => c >= t).length;
  }
}

/** Options of {@link produce}. */
export interface ProduceOptions {
  /** Jobs 0..count-1. */
  readonly count: number;
  /** Publish rate (jobs started per second). */
  readonly ratePerSec: number;
  /** Publishes in flight at once. */
  readonly parallel: number;
  /** Publishes job `index` (resolves when the broker confirmed it). */
  readonly publish: (index: number) => Promise<unknown>;
  readonly ledger: JobLedger;
  /** Retry a rejected publish of the same job after this many ms (undefined: give up on it). */
  readonly retryAfterMs?: number;
  /** Stop retrying and starting publishes after this time (epoch ms). */
  readonly deadline: number;
  /** Called once job `index` is started (lets a test inject a fault at a given point). */
  readonly onStart?: (index: number) => void;
}

/**
 * Publishes `count` jobs at a steady rate with bounded parallelism, recording confirmations
 * and failures in the ledger; a failed job is retried (same index and task id) when asked.
 */
export async function produce(options: ProduceOptions): Promise<void> {
  const { count, ratePerSec, parallel, publish, ledger, retryAfterMs, deadline } = options;
  const t0 = Date.now();
  let next = 0;
  const lane = async () => {
    for (;;) {
      const index = next++;
      if (index >= count) return;
      const due = t0 + (index * 1000) / ratePerSec;
      if (due > Date.now()) await sleepMs(due - Date.now());
      options.onStart?.(index);
      ledger.startedAt.set(index, Date.now());
      for (;;) {
        if (Date.now() > deadline) return;
        try {
          await publish(index);
          ledger.confirm(index);
          break;
        } catch (error) {
          ledger.fail(error);
          if (retryAfterMs === undefined) break;
          await sleepMs(retryAfterMs);
        }
      }
    }
  };
  await Promise.all(Array.from({ length: parallel }, lane));
}

/** One line of measurements, printed so the report of a run carries its figures. */
export function report(test: string, figures: Record<string, unknown>): void {
  console.log(`[reliability] ${test} ${JSON.stringify(figures)}`);
}

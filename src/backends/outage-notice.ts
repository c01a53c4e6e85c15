/**
 * Telling of a result backend outage that waits meet: the bookkeeping behind the warning a
 * `get()` without a timeout gives when its backend cannot be read, shared by every backend's
 * waiting (the Redis backend's `ResultWaiter`, the SQL backends' `SqlWaitHub`). Pure logic: the
 * waiting code reports each read that failed, went unanswered or succeeded.
 * @module
 */

import type { Logger } from "../core/logger.js";

/**
 * How waiting tells of an outage: when waiters are waiting and no read of their records has
 * succeeded for {@link OUTAGE_NOTICE_MS} (reads that fail, or that get no answer: a client
 * holding its commands while it reconnects), one warning, whatever the number of waits; one
 * info line when a read succeeds again. The waits themselves go on unchanged.
 */
export interface OutageNotice {
  /** Receives the warning and the recovery line. */
  readonly logger: Logger;
  /** The backend as the lines name it, password masked: `redis backend redis://:***@host:6379/0`. */
  readonly backend: string;
  /** Why the backend cannot be read, as its connection last said (`"; last error: ..."`), or "". */
  lastError?(): string;
}

/** How long waiters' reads fail, or go unanswered, before an {@link OutageNotice} warns. */
export const OUTAGE_NOTICE_MS = 5000;

/**
 * The outage state of one waiting hub: fed with its reads' outcomes, it warns once per outage
 * through its {@link OutageNotice} (none: it only tracks, for {@link OutageWatch.hasFailed}).
 * Nothing is done per wait or per successful read beyond testing {@link OutageWatch.isActive}.
 * @example
 * ```ts
 * const watch = new OutageWatch(notice, () => waiters.size);
 * try {
 *   const read = await fetch(ids);
 *   if (watch.isActive) watch.readAgain();
 * } catch (error) {
 *   watch.failed(error);
 * }
 * ```
 */
export class OutageWatch {
  readonly #notice: OutageNotice | undefined;
  readonly #waiting: () => number;
  /**
   * Since when (performance.now() ms) no read has succeeded, while one failed or was seen
   * unanswered; undefined while reads succeed.
   */
  #troubleSinceMs: number | undefined;
  /** The last failed read's error message ("" when reads went unanswered rather than failed). */
  #troubleError = "";
  /** Fires {@link OUTAGE_NOTICE_MS} after the trouble began (once per outage, unref'd). */
  #timer: NodeJS.Timeout | undefined;
  /** When the outage that was warned of began (performance.now() ms); undefined when none was. */
  #warnedSinceMs: number | undefined;

  /**
   * @param notice where and how to tell (undefined: track only)
   * @param waiting how many task ids are waited for now (0 once the hub is closed): trouble met
   *   while nobody waits is not an outage anyone waits through
   */
  constructor(notice: OutageNotice | undefined, waiting: () => number) {
    this.#notice = notice;
    this.#waiting = waiting;
  }

  /** True while reads are in trouble, or an outage warned of is not yet told over. */
  get isActive(): boolean {
    return this.#troubleSinceMs !== undefined || this.#warnedSinceMs !== undefined;
  }

  /** True when a read has failed since the last one that succeeded (not only gone unanswered). */
  get hasFailed(): boolean {
    return this.#troubleError !== "";
  }

  /** A read failed with `error`. */
  failed(error: unknown): void {
    if (this.#waiting() === 0) return;
    this.#troubleError = error instanceof Error ? error.message : String(error);
    this.#begin();
  }

  /**
   * A read is still out a poll interval after it was sent (the backend may not answer);
   * `sentAtMs` (performance.now() ms): when it was sent, from which the outage is counted.
   */
  unanswered(sentAtMs?: number): void {
    if (this.#waiting() === 0) return;
    this.#begin(sentAtMs);
  }

  /** A read succeeded: the trouble, if any, is over (told when it was warned of). */
  readAgain(): void {
    const warnedSince = this.#warnedSinceMs;
    this.reset();
    this.#warnedSinceMs = undefined;
    const notice = this.#notice;
    if (warnedSince === undefined || notice === undefined) return;
    const forMs = Math.round(performance.now() - warnedSince);
    notice.logger.info(
      { backend: notice.backend, unreachableForMs: forMs },
      `${notice.backend}: results can be read again (after ${(forMs / 1000).toFixed(1)} s)`,
    );
  }

  /**
   * Forgets the trouble (nobody waits any more, or the hub closed): an outage is told of again
   * only if a wait meets it. A warned outage's recovery is still told at the next read that
   * succeeds.
   */
  reset(): void {
    this.#troubleSinceMs = undefined;
    this.#troubleError = "";
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #begin(sinceMs?: number): void {
    if (this.#troubleSinceMs !== undefined) return;
    const now = performance.now();
    // (a read unanswered since it was sent: the trouble began then, not when it was noticed)
    this.#troubleSinceMs = sinceMs === undefined ? now : Math.min(sinceMs, now);
    if (this.#notice === undefined || this.#warnedSinceMs !== undefined) return;
    this.#timer = setTimeout(() => this.#warn(), Math.max(0, this.#troubleSinceMs + OUTAGE_NOTICE_MS - now));
    this.#timer.unref();
  }

  #warn(): void {
    this.#timer = undefined;
    const notice = this.#notice;
    const since = this.#troubleSinceMs;
    const waiting = this.#waiting();
    if (notice === undefined || since === undefined || waiting === 0) return;
    this.#warnedSinceMs = since;
    const forMs = Math.round(performance.now() - since);
    const reason =
      this.#troubleError === ""
        ? `no answer for ${(forMs / 1000).toFixed(1)} s${notice.lastError?.() ?? ""}`
        : this.#troubleError;
    notice.logger.warn(
      { backend: notice.backend, err: reason, waitingTaskIds: waiting, unreachableForMs: forMs },
      `${notice.backend}: results cannot be read (backend unreachable?); waits go on (until their timeout, if any) and resolve once it answers`,
    );
  }
}

/**
 * Waiting for many results with few queries: every waiting id of a backend lives in one
 * hub; one query fetches the state of all of them (`WHERE task_id IN (...)`, in chunks) per
 * poll interval, and a notification (PostgreSQL LISTEN) or a new waiter triggers a fetch of
 * just those ids, batched per event-loop turn.
 *
 * An outage is told of once (see `OutageNotice`): when no read of the waiting ids has succeeded
 * for 5 s (they failed, or one is still out a poll interval later), one warning, however many
 * waits and polls; one info line when a read succeeds again. The waits go on meanwhile.
 * @module
 */

import { offAbort, onAbort } from "../../core/abort-fanout.js";
import type { Logger } from "../../core/logger.js";
import { LongTimeout, timerDelay } from "../../core/sleep.js";
import { isTerminalState, type TaskRecord, type WaitOptions } from "../backend.js";
import { type OutageNotice, OutageWatch } from "../outage-notice.js";

/** Fetches the current records of `ids` (missing ids are left out). */
export type FetchRecords = (ids: readonly string[]) => Promise<TaskRecord[]>;

interface Waiter {
  readonly pollMs: number;
  resolve(record: TaskRecord | null): void;
}

/** A wait's timeout: it ends with nothing. */
function resolveNull(waiter: Waiter): void {
  waiter.resolve(null);
}

/** Batched waiting on task results. */
export class SqlWaitHub {
  readonly #fetch: FetchRecords;
  readonly #defaultPollMs: number;
  readonly #logger: Logger;
  readonly #waiters = new Map<string, Set<Waiter>>();
  readonly #due = new Set<string>();
  #flushScheduled = false;
  #pollTimer: NodeJS.Timeout | undefined;
  #pollAt = Number.POSITIVE_INFINITY;
  /** Notifications are flowing: poll only as a slow safety net. */
  #isNotified = false;
  /** Whether the waiters' reads fail or go unanswered, and telling of it. */
  readonly #outage: OutageWatch;

  /**
   * @param fetch the batched read of the waiting ids
   * @param defaultPollMs the poll interval of a wait that gives none
   * @param logger receives a debug line when the reads start failing
   * @param outage where an outage the waits meet is told of (none: not told)
   */
  constructor(fetch: FetchRecords, defaultPollMs: number, logger: Logger, outage?: OutageNotice) {
    this.#fetch = fetch;
    this.#defaultPollMs = defaultPollMs;
    this.#logger = logger;
    this.#outage = new OutageWatch(outage, () => this.#waiters.size);
  }

  /** Number of ids being waited on. */
  get size(): number {
    return this.#waiters.size;
  }

  /** Resolves with the record once terminal, or null on timeout/abort/close. */
  wait(taskId: string, options: WaitOptions = {}): Promise<TaskRecord | null> {
    if (options.signal?.aborted) return Promise.resolve(null);
    return new Promise((resolve) => {
      let timer: LongTimeout<Waiter> | undefined;
      const aborted = () => waiter.resolve(null);
      const waiter: Waiter = {
        pollMs: Math.max(10, options.pollIntervalMs ?? this.#defaultPollMs),
        resolve: (record) => {
          timer?.clear();
          if (options.signal) offAbort(options.signal, aborted);
          this.#remove(taskId, waiter);
          resolve(record);
        },
      };
      if (options.timeoutMs !== undefined) timer = new LongTimeout(resolveNull, options.timeoutMs, waiter);
      if (options.signal) onAbort(options.signal, aborted);
      let set = this.#waiters.get(taskId);
      if (!set) {
        set = new Set();
        this.#waiters.set(taskId, set);
      }
      set.add(waiter);
      // Registered before the first read, so a result written meanwhile is not missed.
      this.notify(taskId);
      this.#schedulePoll();
    });
  }

  /** A result of `taskId` may have become terminal: fetch it soon (batched). */
  notify(taskId: string): void {
    if (!this.#waiters.has(taskId)) return;
    this.#due.add(taskId);
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setImmediate(() => {
      this.#flushScheduled = false;
      const ids = [...this.#due];
      this.#due.clear();
      void this.#check(ids);
    });
  }

  /** Fetch every waiting id now (after a reconnect, when notifications may have been lost). */
  notifyAll(): void {
    for (const id of this.#waiters.keys()) this.notify(id);
  }

  /** Whether notifications are flowing (then the poll is a slow safety net). */
  setNotified(isNotified: boolean): void {
    this.#isNotified = isNotified;
    this.#reschedule();
  }

  /** Resolves every waiter with null and stops polling. */
  close(): void {
    for (const set of [...this.#waiters.values()]) for (const waiter of [...set]) waiter.resolve(null);
    this.#waiters.clear();
    this.#clearPoll();
    this.#outage.reset();
  }

  async #check(ids: readonly string[]): Promise<void> {
    if (ids.length === 0) return;
    let records: TaskRecord[];
    // a read still out a poll interval later: the database may not answer (a connection that
    // waits for its connect timeout, a half-open socket)
    const sentAtMs = performance.now();
    const unanswered = setTimeout(() => this.#outage.unanswered(sentAtMs), timerDelay(this.#intervalMs()));
    unanswered.unref();
    try {
      records = await this.#fetch(ids);
    } catch (error) {
      // the first failure of a run only: the outage warning (after 5 s) tells of the rest
      if (!this.#outage.hasFailed && this.#waiters.size > 0) {
        this.#logger.debug(
          { err: error, waiting: this.#waiters.size },
          "fetching waited results failed; retrying at the next poll",
        );
      }
      this.#outage.failed(error);
      return;
    } finally {
      clearTimeout(unanswered);
    }
    if (this.#outage.isActive) this.#outage.readAgain();
    for (const record of records) {
      if (!isTerminalState(record.state)) continue;
      const set = this.#waiters.get(record.taskId);
      if (set) for (const waiter of [...set]) waiter.resolve(record);
    }
  }

  #remove(taskId: string, waiter: Waiter): void {
    const set = this.#waiters.get(taskId);
    if (!set) return;
    set.delete(waiter);
    if (set.size === 0) this.#waiters.delete(taskId);
    if (this.#waiters.size === 0) {
      this.#clearPoll();
      // nobody waits: an outage is told of again only if a wait meets it
      this.#outage.reset();
    }
  }

  #intervalMs(): number {
    let min = Number.POSITIVE_INFINITY;
    for (const set of this.#waiters.values()) for (const w of set) min = Math.min(min, w.pollMs);
    return this.#isNotified ? Math.max(min * 10, 5000) : min;
  }

  #schedulePoll(): void {
    if (this.#waiters.size === 0) return;
    const at = Date.now() + this.#intervalMs();
    if (this.#pollTimer && this.#pollAt <= at) return;
    this.#clearPoll();
    this.#pollAt = at;
    this.#pollTimer = setTimeout(
      () => {
        this.#pollTimer = undefined;
        this.#pollAt = Number.POSITIVE_INFINITY;
        const ids = [...this.#waiters.keys()];
        void this.#check(ids).finally(() => this.#schedulePoll());
      },
      timerDelay(at - Date.now()),
    ); // an interval of weeks: not the 1 ms Node makes of an overflow
  }

  #reschedule(): void {
    this.#clearPoll();
    this.#schedulePoll();
  }

  #clearPoll(): void {
    if (this.#pollTimer) clearTimeout(this.#pollTimer);
    this.#pollTimer = undefined;
    this.#pollAt = Number.POSITIVE_INFINITY;
  }
}

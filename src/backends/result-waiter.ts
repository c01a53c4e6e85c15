/**
 * A per-backend hub of result waiters: all `waitForResult` calls of one backend instance
 * share one poll timer that fetches every waited-for id in one batched call per interval,
 * and push notifications (pub/sub, LISTEN/NOTIFY, local writes) resolve waiters at once.
 * Pure logic: the backend supplies the batched read.
 * @module
 */

import { offAbort, onAbort } from "../core/abort-fanout.js";
import { LongTimeout, timerDelay } from "../core/sleep.js";
import type { TaskRecord, WaitOptions } from "./backend.js";
import { isTerminalState } from "./backend.js";
import { type OutageNotice, OutageWatch } from "./outage-notice.js";

export { OUTAGE_NOTICE_MS, type OutageNotice } from "./outage-notice.js";

/** Options of a {@link ResultWaiter}. */
export interface ResultWaiterOptions {
  /**
   * Reads the records of `ids` (missing ids are simply absent from the map). An id whose stored
   * record cannot be read maps to the error saying why: its waiters reject with it.
   */
  fetchMany(ids: string[]): Promise<Map<string, TaskRecord | Error>>;
  /** Default interval of the fallback poll, in milliseconds. */
  pollIntervalMs: number;
  /** Most ids per `fetchMany` call (default 1000); more are read in several calls. */
  maxBatch?: number;
  /**
   * Called when a poll fails after one that succeeded (once per run of failures: the outage
   * notice covers the rest); waiters keep waiting and the next interval tries again.
   */
  onError?(error: unknown): void;
  /** Says so when waiters cannot read the backend for a while (see {@link OutageNotice}). */
  outage?: OutageNotice;
}

/**
 * One `wait()` call. A class with a `handleEvent` method (the abort listener) and a shared
 * timeout callback, so a wait allocates no closures: thousands of them may be pending at once.
 */
class Waiter {
  readonly taskId: string;
  readonly pollIntervalMs: number;
  readonly #resolve: (record: TaskRecord | null) => void;
  readonly #reject: (error: Error) => void;
  readonly #onSettled: (waiter: Waiter) => void;
  readonly #signal: AbortSignal | undefined;
  #timeout: LongTimeout<Waiter> | undefined;
  #isSettled = false;

  constructor(
    taskId: string,
    pollIntervalMs: number,
    resolve: (record: TaskRecord | null) => void,
    reject: (error: Error) => void,
    onSettled: (waiter: Waiter) => void,
    options: WaitOptions,
  ) {
    this.taskId = taskId;
    this.pollIntervalMs = pollIntervalMs;
    this.#resolve = resolve;
    this.#reject = reject;
    this.#onSettled = onSettled;
    this.#signal = options.signal;
    if (options.timeoutMs !== undefined) this.#timeout = new LongTimeout<Waiter>(expire, options.timeoutMs, this);
    if (this.#signal) onAbort(this.#signal, this);
  }

  /** The abort listener. */
  handleEvent(): void {
    this.settle(null);
  }

  settle(record: TaskRecord | null | Error): void {
    if (this.#isSettled) return;
    this.#isSettled = true;
    this.#timeout?.clear();
    if (this.#signal) offAbort(this.#signal, this);
    this.#onSettled(this);
    if (record instanceof Error) this.#reject(record);
    else this.#resolve(record);
  }
}

function expire(waiter: Waiter): void {
  waiter.settle(null);
}

/** The waiters of one task id: usually one, an array when several wait for the same id. */
type Waiters = Waiter | Waiter[];

function each(waiters: Waiters): readonly Waiter[] {
  return Array.isArray(waiters) ? [...waiters] : [waiters];
}

const MIN_POLL_INTERVAL_MS = 10;

/** Interval of the safety-net poll while push notifications are flowing. */
export const PUSH_SAFETY_POLL_MS = 5000;

/**
 * Shared waiting for terminal task records.
 * @example
 * ```ts
 * const waiter = new ResultWaiter({ fetchMany: (ids) => readRecords(ids), pollIntervalMs: 500 });
 * const record = await waiter.wait(taskId, { timeoutMs: 10_000 });
 * // on a notification or a local write of a terminal record:
 * waiter.notify(record);
 * ```
 */
export class ResultWaiter {
  readonly #fetchMany: ResultWaiterOptions["fetchMany"];
  readonly #defaultIntervalMs: number;
  readonly #maxBatch: number;
  readonly #onError: ((error: unknown) => void) | undefined;
  readonly #waiters = new Map<string, Waiters>();
  readonly #remover = (waiter: Waiter): void => this.#remove(waiter);
  /** Ids registered since the last poll: checked once at once (the record may already be terminal). */
  #fresh: string[] = [];
  #freshCheck: NodeJS.Immediate | undefined;
  #timer: NodeJS.Timeout | undefined;
  #timerIntervalMs = 0;
  /**
   * When the timer's poll out now was sent (performance.now() ms), undefined when none is out:
   * the next tick does not send another, and an outage of a backend that does not answer counts
   * from then.
   */
  #periodicSentAtMs: number | undefined;
  #isClosed = false;
  #isPushActive = false;
  /** Tells of an outage its waits meet (see {@link OutageNotice}); tracks it without one. */
  readonly #outage: OutageWatch;

  constructor(options: ResultWaiterOptions) {
    this.#fetchMany = options.fetchMany;
    this.#defaultIntervalMs = Math.max(MIN_POLL_INTERVAL_MS, options.pollIntervalMs);
    this.#maxBatch = Math.max(1, options.maxBatch ?? 1000);
    this.#onError = options.onError;
    this.#outage = new OutageWatch(options.outage, () => (this.#isClosed ? 0 : this.#waiters.size));
  }

  /** Number of task ids currently waited for. */
  get size(): number {
    return this.#waiters.size;
  }

  /**
   * Resolves with the record of `taskId` once it is terminal, or null when `timeoutMs`
   * passes, `signal` aborts or the waiter is closed; rejects when its stored record cannot be
   * read (see {@link ResultWaiterOptions.fetchMany}). The record is read once at once (it may
   * already be terminal), unless `isAnnounced`: the caller knows the record is not written yet
   * and that its notification will reach {@link ResultWaiter.notify} (the periodic poll still
   * covers the id).
   */
  wait(taskId: string, options: WaitOptions = {}, isAnnounced = false): Promise<TaskRecord | null> {
    if (this.#isClosed || options.signal?.aborted) return Promise.resolve(null);
    const pollIntervalMs = Math.max(MIN_POLL_INTERVAL_MS, options.pollIntervalMs ?? this.#defaultIntervalMs);
    return new Promise((resolve, reject) => {
      this.#add(new Waiter(taskId, pollIntervalMs, resolve, reject, this.#remover, options), isAnnounced);
    });
  }

  /** True when someone waits for `taskId`. */
  has(taskId: string): boolean {
    return this.#waiters.has(taskId);
  }

  /** Resolves the waiters of `record.taskId` when the record is terminal; ignores others. */
  notify(record: TaskRecord): void {
    if (!isTerminalState(record.state)) return;
    this.#settle(record.taskId, record);
  }

  /** Settles the waiters of each id of a `fetchMany` result: records as {@link notify}, errors reject. */
  notifyRead(read: Map<string, TaskRecord | Error>): void {
    for (const [taskId, value] of read) {
      if (value instanceof Error) this.#settle(taskId, value);
      else this.notify(value);
    }
  }

  #settle(taskId: string, outcome: TaskRecord | Error): void {
    const waiters = this.#waiters.get(taskId);
    if (waiters === undefined) return;
    if (Array.isArray(waiters)) for (const waiter of [...waiters]) waiter.settle(outcome);
    else waiters.settle(outcome);
  }

  /**
   * Tells the waiter whether push notifications are flowing. While they are, the poll is only a
   * safety net for a lost notification and runs every {@link PUSH_SAFETY_POLL_MS} at most; when
   * push comes back after a gap, every waited id is read once (notifications may have been
   * missed meanwhile).
   */
  setPushActive(isActive: boolean): void {
    if (this.#isPushActive === isActive) return;
    this.#isPushActive = isActive;
    if (this.#waiters.size === 0) return;
    let fastest = Number.POSITIVE_INFINITY;
    for (const waiters of this.#waiters.values()) {
      for (const w of each(waiters)) fastest = Math.min(fastest, w.pollIntervalMs);
    }
    this.#startTimer(this.#intervalFor(fastest));
    if (isActive) void this.#poll([...this.#waiters.keys()]);
  }

  #intervalFor(pollIntervalMs: number): number {
    return this.#isPushActive ? Math.max(PUSH_SAFETY_POLL_MS, pollIntervalMs) : pollIntervalMs;
  }

  /** Resolves every waiter with null and stops the timer; later waits resolve null at once. */
  close(): void {
    this.#isClosed = true;
    for (const waiters of [...this.#waiters.values()]) {
      for (const waiter of each(waiters)) waiter.settle(null);
    }
    this.#stopTimer();
    this.#outage.reset();
  }

  #add(waiter: Waiter, isAnnounced: boolean): void {
    const id = waiter.taskId;
    const existing = this.#waiters.get(id);
    if (existing === undefined) this.#waiters.set(id, waiter);
    else if (Array.isArray(existing)) existing.push(waiter);
    else this.#waiters.set(id, [existing, waiter]);
    if (!isAnnounced) this.#fresh.push(id);
    if (!isAnnounced && this.#freshCheck === undefined) {
      // one batched read for every wait() registered in this turn of the event loop
      this.#freshCheck = setImmediate(() => {
        this.#freshCheck = undefined;
        const ids = [...new Set(this.#fresh)].filter((fresh) => this.#waiters.has(fresh));
        this.#fresh = [];
        if (ids.length > 0) void this.#poll(ids);
      });
    }
    const intervalMs = this.#intervalFor(waiter.pollIntervalMs);
    if (this.#timer === undefined || intervalMs < this.#timerIntervalMs) {
      this.#startTimer(Math.min(intervalMs, this.#timerIntervalMs || Number.POSITIVE_INFINITY));
    }
  }

  #remove(waiter: Waiter): void {
    const id = waiter.taskId;
    const waiters = this.#waiters.get(id);
    if (waiters === waiter) this.#waiters.delete(id);
    else if (Array.isArray(waiters)) {
      const i = waiters.indexOf(waiter);
      if (i >= 0) waiters.splice(i, 1);
      if (waiters.length === 0) this.#waiters.delete(id);
      else if (waiters.length === 1) this.#waiters.set(id, waiters[0] as Waiter);
    }
    if (this.#waiters.size === 0) this.#stopTimer();
  }

  #startTimer(intervalMs: number): void {
    this.#stopTimer();
    this.#timerIntervalMs = intervalMs;
    this.#timer = setInterval(() => {
      // a slow read must not pile up overlapping polls; one still out a whole interval later
      // may be a backend that does not answer (its client holds the commands while it
      // reconnects). Only the timer's own poll holds the next one back: the first reads of new
      // waits, however many overlap, must not keep the safety net from running.
      if (this.#periodicSentAtMs !== undefined) this.#outage.unanswered(this.#periodicSentAtMs);
      else void this.#periodicPoll();
    }, timerDelay(intervalMs)); // a pollInterval of weeks: not the 1 ms Node makes of an overflow
    this.#timer.unref();
  }

  #stopTimer(): void {
    if (this.#waiters.size === 0 && this.#freshCheck !== undefined) {
      clearImmediate(this.#freshCheck);
      this.#freshCheck = undefined;
      this.#fresh = [];
    }
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#timerIntervalMs = 0;
    // nobody waits: an outage is told of again only if a wait meets it (a warned one's
    // recovery is still told at the next read that succeeds)
    if (this.#waiters.size === 0) this.#outage.reset();
  }

  async #periodicPoll(): Promise<void> {
    this.#periodicSentAtMs = performance.now();
    try {
      await this.#poll([...this.#waiters.keys()]);
    } finally {
      this.#periodicSentAtMs = undefined;
    }
  }

  async #poll(ids: string[]): Promise<void> {
    try {
      for (let i = 0; i < ids.length; i += this.#maxBatch) {
        const batch = ids.slice(i, i + this.#maxBatch).filter((id) => this.#waiters.has(id));
        if (batch.length === 0) continue;
        const read = await this.#fetchMany(batch);
        if (this.#outage.isActive) this.#outage.readAgain();
        this.notifyRead(read);
      }
    } catch (error) {
      // a read still out when the backend closed fails with its connection: nobody waits now
      if (!this.#isClosed) {
        if (!this.#outage.hasFailed) this.#onError?.(error);
        this.#outage.failed(error);
      }
    }
  }
}

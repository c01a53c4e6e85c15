/**
 * A per-backend hub of result waiters: all `waitForResult` calls of one backend instance
 * share one poll timer that fetches every waited-for id in one batched call per interval,
 * and push notifications (pub/sub, LISTEN/NOTIFY, local writes) resolve waiters at once.
 * Pure logic: the backend supplies the batched read.
 * @module
 */

import { timerDelay } from "../core/sleep.js";
import type { TaskRecord, WaitOptions } from "./backend.js";
import { isTerminalState } from "./backend.js";

/** Options of a {@link ResultWaiter}. */
export interface ResultWaiterOptions {
  /** Reads the records of `ids` (missing ids are simply absent from the map). */
  fetchMany(ids: string[]): Promise<Map<string, TaskRecord>>;
  /** Default interval of the fallback poll, in milliseconds. */
  pollIntervalMs: number;
  /** Most ids per `fetchMany` call (default 1000); more are read in several calls. */
  maxBatch?: number;
  /** Called when a poll fails; waiters keep waiting and the next interval tries again. */
  onError?(error: unknown): void;
}

interface Waiter {
  readonly taskId: string;
  readonly pollIntervalMs: number;
  settle(record: TaskRecord | null): void;
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
  readonly #waiters = new Map<string, Set<Waiter>>();
  /** Ids registered since the last poll: checked once at once (the record may already be terminal). */
  readonly #fresh = new Set<string>();
  #freshCheck: NodeJS.Immediate | undefined;
  #timer: NodeJS.Timeout | undefined;
  #timerIntervalMs = 0;
  #activePolls = 0;
  #isClosed = false;
  #isPushActive = false;

  constructor(options: ResultWaiterOptions) {
    this.#fetchMany = options.fetchMany;
    this.#defaultIntervalMs = Math.max(MIN_POLL_INTERVAL_MS, options.pollIntervalMs);
    this.#maxBatch = Math.max(1, options.maxBatch ?? 1000);
    this.#onError = options.onError;
  }

  /** Number of task ids currently waited for. */
  get size(): number {
    return this.#waiters.size;
  }

  /**
   * Resolves with the record of `taskId` once it is terminal, or null when `timeoutMs`
   * passes, `signal` aborts or the waiter is closed.
   */
  wait(taskId: string, options: WaitOptions = {}): Promise<TaskRecord | null> {
    const { signal, timeoutMs } = options;
    if (this.#isClosed || signal?.aborted) return Promise.resolve(null);
    return new Promise((resolve) => {
      let timeout: NodeJS.Timeout | undefined;
      const onAbort = (): void => waiter.settle(null);
      const waiter: Waiter = {
        taskId,
        pollIntervalMs: Math.max(MIN_POLL_INTERVAL_MS, options.pollIntervalMs ?? this.#defaultIntervalMs),
        settle: (record) => {
          if (timeout !== undefined) clearTimeout(timeout);
          signal?.removeEventListener("abort", onAbort);
          this.#remove(waiter);
          resolve(record);
        },
      };
      if (timeoutMs !== undefined) timeout = setTimeout(onAbort, timerDelay(timeoutMs));
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#add(waiter);
    });
  }

  /** Resolves the waiters of `record.taskId` when the record is terminal; ignores others. */
  notify(record: TaskRecord): void {
    if (!isTerminalState(record.state)) return;
    const waiters = this.#waiters.get(record.taskId);
    if (!waiters) return;
    for (const waiter of [...waiters]) waiter.settle(record);
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
    for (const set of this.#waiters.values()) for (const w of set) fastest = Math.min(fastest, w.pollIntervalMs);
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
      for (const waiter of [...waiters]) waiter.settle(null);
    }
    this.#stopTimer();
  }

  #add(waiter: Waiter): void {
    let set = this.#waiters.get(waiter.taskId);
    if (!set) {
      set = new Set();
      this.#waiters.set(waiter.taskId, set);
    }
    set.add(waiter);
    this.#fresh.add(waiter.taskId);
    if (this.#freshCheck === undefined) {
      // one batched read for every wait() registered in this turn of the event loop
      this.#freshCheck = setImmediate(() => {
        this.#freshCheck = undefined;
        const ids = [...this.#fresh].filter((id) => this.#waiters.has(id));
        this.#fresh.clear();
        if (ids.length > 0) void this.#poll(ids);
      });
    }
    const intervalMs = this.#intervalFor(waiter.pollIntervalMs);
    if (this.#timer === undefined || intervalMs < this.#timerIntervalMs) {
      this.#startTimer(Math.min(intervalMs, this.#timerIntervalMs || Number.POSITIVE_INFINITY));
    }
  }

  #remove(waiter: Waiter): void {
    const set = this.#waiters.get(waiter.taskId);
    if (!set) return;
    set.delete(waiter);
    if (set.size === 0) this.#waiters.delete(waiter.taskId);
    if (this.#waiters.size === 0) this.#stopTimer();
  }

  #startTimer(intervalMs: number): void {
    this.#stopTimer();
    this.#timerIntervalMs = intervalMs;
    this.#timer = setInterval(() => {
      // a slow read must not pile up overlapping polls
      if (this.#activePolls === 0) void this.#poll([...this.#waiters.keys()]);
    }, intervalMs);
    this.#timer.unref();
  }

  #stopTimer(): void {
    if (this.#waiters.size === 0 && this.#freshCheck !== undefined) {
      clearImmediate(this.#freshCheck);
      this.#freshCheck = undefined;
      this.#fresh.clear();
    }
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#timerIntervalMs = 0;
  }

  async #poll(ids: string[]): Promise<void> {
    this.#activePolls++;
    try {
      for (let i = 0; i < ids.length; i += this.#maxBatch) {
        const batch = ids.slice(i, i + this.#maxBatch).filter((id) => this.#waiters.has(id));
        if (batch.length === 0) continue;
        const records = await this.#fetchMany(batch);
        for (const record of records.values()) this.notify(record);
      }
    } catch (error) {
      this.#onError?.(error);
    } finally {
      this.#activePolls--;
    }
  }
}

/**
 * The successful runs a worker remembers, by message: a message that comes back to the worker
 * whose run of it succeeded (its lease ran out meanwhile, as when the task blocked the event
 * loop, and the worker that took it over stalled in turn; or its ack was lost with a dropped
 * connection) is acknowledged without running again, and that run's result is stored unless
 * the task has a `SUCCESS` record. Known by {@link Delivery.messageKey}, an identity of the
 * message itself, never by task id alone: a new job may reuse a finished task's id, and a
 * retry or a replay is another message.
 *
 * Only runs that lasted {@link REMEMBER_RUNS_FROM_MS} or more are remembered (a run shorter
 * than any practical lease cannot have lost it to a stall), with results up to
 * {@link MAX_RESULT_CHARS} characters of JSON, kept as that text, for {@link KEEP_MS}; at most
 * {@link MAX_ENTRIES} runs and {@link MAX_TOTAL_CHARS} characters of results, the oldest
 * forgotten first (by a timer too, so a worker that goes idle does not hold them longer). A
 * message this worker does not remember runs again, as at-least-once delivery allows.
 * @module
 */
import type { Delivery } from "../brokers/broker.js";

/** Runs shorter than this are not remembered. */
export const REMEMBER_RUNS_FROM_MS = 500;
/** How long a run is remembered. */
export const KEEP_MS = 15 * 60_000;
/** Most runs remembered at once. */
export const MAX_ENTRIES = 1000;
/** Largest result remembered (characters of JSON); a run with a larger one is not remembered. */
export const MAX_RESULT_CHARS = 64 * 1024;
/** Most characters of results remembered at once. */
export const MAX_TOTAL_CHARS = 8 * 1024 * 1024;

interface Entry {
  readonly taskId: string;
  /** The result as JSON (a copy: the handler may change its object later). */
  readonly json: string;
  readonly atMs: number;
}

/** See module doc. */
export class EarlierSuccesses {
  readonly #entries = new Map<string, Entry>();
  #chars = 0;
  readonly #now: () => number;
  /** Forgets the oldest entry once it is {@link KEEP_MS} old (an idle worker holds none longer). */
  #sweep: NodeJS.Timeout | undefined;

  /** @param now the clock (`performance.now` by default; tests pass their own) */
  constructor(now: () => number = () => performance.now()) {
    this.#now = now;
  }

  /** How many runs are remembered. */
  get size(): number {
    return this.#entries.size;
  }

  /**
   * Remembers that `delivery`'s run of task `taskId` succeeded with `value` after `runMs`; a
   * no-op for a short run, a message without a key or a result too large (or not JSON).
   */
  remember(delivery: Delivery, taskId: string, value: unknown, runMs: number): void {
    if (runMs < REMEMBER_RUNS_FROM_MS) return;
    const key = delivery.messageKey;
    if (key === undefined) return;
    // (a long string is not serialized only to be found too long)
    if (typeof value === "string" && value.length > MAX_RESULT_CHARS) return;
    let json: string;
    try {
      json = JSON.stringify(value ?? null);
    } catch {
      return;
    }
    if (json.length > MAX_RESULT_CHARS) return;
    this.#forget(key);
    const now = this.#now();
    this.#entries.set(key, { taskId, json, atMs: now });
    this.#chars += json.length;
    this.#evict(now);
    if (this.#sweep === undefined) this.#scheduleSweep(now);
  }

  #scheduleSweep(now: number): void {
    const oldest = this.#entries.values().next().value;
    if (oldest === undefined) return;
    this.#sweep = setTimeout(
      () => {
        this.#sweep = undefined;
        const at = this.#now();
        this.#evict(at);
        this.#scheduleSweep(at);
      },
      Math.max(0, oldest.atMs + KEEP_MS - now) + 1,
    );
    this.#sweep.unref();
  }

  /** The value of a remembered successful run of `delivery`'s message, when it is task `taskId`'s. */
  find(delivery: Delivery, taskId: string): { readonly value: unknown } | undefined {
    if (this.#entries.size === 0) return undefined;
    const key = delivery.messageKey;
    if (key === undefined) return undefined;
    const entry = this.#entries.get(key);
    if (entry === undefined || entry.taskId !== taskId) return undefined;
    if (this.#now() - entry.atMs > KEEP_MS) {
      this.#forget(key);
      return undefined;
    }
    return { value: JSON.parse(entry.json) as unknown };
  }

  #forget(key: string): void {
    const entry = this.#entries.get(key);
    if (entry === undefined) return;
    this.#entries.delete(key);
    this.#chars -= entry.json.length;
  }

  /** Drops the oldest entries past the bounds or their time (insertion order is age order). */
  #evict(now: number): void {
    for (const [key, entry] of this.#entries) {
      const isOver = this.#entries.size > MAX_ENTRIES || this.#chars > MAX_TOTAL_CHARS;
      if (!isOver && now - entry.atMs <= KEEP_MS) return;
      this.#forget(key);
    }
  }
}

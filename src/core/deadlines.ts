/**
 * A fixed time limit on many concurrent operations with one timer for all of them (instead of a
 * timer, a promise and a race per operation): operations start in deadline order, so the
 * pending ones form a FIFO queue and only its head needs a timer. The timer does not keep the
 * process alive (the operations' own connections do), and times are `performance.now()`
 * readings, so a wall clock that steps neither fires nor holds off a time limit.
 * @module
 */
import { timerDelay } from "./sleep.js";

interface Pending {
  readonly at: number;
  readonly label: string;
  reject: ((error: Error) => void) | null;
}

/** Rejects operations still pending after `timeoutMs` (see module doc). */
export class Deadlines {
  readonly #timeoutMs: number;
  readonly #onTimeout: (label: string, timeoutMs: number) => Error;
  #queue: Pending[] = [];
  #head = 0;
  #timer: NodeJS.Timeout | undefined;
  /** Operations not settled yet (neither answered nor rejected). */
  #pendingCount = 0;
  /** Called once no operation is pending (see {@link whenIdle}). */
  #idleWaiters: Array<() => void> = [];

  /** @param onTimeout builds the error of an operation that ran out of time */
  constructor(timeoutMs: number, onTimeout: (label: string, timeoutMs: number) => Error) {
    this.#timeoutMs = timeoutMs;
    this.#onTimeout = onTimeout;
  }

  /** The time limit of every operation, ms. */
  get timeoutMs(): number {
    return this.#timeoutMs;
  }

  /** Settles like `operation`, or rejects with the timeout error once the limit passes first. */
  guard<T>(operation: Promise<T>, label: string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const pending: Pending = { at: performance.now() + this.#timeoutMs, label, reject };
      this.#trim();
      this.#queue.push(pending);
      this.#timer ??= setTimeout(() => this.#expire(), timerDelay(this.#timeoutMs)).unref();
      this.#pendingCount++;
      operation.then(
        (value) => {
          this.#release(pending);
          resolve(value);
        },
        (error: unknown) => {
          this.#release(pending);
          reject(error);
        },
      );
    });
  }

  /** Resolves once no operation is pending: each answered, or rejected at its time limit. */
  whenIdle(): Promise<void> {
    if (this.#pendingCount === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Marks `pending` settled (once) and returns its reject, or null when it was settled already. */
  #release(pending: Pending): ((error: Error) => void) | null {
    const reject = pending.reject;
    if (reject === null) return null;
    pending.reject = null;
    if (--this.#pendingCount === 0 && this.#idleWaiters.length > 0) {
      const waiters = this.#idleWaiters;
      this.#idleWaiters = [];
      for (const waiter of waiters) waiter();
    }
    return reject;
  }

  /**
   * Rejects every operation still pending, now, with `makeError(label)` (their connection is
   * gone: waiting for the time limit would only delay the same answer).
   */
  rejectAll(makeError: (label: string) => Error): void {
    const queue = this.#queue.slice(this.#head);
    this.#queue = [];
    this.#head = 0;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const pending of queue) this.#release(pending)?.(makeError(pending.label));
  }

  /** Drops settled operations from the head, so the queue holds about the pending ones. */
  #trim(): void {
    const queue = this.#queue;
    while (this.#head < queue.length && (queue[this.#head] as Pending).reject === null) this.#head++;
    if (this.#head === queue.length) {
      queue.length = 0;
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > queue.length) {
      this.#queue = queue.slice(this.#head);
      this.#head = 0;
    }
  }

  /**
   * Rejects the operations past their time limit. The first look at due ones defers them by one
   * turn of the event loop (`recheck`): after a turn that blocked the loop past a limit (a
   * synchronous task), Node runs the timers before it reads the sockets, so a reply that came
   * meanwhile would be taken for none.
   */
  #expire(recheck = true): void {
    this.#timer = undefined;
    const now = performance.now();
    const queue = this.#queue;
    if (recheck) {
      this.#trim();
      if (this.#head < queue.length && (queue[this.#head] as Pending).at <= now) {
        this.#timer = setTimeout(() => this.#expire(false), 0).unref(); // after the next poll phase
        return;
      }
    }
    while (this.#head < queue.length) {
      const pending = queue[this.#head] as Pending;
      if (pending.reject !== null && pending.at > now) break;
      this.#head++;
      this.#release(pending)?.(this.#onTimeout(pending.label, this.#timeoutMs));
    }
    this.#trim();
    if (this.#queue.length === 0) return;
    const next = this.#queue[this.#head] as Pending;
    this.#timer = setTimeout(() => this.#expire(), timerDelay(Math.max(1, next.at - now))).unref();
  }
}

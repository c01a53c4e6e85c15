/**
 * `STARTED` for long runs only: a run is noted when its handler starts and forgotten when it
 * ends; one sweep timer marks the runs still going after `afterMs` (so a quick task goes from
 * `PENDING` straight to its final state, with no timer of its own).
 * @module
 */
import type { TaskMessage } from "../core/message.js";

/** Marks runs that last longer than a threshold (see module doc). */
export class StartedMarker {
  readonly #afterMs: number;
  readonly #mark: (message: TaskMessage) => void;
  /** Handler start times of running jobs not yet marked, oldest first. */
  readonly #since = new Map<TaskMessage, number>();
  #sweep: NodeJS.Timeout | undefined;

  /** @param mark writes `STARTED` for a run; must not throw */
  constructor(afterMs: number, mark: (message: TaskMessage) => void) {
    this.#afterMs = afterMs;
    this.#mark = mark;
  }

  /** A handler started. */
  started(message: TaskMessage): void {
    this.#since.set(message, performance.now());
    if (this.#sweep === undefined) {
      this.#sweep = setInterval(() => this.#sweepDue(), this.#afterMs / 2);
      this.#sweep.unref();
    }
  }

  /** A run ended (marked or not). */
  ended(message: TaskMessage): void {
    this.#since.delete(message);
  }

  /** Forgets every run and stops the timer. */
  clear(): void {
    clearInterval(this.#sweep);
    this.#sweep = undefined;
    this.#since.clear();
  }

  #sweepDue(): void {
    const now = performance.now(); // (monotonic: a wall clock stepped back would hold every run back)
    for (const [message, since] of this.#since) {
      // Oldest first (insertion order): the first run that is not due ends the sweep.
      if (now - since < this.#afterMs) return;
      this.#since.delete(message);
      this.#mark(message);
    }
    clearInterval(this.#sweep);
    this.#sweep = undefined;
  }
}

/**
 * When to write a batch of work collected from many callbacks (acks, terminal records): once
 * the current callback's promise jobs are done (`process.nextTick`), so a lone job's write goes
 * out at once, but at most once per event-loop iteration that way: further batches of the same
 * iteration wait for its check phase (`setImmediate`) and go out together. Many timer or I/O
 * callbacks of one iteration (say 32 tasks whose sleeps end together, each callback followed by
 * its own nextTick queue) then share one write instead of one each.
 * @module
 */
export class FlushScheduler {
  readonly #flush: () => void;
  /** A flush is requested and not done yet. */
  #isRequested = false;
  /** A flush ran this iteration: the next waits for the check phase. */
  #isThrottled = false;
  readonly #release = (): void => {
    this.#isThrottled = false;
    if (this.#isRequested) this.#run();
  };

  /** @param flush writes whatever was collected; called once per batch, never re-entrantly */
  constructor(flush: () => void) {
    this.#flush = flush;
  }

  /** Asks for a flush of what was collected (idempotent until it runs). */
  request(): void {
    if (this.#isRequested) return;
    this.#isRequested = true;
    if (!this.#isThrottled) process.nextTick(() => this.#run());
  }

  #run(): void {
    if (!this.#isRequested) return;
    this.#isRequested = false;
    if (!this.#isThrottled) {
      this.#isThrottled = true;
      setImmediate(this.#release);
    }
    this.#flush();
  }
}

/**
 * The worker's job slots: at most `concurrency` handlers run at once, and a slot frees as soon
 * as its handler returns. The outcome is then stored and acknowledged in the background, and
 * running + settling never exceeds 2 × `concurrency`: the most unacknowledged messages a worker
 * holds, so a fetch can overlap the settling of the previous batch without hoarding the queue.
 * @module
 */

/** Running and settling jobs of one worker (see module doc). */
export class JobSlots {
  readonly #concurrency: number;
  readonly #running = new Set<Promise<void>>();
  readonly #settling = new Set<Promise<void>>();
  #onFree: (() => void) | null = null;

  constructor(concurrency: number) {
    this.#concurrency = concurrency;
  }

  /** Handlers running now. */
  get running(): number {
    return this.#running.size;
  }

  /** How many more messages may be fetched now (0: wait with {@link JobSlots.whenFree}). */
  free(): number {
    const running = this.#running.size;
    return Math.min(this.#concurrency - running, 2 * this.#concurrency - running - this.#settling.size);
  }

  /** Resolves when a job leaves its slot or its settling, or on {@link JobSlots.wake}. */
  whenFree(): Promise<void> {
    return new Promise((resolve) => {
      this.#onFree = resolve;
    });
  }

  /** Ends a pending {@link JobSlots.whenFree} (shutdown). */
  wake(): void {
    const onFree = this.#onFree;
    this.#onFree = null;
    onFree?.();
  }

  /** Tracks a running job; `job` must not reject. */
  run(job: Promise<void>): void {
    this.#track(this.#running, job);
  }

  /** Tracks a job's settling (store and ack); `job` must not reject. */
  settle(job: Promise<void>): void {
    this.#track(this.#settling, job);
  }

  /** Resolves once every running job has finished and every outcome is settled. */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.#running]);
    await Promise.allSettled([...this.#settling]);
  }

  #track(set: Set<Promise<void>>, job: Promise<void>): void {
    const tracked = job.finally(() => {
      set.delete(tracked);
      this.wake();
    });
    set.add(tracked);
  }
}

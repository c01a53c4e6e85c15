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
  #running = 0;
  #settling = 0;
  #onFree: (() => void) | null = null;
  /** Resolvers of {@link JobSlots.drain} calls waiting for every job to end. */
  #onIdle: Array<() => void> = [];
  /** Resolvers of {@link JobSlots.whenNoneRunning} calls. */
  #onNoneRunning: Array<() => void> = [];
  // One callback each for every job (a job is counted, not kept: no per-job closure or set entry).
  readonly #runEnded = (): void => {
    this.#running--;
    this.#ended();
  };
  readonly #settleEnded = (): void => {
    this.#settling--;
    this.#ended();
  };

  constructor(concurrency: number) {
    this.#concurrency = concurrency;
  }

  /** Handlers running now. */
  get running(): number {
    return this.#running;
  }

  /** Jobs that have ended and whose outcome is still being stored or acknowledged. */
  get settling(): number {
    return this.#settling;
  }

  /** How many more messages may be fetched now (0: wait with {@link JobSlots.whenFree}). */
  free(): number {
    const running = this.#running;
    return Math.min(this.#concurrency - running, 2 * this.#concurrency - running - this.#settling);
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

  /** Tracks a running job; `job` must not reject. A running job registers its settling before it ends. */
  run(job: Promise<void>): void {
    this.#running++;
    job.then(this.#runEnded, this.#runEnded);
  }

  /** Tracks a job's settling (store and ack); `job` must not reject. */
  settle(job: Promise<void>): void {
    this.#settling++;
    job.then(this.#settleEnded, this.#settleEnded);
  }

  /** Resolves once every running job has finished and every outcome is settled. */
  drain(): Promise<void> {
    if (this.#running === 0 && this.#settling === 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.#onIdle.push(resolve);
    });
  }

  /** Resolves once no handler runs (outcomes may still be settling). */
  whenNoneRunning(): Promise<void> {
    if (this.#running === 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.#onNoneRunning.push(resolve);
    });
  }

  #ended(): void {
    this.wake();
    if (this.#running === 0 && this.#onNoneRunning.length > 0) {
      const waiting = this.#onNoneRunning;
      this.#onNoneRunning = [];
      for (const resolve of waiting) resolve();
    }
    if (this.#running === 0 && this.#settling === 0 && this.#onIdle.length > 0) {
      const idle = this.#onIdle;
      this.#onIdle = [];
      for (const resolve of idle) resolve();
    }
  }
}

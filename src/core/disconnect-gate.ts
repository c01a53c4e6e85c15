/**
 * Orders a `connect()` after a `disconnect()` of the same adapter (or app) that is still under
 * way: the disconnect may not have let go of the connection yet, and a connection opened
 * meanwhile would be stopped by it (its watchers, its own connections), or left closed.
 * @module
 */

/** The `disconnect()`s under way of one adapter or app (see module doc). */
export class DisconnectGate {
  #pending: Promise<void> | undefined;
  /** How many disconnects were noted: a connect that a later one overtook fails. */
  #disconnects = 0;
  #connectsWaiting = 0;

  /**
   * Notes `run` (a disconnect's work) as under way until it settles, together with those
   * already under way (an earlier one may end after a later one); returns it. Call it in the
   * same step as the `disconnect()` call (a connect made after that call is then overtaken).
   */
  closing(run: Promise<void>): Promise<void> {
    this.#disconnects++;
    const settled = run.catch(() => undefined);
    const before = this.#pending;
    const all = before === undefined ? settled : Promise.all([before, settled]).then(() => undefined);
    this.#pending = all;
    void all.then(() => {
      if (this.#pending === all) this.#pending = undefined;
    });
    return run;
  }

  /** Every disconnect under way (settles, never rejects, when all are done), if any. */
  get pending(): Promise<void> | undefined {
    return this.#pending;
  }

  /** `connect()` calls waiting in {@link DisconnectGate.connect} for a disconnect under way. */
  get connectsWaiting(): number {
    return this.#connectsWaiting;
  }

  /**
   * A `connect()`: once every disconnect under way is done, `open()` (which opens, joins the
   * open under way, or returns at once when open); rejects with `overtaken()` instead when a
   * disconnect made after this call came first (that disconnect closes what `open()` opened).
   */
  async connect(open: () => Promise<void>, overtaken: () => Error): Promise<void> {
    const disconnects = this.#disconnects;
    const pending = this.#pending;
    if (pending !== undefined) {
      this.#connectsWaiting++;
      try {
        await pending;
      } finally {
        this.#connectsWaiting--;
      }
    }
    if (this.#disconnects === disconnects) {
      try {
        await open();
      } catch (error) {
        // an open a disconnect cut short (or that failed meanwhile): overtaken, as it is
        if (this.#disconnects !== disconnects) throw overtaken();
        throw error;
      }
    }
    if (this.#disconnects !== disconnects) throw overtaken();
  }
}

/** An adapter's open: calls made while one runs join it (one open at a time). */
export class SharedOpen {
  #running: Promise<void> | undefined;
  #abort: AbortController | undefined;

  /**
   * `open(signal)`, or the open under way; `signal` aborts at {@link SharedOpen.cut} (an open
   * that can, cuts itself short then).
   */
  run(open: (signal: AbortSignal) => Promise<void>): Promise<void> {
    if (this.#running === undefined) {
      const abort = new AbortController();
      this.#abort = abort;
      this.#running = open(abort.signal).finally(() => {
        this.#running = undefined;
        if (this.#abort === abort) this.#abort = undefined;
      });
    }
    return this.#running;
  }

  /** Aborts the signal of the open under way, if any (a `disconnect()` meanwhile). */
  cut(): void {
    this.#abort?.abort();
  }

  /** The open under way, if any. */
  get running(): Promise<void> | undefined {
    return this.#running;
  }
}

/** What an overtaken `connect()` of `adapter` (say "redis broker") at `displayUrl` says. */
export function overtakenMessage(adapter: string, displayUrl: string): string {
  return `connect: the ${adapter} at ${displayUrl} was disconnected while it ran`;
}

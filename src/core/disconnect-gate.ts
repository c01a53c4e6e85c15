/**
 * Orders a `connect()` after a `disconnect()` of the same adapter that is still under way: the
 * disconnect may not have let go of the connection yet, and a connection opened meanwhile would
 * be stopped by it (its watchers, its own connections), or left closed.
 * @module
 */

/** The `disconnect()` under way of one adapter (see module doc). */
export class DisconnectGate {
  #pending: Promise<void> | undefined;

  /** Notes `run` (a disconnect's work) as the disconnect under way until it settles; returns it. */
  closing(run: Promise<void>): Promise<void> {
    const settled = run.catch(() => undefined);
    this.#pending = settled;
    void settled.then(() => {
      if (this.#pending === settled) this.#pending = undefined;
    });
    return run;
  }

  /** The disconnect under way (settles, never rejects, when it is done), if any. */
  get pending(): Promise<void> | undefined {
    return this.#pending;
  }
}

/**
 * Orders a `connect()` after a `disconnect()` of the same adapter (or app) that is still under
 * way: the disconnect may not have let go of the connection yet, and a connection opened
 * meanwhile would be stopped by it (its watchers, its own connections), or left closed.
 * @module
 */

/** The `disconnect()`s under way of one adapter or app (see module doc). */
export class DisconnectGate {
  #pending: Promise<void> | undefined;

  /**
   * Notes `run` (a disconnect's work) as under way until it settles, together with those
   * already under way (an earlier one may end after a later one); returns it.
   */
  closing(run: Promise<void>): Promise<void> {
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
}

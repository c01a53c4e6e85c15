/**
 * The one listener a leased delivery keeps for {@link Delivery.onLeaseLost} (Redis, SQLite).
 * @module
 */
import type { Delivery, LeaseState } from "./broker.js";

/** Holds the listener of {@link Delivery.onLeaseLost}; it is called at most once. */
export class LeaseLostListener {
  #listener: ((reason: Exclude<LeaseState, "held">) => void) | undefined;

  /** Sets (replaces) the listener. */
  set(listener: (reason: Exclude<LeaseState, "held">) => void): void {
    this.#listener = listener;
  }

  /** Calls the listener once, unless the delivery is already settled (or being settled). */
  fire(isSettled: boolean, reason: Exclude<LeaseState, "held"> = "taken"): void {
    const listener = this.#listener;
    this.#listener = undefined;
    if (!isSettled) listener?.(reason);
  }
}

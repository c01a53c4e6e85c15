/**
 * How long a consumer has been out of touch with Redis, so that its reclaim step does not take
 * the entries of live workers that were cut off by the same stall.
 *
 * A lease is an entry's idle time in Redis, and that time keeps counting while Redis is frozen
 * (SIGSTOP, `DEBUG SLEEP`, a long `CLIENT PAUSE`, a VM pause) or restarting: when it answers
 * again, the entries of every live worker look expired, and the first reclaim step to get in
 * would take them before their owners' renewals do. A worker cannot tell a dead owner from one
 * that was as cut off as itself, but it knows when it was cut off itself: a reply from Redis
 * came more than `stallMs` after the one before (its reads and renewals answer far more often
 * than that). For one claim idle time after such a gap, it reclaims only entries idle longer
 * than the claim idle time plus the gap, which leaves the live owners time to renew; a dead
 * owner's entries are taken once that window ends. The reclaim script applies the same rule
 * itself when the gap ended while the script was on its way (sent just before the stall):
 * it gets the Redis time of this consumer's last reply.
 * Times are `performance.now()` readings, except the Redis times the scripts return.
 * @module
 */

/** A window opened by a gap: reclaim only entries idle longer than the claim idle time plus `extraMs`. */
export interface OutOfTouch {
  /** How long this consumer was out of touch (the gap between two replies). */
  readonly extraMs: number;
  /** The window ends at this `performance.now()` time. */
  readonly untilMs: number;
}

/** Tracks the replies of one consumer's connections (see module doc). */
export class ContactClock {
  readonly #leaseMs: number;
  /** A gap between two replies longer than this is a stall. */
  readonly stallMs: number;
  #lastReplyMs: number | undefined;
  /** Redis TIME minus `performance.now()`, from the last script that returned Redis's time. */
  #offsetMs: number | undefined;
  #window: OutOfTouch | undefined;

  /**
   * @param leaseMs the claim idle time (the lease)
   * @param readEveryMs the longest time a live consumer normally goes between two replies
   */
  constructor(leaseMs: number, readEveryMs: number) {
    this.#leaseMs = leaseMs;
    // A live owner renews every lease/3, so its entry looks expired only after a stall of more
    // than 2/3 of the lease: a gap of half the lease is already one to wait for. Never below
    // the consumer's own read cadence (short leases), which would open windows for nothing.
    this.stallMs = Math.max(Math.floor(leaseMs / 2), readEveryMs + 250);
  }

  /**
   * Notes a reply from Redis received now (`redisNowMs`: the Redis time the reply carries, when
   * it does). Returns the window it opened, if the gap since the previous reply was a stall.
   */
  replied(redisNowMs?: number, nowMs = performance.now()): OutOfTouch | undefined {
    if (redisNowMs !== undefined && Number.isFinite(redisNowMs)) this.#offsetMs = redisNowMs - nowMs;
    const last = this.#lastReplyMs;
    this.#lastReplyMs = nowMs;
    if (last === undefined || nowMs - last <= this.stallMs) return undefined;
    return this.outOfTouch(nowMs - last, nowMs);
  }

  /**
   * Opens (or widens) the window after a gap of `gapMs` seen now; returns it when it is new or
   * wider than the open one, else undefined.
   */
  outOfTouch(gapMs: number, nowMs = performance.now()): OutOfTouch | undefined {
    const open = this.#window !== undefined && this.#window.untilMs > nowMs ? this.#window : undefined;
    if (open !== undefined && open.extraMs >= gapMs) return undefined;
    this.#window = { extraMs: Math.round(gapMs), untilMs: nowMs + this.#leaseMs };
    return this.#window;
  }

  /** The extra idle time the reclaim step requires now (0 outside a window). */
  extraMs(nowMs = performance.now()): number {
    const w = this.#window;
    return w !== undefined && w.untilMs > nowMs ? w.extraMs : 0;
  }

  /** The Redis time of the last reply, or 0 when unknown (no Redis time seen yet). */
  lastReplyRedisMs(): number {
    if (this.#lastReplyMs === undefined || this.#offsetMs === undefined) return 0;
    return Math.floor(this.#lastReplyMs + this.#offsetMs);
  }
}

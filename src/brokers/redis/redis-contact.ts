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
 * than that, and a consumer that would hear nothing for half of it sends a PING). For one claim
 * idle time after such a gap, it reclaims only entries idle longer
 * than the claim idle time plus the gap, which leaves the live owners time to renew; a dead
 * owner's entries are taken once that window ends. The reclaim script applies the same rule
 * itself when the gap ended while the script was on its way (sent just before the stall):
 * it gets the Redis time of this consumer's last reply, from the offset between the two clocks
 * that the scripts of that stream's server returned (per stream: the servers of a Cluster may
 * disagree on the time). The scripts also keep a pulse per stream (fleet-pulse.lua), so that a
 * stall is waited out by consumers that did not see it (one started during it).
 * Times are `awakeNow()` readings (a suspend of this process's host counts as a gap too: it
 * cannot be told apart from a Redis stall, so reclaims wait the window out), except the Redis
 * times the scripts return.
 * @module
 */
import { awakeNow } from "../../core/clock.js";

/** A window opened by a gap: reclaim only entries idle longer than the claim idle time plus `extraMs`. */
export interface OutOfTouch {
  /** How long this consumer was out of touch (the gap between two replies). */
  readonly extraMs: number;
  /** The window ends at this `awakeNow()` time. */
  readonly untilMs: number;
}

/** Tracks the replies of one consumer's connections (see module doc). */
export class ContactClock {
  readonly #leaseMs: number;
  /** A gap between two replies longer than this is a stall. */
  readonly stallMs: number;
  #lastReplyMs: number | undefined;
  /** Per stream key: Redis TIME minus `awakeNow()`, from the last script on it that returned Redis's time. */
  readonly #offsetsMs = new Map<string, number>();
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
   * it does, from the server of stream `key`). Returns the window it opened, if the gap since
   * the previous reply was a stall.
   */
  replied(redisNowMs?: number, key = "", nowMs = awakeNow()): OutOfTouch | undefined {
    if (redisNowMs !== undefined && Number.isFinite(redisNowMs)) this.#offsetsMs.set(key, redisNowMs - nowMs);
    const last = this.#lastReplyMs;
    this.#lastReplyMs = nowMs;
    if (last === undefined || nowMs - last <= this.stallMs) return undefined;
    return this.outOfTouch(nowMs - last, nowMs);
  }

  /**
   * Opens (or widens) the window after a gap of `gapMs` seen now; returns it when it is new or
   * wider than the open one, else undefined.
   */
  outOfTouch(gapMs: number, nowMs = awakeNow()): OutOfTouch | undefined {
    const open = this.#window !== undefined && this.#window.untilMs > nowMs ? this.#window : undefined;
    // (the same stall measured twice, locally and by a script, differs by a reply's latency)
    if (open !== undefined && open.extraMs + this.stallMs / 4 >= gapMs) return undefined;
    this.#window = { extraMs: Math.round(gapMs), untilMs: nowMs + this.#leaseMs };
    return this.#window;
  }

  /** The extra idle time the reclaim step requires now (0 outside a window). */
  extraMs(nowMs = awakeNow()): number {
    const w = this.#window;
    return w !== undefined && w.untilMs > nowMs ? w.extraMs : 0;
  }

  /**
   * The time of the last reply on the clock of stream `key`'s server, or 0 when unknown (no
   * Redis time seen from it yet).
   */
  lastReplyRedisMs(key = ""): number {
    const offset = this.#offsetsMs.get(key);
    if (this.#lastReplyMs === undefined || offset === undefined) return 0;
    return Math.floor(this.#lastReplyMs + offset);
  }

  /** How long since the last reply (0 before the first). */
  quietForMs(nowMs = awakeNow()): number {
    return this.#lastReplyMs === undefined ? 0 : nowMs - this.#lastReplyMs;
  }
}

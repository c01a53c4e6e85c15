/**
 * Pull consumer over Redis Streams consumer groups.
 *
 * - `fetch(max)` = XREADGROUP COUNT max on a connection of its own (so it can block without
 *   holding up acks), after two cheap housekeeping steps that run only when due: the delayed
 *   mover (at the next due time of the delayed set, re-checked at least every second) and
 *   reclaim of entries whose lease expired (XPENDING IDLE + XCLAIM; every min(claimMinIdle/2, 1 s),
 *   cursor followed).
 * - After either of its connections reconnected, its next fetch first takes back the entries
 *   pending for it that it does not hold (a read whose reply was lost with the connection, or
 *   that ioredis sent again), instead of leaving them to wait for their lease.
 * - On a backlogged queue (the last read got all it asked for), acks waiting to be sent (a
 *   worker's fetch usually comes right after its jobs ended) travel with the read: one script
 *   call acks them and reads up to `max` new entries without blocking, on the command
 *   connection; a blocking read follows only if it found none. Otherwise the waiting acks are
 *   sent first, then the read.
 * - With several queues, a non-blocking read per queue in order of preference, then one
 *   blocking read of all their streams (a job on any of them wakes the consumer at once). On a
 *   Cluster, where the streams are on different slots, one stream per command: a short block
 *   (≤ 250 ms) on one queue in turn.
 * - Leases: every claimMinIdle/3 the consumer XCLAIMs (JUSTID, owner-checked in Lua) its own
 *   unsettled entries, so a long task is never reclaimed while its worker lives. After a gap
 *   in Redis's replies (Redis frozen or restarting, or this process stalled) it renews them at
 *   once, and for one claimMinIdle reclaims only entries idle longer than claimMinIdle plus
 *   the gap: the live owners, cut off by the same stall, renew first (redis-contact.ts).
 *   Its reclaims and renewals also keep the queue's pulse, which opens the same window for
 *   every consumer of the queue when none could call for that long (fleet-pulse.lua): one
 *   that started during the stall saw no gap of its own.
 * - Liveness: Redis 7.0 counts a consumer's `idle` (XINFO CONSUMERS) from the last time it got
 *   entries, not from its last read, so a live worker with nothing to do looks stale to
 *   `cleanupStaleClients`. A consumer that got nothing for 2 s shows itself with an empty
 *   history read (which also re-creates it, should a cleanup have deleted it). A consumer that
 *   closes owning no pending entry deletes itself from the group; entries it gave back
 *   (`release`) are owned by the shared RELEASED_CONSUMER until claimed, not by it.
 * - Read-ahead (`prefetch` > 0): a read asks for `max + prefetch` entries and keeps those beyond
 *   `max` in a local buffer, which later fetches hand out without a round trip (bounded: at
 *   most `prefetch` entries wait here). Buffered entries are in flight like running ones
 *   (leases renewed; one whose lease was lost is dropped, never handed out) and are released
 *   at once on `stopFetching()` (a stopping worker), a fetch with an aborted signal, or close.
 * - Abort: a blocked read is ended at once with CLIENT UNBLOCK (else within the block time);
 *   deliveries that arrive after the abort are released, and `fetch` returns `[]`.
 * - Connection loss: `fetch` throws BrokerConnectionError while Redis is unreachable; ioredis
 *   reconnects in the background, and a group lost with the data (restart without
 *   persistence) is re-created on NOGROUP.
 * @module
 */
import { isUtf8 } from "node:buffer";
import { awakeNow } from "../../core/clock.js";
import type { Logger } from "../../core/logger.js";
import { settlesWithin, timerDelay, withinDeadline } from "../../core/sleep.js";
import { BrokerConnectionError, ConfigurationError } from "../../errors.js";
import {
  isCrossSlotError,
  isNoGroupError,
  isUnblockedError,
  type RedisClientLike,
  runScript,
} from "../../redis/redis-client.js";
import { dropRedis, isClusterClient, lastConnectionError, pingRedis } from "../../redis/redis-connect.js";
import type { RedisRecordWriter } from "../../redis/redis-record-writer.js";
import type { Consumer, ConsumerOptions } from "../broker.js";
import { ContactClock, type OutOfTouch } from "./redis-contact.js";
import type { RedisBrokerContext } from "./redis-context.js";
import { RedisDelivery } from "./redis-delivery.js";
import { MOVE_BATCH, MOVE_BYTES, moreDue, warnDropped } from "./redis-due-mover.js";
import { type QueueKeys, RELEASED_CONSUMER } from "./redis-keys.js";
import { openReader, READ_GIVE_UP_GRACE_MS, type ReadReply, streamReplies } from "./redis-reader.js";
import { RedisSettler } from "./redis-settler.js";

/** Longest time before re-checking the delayed set (others may add earlier entries). */
const MOVER_RECHECK_MS = 1000;
/** At most one warning per queue this often about housekeeping that keeps failing. */
const HOUSEKEEPING_WARN_MS = 10_000;
/**
 * A blocked read that ended with nothing this long past its block time was ended by the
 * client's time limit (see {@link READ_GIVE_UP_GRACE_MS}), not by a reply from Redis.
 */
const GAVE_UP_AFTER_MS = READ_GIVE_UP_GRACE_MS / 2;
/** Longest block on one queue when consuming several. */
const MULTI_QUEUE_BLOCK_MS = 250;
/** CLIENT UNBLOCK tries while the targeted read has not started blocking yet (see #unblock). */
const UNBLOCK_ATTEMPTS = 20;
const UNBLOCK_RETRY_MS = 5;
/** Most entries reclaimed per step. */
const RECLAIM_COUNT = 100;
/**
 * How much of the group's pending list one reclaim step looks at (reclaim.lua): all of it, with
 * XPENDING's IDLE filter, up to RECLAIM_SCAN_LIMIT entries; beyond, one page of RECLAIM_PAGE.
 * Either bounds the time Redis spends in one call (about 1.5 ms on a 2-core VM) when a large
 * fleet has many entries in flight.
 */
const RECLAIM_SCAN_LIMIT = 20_000;
const RECLAIM_PAGE = 2000;
/** Entry ids per lease-renewal script call. */
const RENEW_CHUNK = 500;
/** A consumer group lost again within this time of the last loss fails the fetch (see `fetch`). */
const GROUP_LOST_AGAIN_MS = 10_000;
/** Longest pause before a group lost again and again is re-created. */
const GROUP_RECREATE_MAX_MS = 30_000;

/** Longest wait for the read-ahead buffer's release when closing. */
const RELEASE_ON_CLOSE_MS = 2000;
/** How long a closing consumer waits for its own deletion (best effort). */
const DELETE_ON_CLOSE_MS = 1000;
/** Longest time a live consumer goes without counting as active in its group. */
const TOUCH_EVERY_MS = 2000;
/**
 * Start of the empty history read that marks a consumer active: nothing lies beyond it, yet
 * Redis 7.0 refreshes the consumer's idle time and creates it when missing. (The very largest
 * id, `…-18446744073709551615`, returns before the consumer is looked up.)
 */
const PAST_LAST_ID = "18446744073709551615-0";

/**
 * One queue's state in the consumer. Its times, as all the consumer's and its settler's, are
 * `awakeNow()` readings: the monotonic clock (a wall clock stepped back, NTP or a VM resumed,
 * would otherwise hold off moving delayed jobs and reclaiming dead workers' entries for as long
 * as the step) plus the time the host was suspended, which Redis counts in an entry's idle
 * time (a reply read after a suspend longer than the lease is checked before its entry runs).
 */
interface QueueState {
  readonly keys: QueueKeys;
  hasGroup: boolean;
  /** When the delayed jobs are next moved. */
  moveAtMs: number;
  /** When dead consumers' entries are next reclaimed. */
  reclaimAtMs: number;
  reclaimCursor: string;
  /** When the group last saw this consumer active on the queue (entries handed out, renewed, or a touch). */
  seenAtMs: number;
  /** When this consumer last sent a call that keeps the queue's pulse (reclaim, renewal; fleet-pulse.lua). */
  pulsedAtMs: number;
  /** The last read of the queue got as many new entries as it asked for: more are likely waiting. */
  isBacklogged: boolean;
  /** A connection reconnected: entries pending for this consumer that it does not hold may exist. */
  mayHoldUnknown: boolean;
  /** When a failed housekeeping step of this queue was last logged (see #housekeep). */
  housekeepingWarnedAtMs: number;
  /**
   * Entries this consumer stopped renewing that may still be pending for it (a dead letter
   * refused by a full DLQ, a failed release), until their lease runs out: left to that lease.
   */
  readonly parked: Map<string, number>;
  readonly inFlight: Map<string, RedisDelivery>;
  /**
   * Entries a claim gave back to this consumer while their delivery here was being settled (a
   * release whose reply came after the claim's): once that settle is done, recover-own takes
   * them back (see #handOutClaimed).
   */
  readonly claimedWhileSettling: Set<string>;
}

/**
 * The delivery count of a claimed entry. A count past 2^53 (an `XCLAIM … RETRYCOUNT` set by
 * someone with Redis access) comes back from the script overflowed, negative: taken as spent
 * (poison), never as a first delivery.
 */
function claimedCount(reply: unknown): number {
  const count = Number(reply);
  if (count >= 1 && count <= Number.MAX_SAFE_INTEGER) return count;
  return count < 0 || count > Number.MAX_SAFE_INTEGER ? Number.MAX_SAFE_INTEGER : 1;
}

/** A duration in ms as seconds for a log message, e.g. `45.2 s`. */
function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

/** A consumer of one or more queues (see module doc). */
export class RedisConsumer implements Consumer {
  readonly #ctx: RedisBrokerContext;
  readonly #consumerId: string;
  /** When a read last found a consumer group missing (`awakeNow()`). */
  #groupLostAtMs = Number.NEGATIVE_INFINITY;
  /** Losses of a group, each within {@link GROUP_LOST_AGAIN_MS} of the one before. */
  #groupLosses = 0;
  /** No group is re-created before this time (`awakeNow()`), after a loss soon after the last. */
  #groupRecreateAtMs = Number.NEGATIVE_INFINITY;
  readonly #queues: QueueState[];
  readonly #reclaimIntervalMs: number;
  /** Replies from Redis: when this consumer was out of touch, and for how long. */
  readonly #contact: ContactClock;
  readonly #renewTimer: NodeJS.Timeout;
  readonly #touchTimer: NodeJS.Timeout;
  readonly #settler: RedisSettler;
  readonly #logger: Logger;
  #conn: RedisClientLike | undefined;
  #opening: Promise<RedisClientLike> | undefined;
  #clientId: string | undefined;
  #isBlocking = false;
  #isRenewing = false;
  #isTouching = false;
  #isClosed = false;
  #turn = 0;
  /** True once the server refused a read of several streams (CROSSSLOT): see #fetchInto. */
  #readsOneByOne = false;
  /** Read-ahead entries not handed out yet (at most `prefetch`). */
  #buffer: RedisDelivery[] = [];

  readonly #onClose: ((consumer: RedisConsumer) => void) | undefined;

  /**
   * @param onClose called once the consumer closes
   * @param records the result backend whose terminal records acks may write (same server)
   */
  constructor(
    ctx: RedisBrokerContext,
    options: ConsumerOptions,
    onClose?: (consumer: RedisConsumer) => void,
    records?: RedisRecordWriter,
  ) {
    if (options.queues.length === 0) throw new ConfigurationError("a consumer needs at least one queue");
    this.#ctx = ctx;
    this.#onClose = onClose;
    this.#consumerId = options.consumerId;
    this.#logger = options.logger ?? ctx.logger;
    this.#queues = [...new Set(options.queues)].map((queue) => ({
      keys: ctx.keys.get(queue),
      hasGroup: false,
      moveAtMs: 0,
      reclaimAtMs: 0,
      reclaimCursor: "0-0",
      seenAtMs: awakeNow(),
      pulsedAtMs: Number.NEGATIVE_INFINITY,
      isBacklogged: false,
      mayHoldUnknown: false,
      housekeepingWarnedAtMs: Number.NEGATIVE_INFINITY,
      parked: new Map(),
      inFlight: new Map(),
      claimedWhileSettling: new Set(),
    }));
    this.#settler = new RedisSettler(
      ctx,
      this.#consumerId,
      (d, isStillPending) => {
        // Only this delivery: the entry may have come back to this consumer as a newer one.
        const q = this.#queueOf(d);
        if (q?.inFlight.get(d.deliveryId) === d) q.inFlight.delete(d.deliveryId);
        if (q?.claimedWhileSettling.delete(d.deliveryId)) q.mayHoldUnknown = true;
        // Left to its lease: recover-own must not take it back at once (see #recoverOwn).
        if (q && isStillPending) {
          const now = awakeNow();
          for (const [id, until] of q.parked) {
            if (until > now) break; // oldest first
            q.parked.delete(id);
          }
          q.parked.set(d.deliveryId, now + ctx.claimMinIdleMs);
        }
      },
      this.#logger,
      records,
      (d) => this.#streamWindowMs(d),
    );
    this.#reclaimIntervalMs = Math.max(50, Math.min(Math.floor(ctx.claimMinIdleMs / 2), 1000));
    const renewEveryMs = Math.max(50, Math.floor(ctx.claimMinIdleMs / 3));
    // A live consumer hears from Redis at least this often: reads block no longer than the
    // next reclaim step is due, and a busy one renews its leases.
    this.#contact = new ContactClock(ctx.claimMinIdleMs, Math.max(this.#reclaimIntervalMs, renewEveryMs));
    this.#renewTimer = setInterval(() => void this.#renewLeases(), timerDelay(renewEveryMs));
    this.#renewTimer.unref();
    // Also keeps this consumer hearing from Redis at least every half stall threshold (see #touch).
    this.#touchTimer = setInterval(
      () => void this.#touch(),
      Math.min(TOUCH_EVERY_MS / 4, Math.max(50, Math.floor(this.#contact.stallMs / 4))),
    );
    this.#touchTimer.unref();
  }

  /**
   * A connection of this consumer (its own, or the broker's command connection: the broker
   * calls this) reconnected: look for entries it was handed but never saw (see module doc).
   */
  noteReconnect(): void {
    for (const q of this.#queues) q.mayHoldUnknown = true;
  }

  readonly #onReconnect = (): void => this.noteReconnect();

  /** {@inheritDoc Consumer.isClosed} */
  get isClosed(): boolean {
    return this.#isClosed;
  }

  /** {@inheritDoc Consumer.inFlight} (read-ahead entries not handed out yet are not counted) */
  get inFlight(): number {
    let n = 0;
    for (const q of this.#queues) n += q.inFlight.size;
    return n - this.#buffer.length;
  }

  /** Read-ahead entries of `queue` held here and not handed out yet. */
  bufferedCount(queue: string): number {
    let n = 0;
    for (const d of this.#buffer) if (d.queue === queue) n++;
    return n;
  }

  async fetch(max: number, signal: AbortSignal): Promise<RedisDelivery[]> {
    if (this.#isClosed || signal.aborted || max <= 0) {
      if (signal.aborted || this.#isClosed) await this.#releaseBuffer();
      return [];
    }
    if (this.#buffer.length > 0) {
      // Entries whose renewal found them lost are already gone from the buffer (#renewLeases).
      // After a stall of this process (a CPU-bound handler) the renewal may not have run yet
      // and another consumer may have reclaimed some: those not confirmed lately are checked.
      await this.#confirmStale(this.#buffer);
      if (this.#buffer.length > 0) return this.#buffer.splice(0, max);
    }
    if (awakeNow() < this.#groupRecreateAtMs && this.#queues.some((q) => !q.hasGroup)) {
      // lost again soon after its last re-creation: not re-created before its pause is over
      throw this.#groupLostAgainError();
    }
    const conn = await this.#connection();
    const out: RedisDelivery[] = [];
    const want = max + this.#ctx.prefetch;
    const onAbort = () => this.#unblock();
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      await this.#fetchInto(conn, want, signal, out);
    } catch (error) {
      if (isUnblockedError(error) && (await this.#hasEveryGroup(conn))) {
        // A blocked read ended as its stream's key left the node it read on (a Redis Cluster
        // slot migration moves the stream with its group): nothing is lost, read again.
        this.#logger.debug(
          { queues: this.#queues.map((q) => q.keys.queue) },
          "redis: a blocked read ended as its stream moved (a Cluster slot migration); its group is there",
        );
      } else if (isNoGroupError(error)) {
        // The stream or group vanished (Redis restarted without persistence, or was flushed):
        // re-create the groups on the next fetch and keep going.
        for (const q of this.#queues) q.hasGroup = false;
        const now = awakeNow();
        const isAgain = now - this.#groupLostAtMs < GROUP_LOST_AGAIN_MS;
        this.#groupLostAtMs = now;
        this.#groupLosses = isAgain ? this.#groupLosses + 1 : 0;
        if (!isAgain) {
          this.#logger.warn(
            { queues: this.#queues.map((q) => q.keys.queue) },
            "redis consumer group missing; recreating (Redis restarted without persistence, or its keys were deleted: jobs queued or running then are lost, and a get() on one of them ends only at its timeout)",
          );
        } else {
          // Gone again soon after its re-creation (evicted under an `allkeys-*` policy, a script
          // deleting keys): re-created after a pause that doubles with each loss, and the fetch
          // fails meanwhile, so that the worker's backoff and its log limit apply, rather than a
          // re-creation and a warning per round trip.
          this.#groupRecreateAtMs = now + Math.min(GROUP_RECREATE_MAX_MS, 500 * 2 ** (this.#groupLosses - 1));
          if (out.length === 0 && !this.#isClosed && !signal.aborted) throw this.#groupLostAgainError();
        }
      } else {
        // A read that failed may have been applied, its reply lost (on a Cluster, a node's
        // connection can drop without a `ready` of the whole client): look for such entries.
        for (const q of this.#queues) q.mayHoldUnknown = true;
        if (out.length === 0 && !this.#isClosed && !signal.aborted) throw this.#ctx.wrapError("fetch", error);
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
    if ((signal.aborted || this.#isClosed) && out.length > 0) {
      await Promise.allSettled(out.map((d) => d.release()));
      return [];
    }
    // before anything hands an entry out (the read-ahead buffer included)
    if (out.some((d) => d.mayHoldReplacedBytes)) await this.#refuseNotUtf8(conn, out);
    let fresh = out;
    if (this.#hasStale(out)) {
      fresh = await this.#dropTakenMeanwhile(out);
      if ((signal.aborted || this.#isClosed) && fresh.length > 0) {
        await Promise.allSettled(fresh.map((d) => d.release()));
        return [];
      }
    }
    if (fresh.length > max) this.#buffer.push(...fresh.splice(max));
    return fresh;
  }

  /**
   * Reads the bytes of the entries whose text holds U+FFFD (what the client puts in place of
   * bytes that are not UTF-8; rare, and a message may hold it of its own) and refuses those whose
   * `data` or `id` field is not valid UTF-8: read as text, they were altered, and would run with
   * other arguments, or settle another task id, than the ones written. Best effort: an entry
   * whose bytes cannot be read (a failed or late call, the entry gone) is handed out as read.
   */
  async #refuseNotUtf8(conn: RedisClientLike, deliveries: readonly RedisDelivery[]): Promise<void> {
    if (conn.callBuffer === undefined) return;
    for (const d of deliveries) {
      if (!d.mayHoldReplacedBytes) continue;
      let reply: unknown;
      try {
        // (bounded as a lease renewal is: the entries were handed out, their leases run)
        reply = await withinDeadline(
          conn.callBuffer("XRANGE", d.keys.stream, d.deliveryId, d.deliveryId),
          Math.floor(this.#ctx.claimMinIdleMs / 3),
        );
      } catch {
        continue;
      }
      const fields = Array.isArray(reply) && Array.isArray(reply[0]) ? (reply[0] as unknown[])[1] : undefined;
      if (!Array.isArray(fields)) continue;
      for (let i = 0; i + 1 < fields.length; i += 2) {
        const name = String(fields[i]);
        const value = fields[i + 1];
        if ((name === "data" || name === "id") && Buffer.isBuffer(value) && !isUtf8(value)) {
          d.refuseAsNotUtf8(name);
          break;
        }
      }
    }
  }

  /** True when an entry of `deliveries` was last confirmed more than half the claim idle time ago. */
  #hasStale(deliveries: readonly RedisDelivery[]): boolean {
    const staleBefore = awakeNow() - this.#ctx.claimMinIdleMs / 2;
    for (const d of deliveries) if (d.leaseConfirmedAtMs < staleBefore) return true;
    return false;
  }

  /** True while this consumer holds `d` (its lease was not found lost). */
  #holds(d: RedisDelivery): boolean {
    return this.#queueOf(d)?.inFlight.get(d.deliveryId) === d;
  }

  /**
   * `out` without the entries another consumer took while their read's reply waited: a read
   * sent more than half the claim idle time ago (this process was stopped or its event loop
   * blocked while Redis handed the entries out) has its entries renewed, their owner checked,
   * before any runs; one already reclaimed elsewhere (or gone with its group) is dropped, not
   * run a second time.
   */
  async #dropTakenMeanwhile(out: RedisDelivery[]): Promise<RedisDelivery[]> {
    try {
      await this.#confirmStale(out);
    } catch (error) {
      // Not known to be held, so not run yet: kept as read-ahead, whose next fetch checks them
      // (given back at once when the consumer closed meanwhile).
      const held = out.filter((d) => this.#holds(d));
      if (this.#isClosed) await Promise.allSettled(held.map((d) => d.release()));
      else this.#buffer.push(...held);
      throw error;
    }
    const kept = out.filter((d) => this.#holds(d));
    if (kept.length < out.length) {
      this.#logger.warn(
        { entries: out.length - kept.length },
        "redis: dropped entries this consumer no longer holds: their read reply came late (this process was paused) and another consumer reclaimed them, or their group is gone; not run here",
      );
    }
    return kept;
  }

  /**
   * Renews the entries of `deliveries` whose lease was last confirmed more than half the claim
   * idle time ago (their owner checked); those lost leave `q.inFlight` (and the buffer).
   */
  async #confirmStale(deliveries: readonly RedisDelivery[]): Promise<void> {
    const staleBefore = awakeNow() - this.#ctx.claimMinIdleMs / 2;
    for (const q of this.#queues) {
      const ids: string[] = [];
      for (const d of deliveries) if (d.keys === q.keys && d.leaseConfirmedAtMs < staleBefore) ids.push(d.deliveryId);
      if (ids.length === 0) continue;
      // Not queued on a connection that is down (the call would wait for it, whatever the signal).
      if (this.#ctx.main.status !== "ready") {
        throw this.#unreachable(this.#ctx.main);
      }
      try {
        // Not handed out yet: one that left the stream is dropped too (a read-ahead entry that
        // Redis lost goes as the queued jobs it was read with went).
        await this.#renew(q, ids, {});
      } catch (error) {
        throw this.#ctx.wrapError("fetch", error);
      }
    }
  }

  /** {@inheritDoc Consumer.stopFetching} Gives the read-ahead entries back at once. */
  stopFetching(): void {
    void this.#releaseBuffer();
  }

  /** Gives every buffered entry back at once (claimable by any consumer, no delivery burnt). */
  async #releaseBuffer(): Promise<void> {
    if (this.#buffer.length === 0) return;
    const held = this.#buffer.splice(0);
    await Promise.allSettled(held.map((d) => d.release()));
  }

  async close(): Promise<void> {
    if (this.#isClosed) return;
    this.#isClosed = true;
    this.#onClose?.(this);
    this.#unblock();
    // With the command connection down (Redis unreachable), its commands would only wait in the
    // client: the steps below that need Redis are not waited for, or not sent. Nothing is lost:
    // entries this consumer holds stay pending and are reclaimed once their leases expire.
    const released = this.#releaseBuffer();
    // a connection between reconnect attempts may have its server back: checked (see pingRedis)
    const main = this.#ctx.main;
    const isReachable = main.status === "ready" || (await pingRedis(main, undefined)).connected;
    // bounded: with Redis unreachable the entries come back when their leases expire
    if (isReachable) await settlesWithin(released, RELEASE_ON_CLOSE_MS);
    clearInterval(this.#renewTimer);
    clearInterval(this.#touchTimer);
    const conn = this.#conn ?? (await this.#opening?.catch(() => undefined));
    this.#conn = undefined;
    if (conn) dropRedis(conn);
    if (!isReachable) {
      this.#logger.warn(
        {
          consumer: this.#consumerId,
          queues: this.#queues.map((q) => q.keys.queue),
          err: `redis unreachable at ${this.#ctx.displayUrl} (connection ${this.#ctx.main.status}${lastConnectionError(this.#ctx.main)})`,
        },
        "redis consumer closed without removing itself from its consumer group (Redis unreachable): a worker's stale-client cleanup removes it later; entries it still held stay pending and are reclaimed once their lease expires",
      );
      return;
    }
    // A consumer that owns nothing now deletes itself, so the group's consumer count is the
    // live workers (entries it gave back belong to RELEASED_CONSUMER; one that still owns
    // entries not acknowledged, a release that failed, stays for their reclaim, and
    // `cleanupStaleClients` removes it later). Best effort, bounded.
    const deleting = Promise.allSettled(
      this.#queues.map((q) =>
        runScript(
          this.#ctx.main,
          "chicoryCleanupConsumers",
          [q.keys.stream],
          [this.#ctx.group, -1, RELEASED_CONSUMER, this.#consumerId],
        ),
      ),
    ).then((outcomes) => {
      const refused = outcomes.find((o): o is PromiseRejectedResult => o.status === "rejected");
      if (refused === undefined) return;
      // (e.g. NOPERM: a user without XINFO): said, not taken for a consumer that stayed on purpose
      this.#logger.warn(
        {
          consumer: this.#consumerId,
          queues: this.#queues.map((q) => q.keys.queue),
          err: this.#ctx.wrapError("remove consumer", refused.reason).message.slice(0, 300),
        },
        "redis consumer could not remove itself from its consumer group: a worker's stale-client cleanup removes it later",
      );
    });
    await settlesWithin(deleting, DELETE_ON_CLOSE_MS);
  }

  /** The error of a fetch while a group lost again and again waits to be re-created. */
  #groupLostAgainError(): BrokerConnectionError {
    const queues = this.#queues.map((q) => q.keys.queue).join(", ");
    const inMs = Math.max(0, Math.round(this.#groupRecreateAtMs - awakeNow()));
    return new BrokerConnectionError(
      `redis consumer group of ${queues} went missing again within ${GROUP_LOST_AGAIN_MS / 1000} s of its re-creation ` +
        `at ${this.#ctx.displayUrl} (Redis restarted again without persistence, or its keys were deleted or evicted: Chicory needs maxmemory-policy noeviction; see docs/brokers/redis.md); ` +
        `re-created in ${inMs} ms`,
    );
  }

  /** True once this consumer is closed or the fetch given `signal` was given up. */
  #isOver(signal: AbortSignal): boolean {
    return this.#isClosed || signal.aborted;
  }

  async #fetchInto(conn: RedisClientLike, max: number, signal: AbortSignal, out: RedisDelivery[]): Promise<void> {
    for (const q of this.#queues) if (!q.hasGroup) await this.#createGroup(conn, q);
    // Housekeeping that fails (a full Redis, a script error) is logged and tried again later:
    // it never keeps the read below from taking the jobs that are ready.
    // A consumer closed meanwhile (or a fetch given up) sends no more calls that name it: each
    // would re-create the consumer close() removes (and take entries for nobody): #isOver.
    for (const q of this.#queues) {
      if (this.#isOver(signal)) return;
      if (q.mayHoldUnknown && out.length < max) {
        await this.#housekeep(q, "recover own entries", () => this.#recoverOwn(conn, q, max - out.length, out));
      }
    }
    for (const q of this.#queues) {
      if (awakeNow() >= q.moveAtMs) {
        await this.#housekeep(
          q,
          "move due delayed jobs",
          () => this.#moveDelayed(conn, q),
          () => {
            q.moveAtMs = awakeNow() + MOVER_RECHECK_MS;
          },
        );
      }
    }
    for (const q of this.#queues) {
      if (this.#isOver(signal)) return;
      if (out.length < max && awakeNow() >= q.reclaimAtMs) {
        await this.#housekeep(
          q,
          "reclaim expired leases",
          () => this.#reclaim(conn, q, max - out.length, out),
          () => {
            q.reclaimAtMs = awakeNow() + this.#reclaimIntervalMs;
            q.reclaimCursor = "0-0"; // (a cursor the script refuses would fail every later call)
          },
        );
      }
    }
    if (out.length >= max || this.#isOver(signal)) return;
    const queues = this.#queues;
    if (queues.length === 1) {
      await this.#read(
        conn,
        queues[0] as QueueState,
        max - out.length,
        out.length > 0 ? undefined : this.#blockFor(),
        out,
        signal,
      );
      return;
    }
    for (const q of queues) {
      if (out.length >= max || this.#isOver(signal)) return;
      await this.#read(conn, q, max - out.length, undefined, out, signal);
    }
    if (out.length > 0 || this.#isOver(signal)) return;
    if (!this.#readsOneByOne && !isClusterClient(conn)) {
      try {
        await this.#readAny(conn, max, this.#blockFor(), out);
        return;
      } catch (error) {
        // A sharded server behind one endpoint (a proxy, a managed "cluster" without the
        // Cluster API) refuses a command over keys of several slots: read one queue at a time.
        if (!isCrossSlotError(error)) throw error;
        this.#readsOneByOne = true;
        this.#logger.info(
          { queues: queues.map((x) => x.keys.queue) },
          "redis: the server refuses one read over several queues' streams (CROSSSLOT); reading them one at a time",
        );
      }
    }
    // On a Cluster the queues' streams are on different slots (one command cannot block on
    // them all): it blocks on one queue in turn, for a short time.
    const q = queues[this.#turn++ % queues.length] as QueueState;
    await this.#read(conn, q, max, Math.min(this.#blockFor(), MULTI_QUEUE_BLOCK_MS), out, signal);
  }

  /**
   * One blocking read of all this consumer's queues (one XREADGROUP over their streams), so a
   * job published to any of them wakes this consumer at once. Called after a read of each
   * found nothing: Redis then answers with the one stream that got entries first. Should
   * entries of several streams have arrived between those reads and this one, the answer may
   * hold more than `count` in all: those beyond are given back at once (released, their
   * delivery not counted), so the read-ahead stays within its bound.
   */
  async #readAny(conn: RedisClientLike, count: number, blockMs: number, out: RedisDelivery[]): Promise<void> {
    this.#settler.sendWaitingAcks(); // the results they carry go out before this read
    const first = out.length;
    await this.#readStreams(conn, this.#queues, count, blockMs, out, awakeNow());
    if (out.length - first > count) {
      const extra = out.splice(first + count);
      await Promise.allSettled(extra.map((d) => d.release()));
    }
  }

  /**
   * One XREADGROUP of new entries of `queues`' streams (blocking for `blockMs` when given),
   * handed out to `out` with leases from `sentAtMs`.
   */
  async #readStreams(
    conn: RedisClientLike,
    queues: readonly QueueState[],
    count: number,
    blockMs: number | undefined,
    out: RedisDelivery[],
    sentAtMs: number,
  ): Promise<void> {
    const args: Array<string | number> = ["GROUP", this.#ctx.group, this.#consumerId, "COUNT", count];
    if (blockMs !== undefined) args.push("BLOCK", blockMs);
    args.push("STREAMS");
    for (const q of queues) args.push(q.keys.stream);
    for (let i = 0; i < queues.length; i++) args.push(">");
    this.#isBlocking = blockMs !== undefined;
    let reply: ReadReply;
    try {
      reply = (await conn.call("XREADGROUP", ...args)) as ReadReply;
    } finally {
      this.#isBlocking = false;
    }
    if (reply === null && awakeNow() - sentAtMs >= (blockMs ?? 0) + GAVE_UP_AFTER_MS) {
      // Ended by the client's own time limit (READ_GIVE_UP_GRACE_MS, which ioredis applies to a
      // read without BLOCK too), not by Redis: no reply (Redis frozen?). Should Redis hand this
      // read entries later, they are pending for this consumer and not held: the next fetch
      // takes them back.
      for (const q of queues) q.mayHoldUnknown = true;
      return;
    }
    this.#replied();
    for (const q of queues) q.isBacklogged = false;
    for (const [stream, entries] of streamReplies(reply)) {
      // (a client given with ioredis's own keyPrefix answers with the prefixed name)
      const q = queues.find((x) => x.keys.stream === stream) ?? queues.find((x) => stream.endsWith(x.keys.stream));
      if (q === undefined) {
        // (never seen) entries read but not held: the next fetch takes them back
        for (const x of queues) x.mayHoldUnknown = true;
        continue;
      }
      for (const [id, fields] of entries) this.#handOut(q, id, fields ?? [], 1, out, sentAtMs);
      q.isBacklogged = entries.length >= count;
    }
  }

  /**
   * Runs one housekeeping step of `q`; an error other than a lost group (handled by `fetch`) or a
   * lost connection (the read fails too) is logged, `backOff` runs, and the fetch goes on.
   */
  async #housekeep(q: QueueState, what: string, step: () => Promise<void>, backOff?: () => void): Promise<void> {
    try {
      await step();
    } catch (error) {
      if (isNoGroupError(error) || this.#conn?.status !== "ready") throw error;
      backOff?.();
      const now = awakeNow();
      if (now - q.housekeepingWarnedAtMs >= HOUSEKEEPING_WARN_MS) {
        q.housekeepingWarnedAtMs = now;
        this.#logger.warn(
          { queue: q.keys.queue, err: this.#ctx.wrapError(what, error).message },
          `redis: could not ${what}; reading ready jobs meanwhile`,
        );
      }
    }
  }

  /** Block no longer than the next housekeeping step is due. */
  #blockFor(): number {
    const now = awakeNow();
    let until = now + this.#ctx.blockMs;
    for (const q of this.#queues) until = Math.min(until, q.moveAtMs, q.reclaimAtMs);
    return Math.max(1, Math.ceil(until - now)); // BLOCK takes whole milliseconds
  }

  async #read(
    conn: RedisClientLike,
    q: QueueState,
    count: number,
    blockMs: number | undefined,
    out: RedisDelivery[],
    signal: AbortSignal,
  ): Promise<void> {
    // While the queue has a backlog (the last read got all it asked for), acks of this stream
    // waiting for the check phase go first, with a non-blocking read in the same call; only when
    // that finds nothing new does a blocking read follow. On a queue that is not backlogged the
    // acks go on their own and the blocking read at once: a read that waits for the acks' reply
    // would put a second wake-up of this process on the path of the next job.
    // A lease starts when Redis hands the entry out, so no later than the request was sent.
    let sentAtMs = awakeNow();
    const withAcks = q.isBacklogged ? this.#settler.readWithAcks(q.keys.stream, count) : undefined;
    if (withAcks === undefined) {
      this.#settler.sendWaitingAcks(); // the results they carry go out before this read
    } else {
      const entries = await withAcks;
      this.#replied();
      for (const [id, fields] of entries) this.#handOut(q, id, fields ?? [], 1, out, sentAtMs);
      q.isBacklogged = entries.length >= count;
      // (a stop while the acks were out: no blocking read after it)
      if (entries.length > 0 || blockMs === undefined || this.#isOver(signal)) return;
    }
    if (withAcks !== undefined) sentAtMs = awakeNow();
    await this.#readStreams(conn, [q], count, blockMs, out, sentAtMs);
  }

  /** Hands out an entry whose read or claim was sent at `sentAtMs` (its lease's start). */
  #handOut(
    q: QueueState,
    id: string,
    fields: string[],
    deliveryCount: number,
    out: RedisDelivery[],
    sentAtMs: number,
  ): void {
    const delivery = new RedisDelivery(q.keys, id, fields, deliveryCount, this.#settler, sentAtMs);
    if (sentAtMs > q.seenAtMs) q.seenAtMs = sentAtMs;
    q.inFlight.set(id, delivery);
    out.push(delivery);
  }

  /** Whether every queue's stream has this consumer's group (false when a lookup fails). */
  async #hasEveryGroup(conn: RedisClientLike): Promise<boolean> {
    try {
      for (const q of this.#queues) {
        if (!(await groupNames(conn, q.keys.stream)).includes(this.#ctx.group)) return false;
      }
      return true;
    } catch {
      return false;
    }
  }

  async #createGroup(conn: RedisClientLike, q: QueueState): Promise<void> {
    // One script: the group at id 0 and this consumer, created even on a full Redis.
    await runScript(conn, "chicoryCreateGroup", [q.keys.stream, q.keys.unique], [this.#ctx.group, this.#consumerId]);
    q.hasGroup = true;
    q.seenAtMs = awakeNow();
    await this.#warnOfOtherGroups(conn, q);
  }

  /**
   * Warns when the queue's stream has consumer groups besides this consumer's (a typo, or two
   * deployments that share a server and prefix and differ in `consumerGroup`): each group reads
   * the entries, and an ack deletes an entry for all of them, so a job runs in one group or in
   * several, unpredictably. Best effort: a failure is ignored.
   */
  async #warnOfOtherGroups(conn: RedisClientLike, q: QueueState): Promise<void> {
    const groups = await groupNames(conn, q.keys.stream).catch(() => []);
    const others = groups.filter((name) => name !== this.#ctx.group);
    if (others.length === 0) return;
    this.#logger.warn(
      { queue: q.keys.queue, consumerGroup: this.#ctx.group, otherGroups: others.slice(0, 10) },
      "redis: the queue's stream has other consumer groups: each group reads the queue's jobs, and an ack deletes " +
        "a job for every group, so a job runs in one group or in several, unpredictably (not once per group); give " +
        "every worker of the queue the same consumerGroup (CHICORY_BROKER_REDIS_CONSUMER_GROUP) and delete the " +
        "others (XGROUP DESTROY)",
    );
  }

  async #moveDelayed(conn: RedisClientLike, q: QueueState): Promise<void> {
    const { delayed, delayedData, stream, unique } = q.keys;
    const reply = (await runScript(
      conn,
      "chicoryMoveDelayed",
      [delayed, delayedData, stream, unique],
      [MOVE_BATCH, MOVE_BYTES],
    )) as [number, string, number, number];
    const [, next, nowMs, lost] = reply;
    this.#replied(Number(nowMs), stream);
    if (lost > 0) warnDropped(this.#logger, q.keys.queue, lost);
    if (moreDue(reply)) {
      q.moveAtMs = awakeNow(); // more are due: next fetch moves the next batch
      return;
    }
    // "-1": none left; "inf" (a member ZADDed with the score +inf, never due): as none
    const nextDue = Number(next);
    const waitMs =
      nextDue < 0 || !Number.isFinite(nextDue)
        ? MOVER_RECHECK_MS
        : Math.min(MOVER_RECHECK_MS, Math.max(0, nextDue - nowMs));
    q.moveAtMs = awakeNow() + waitMs;
  }

  async #reclaim(conn: RedisClientLike, q: QueueState, room: number, out: RedisDelivery[]): Promise<void> {
    const count = Math.min(room, RECLAIM_COUNT);
    const sentAtMs = awakeNow();
    const extraMs = this.#contact.extraMs(sentAtMs);
    const [cursor, flat, redisNowMs, appliedMs, streamExtraMs, opened, held] = (await runScript(
      conn,
      "chicoryReclaim",
      [q.keys.stream, q.keys.pulse],
      [
        this.#ctx.group,
        this.#consumerId,
        this.#ctx.claimMinIdleMs,
        q.reclaimCursor,
        count,
        RECLAIM_SCAN_LIMIT,
        RECLAIM_PAGE,
        this.#contact.lastReplyRedisMs(q.keys.stream),
        this.#contact.stallMs,
        extraMs,
        RELEASED_CONSUMER,
      ],
    )) as [string, Array<string | string[] | number>, number, number, number, number, number];
    this.#replied(Number(redisNowMs), q.keys.stream);
    q.pulsedAtMs = sentAtMs;
    // The script saw a stall that began after the last reply (it ran after it): the same window.
    if (Number(appliedMs) > extraMs) this.#outOfTouch(this.#contact.outOfTouch(Number(appliedMs)));
    if (opened === 1) this.#streamWindowOpened(q, Number(streamExtraMs), Number(held));
    const claimed = this.#handOutClaimed(q, flat, out, sentAtMs);
    q.reclaimCursor = cursor;
    const now = awakeNow();
    if (cursor === "0-0") q.reclaimAtMs = now + this.#reclaimIntervalMs;
    else q.reclaimAtMs = claimed > 0 ? now : now + 100;
  }

  /**
   * Hands out the entries a claiming script returned (`id, fields, deliveryCount` triples),
   * except one still in flight here (our own entry whose renewal was late: never handed out
   * twice); returns how many were handed out. One whose delivery here is being settled (a
   * release that made it claimable at once, its reply still on its way; or an ack, after a
   * stall that let the lease run out) is noted instead: once that settle is done, recover-own
   * takes the entry back if it is still pending here (the release's), and finds nothing if not
   * (the ack's). Handed out now, an ack's entry would run twice; skipped without a note, a
   * release's would wait here, held by nobody, for a whole lease and a second counted delivery.
   */
  #handOutClaimed(
    q: QueueState,
    flat: Array<string | string[] | number>,
    out: RedisDelivery[],
    sentAtMs: number,
  ): number {
    let n = 0;
    for (let i = 0; i + 2 < flat.length; i += 3) {
      const id = flat[i] as string;
      const held = q.inFlight.get(id);
      if (held !== undefined) {
        if (held.isSettled) q.claimedWhileSettling.add(id);
        continue;
      }
      this.#handOut(q, id, (flat[i + 1] as string[]) ?? [], claimedCount(flat[i + 2]), out, sentAtMs);
      n++;
    }
    return n;
  }

  /**
   * Takes back entries pending for this consumer that it does not hold (see module doc). Runs
   * between reads, so every read's entries are already held here or were never seen.
   */
  async #recoverOwn(conn: RedisClientLike, q: QueueState, room: number, out: RedisDelivery[]): Promise<void> {
    // Cleared first: a reconnect while the call runs sets it again; a failed call leaves it set.
    q.mayHoldUnknown = false;
    const now = awakeNow();
    for (const [id, until] of q.parked) if (until <= now) q.parked.delete(id);
    let reply: [number, Array<string | string[] | number>];
    try {
      reply = (await runScript(
        conn,
        "chicoryRecoverOwn",
        [q.keys.stream],
        [
          this.#ctx.group,
          this.#consumerId,
          Math.min(room, RECLAIM_COUNT),
          this.#ctx.claimMinIdleMs,
          ...q.inFlight.keys(),
          ...q.parked.keys(),
        ],
      )) as [number, Array<string | string[] | number>];
    } catch (error) {
      q.mayHoldUnknown = true;
      throw error;
    }
    const [more, flat] = reply;
    if (Number(more) === 1) q.mayHoldUnknown = true;
    const taken = this.#handOutClaimed(q, flat, out, now); // sent at `now`
    if (taken > 0) {
      this.#logger.warn(
        { queue: q.keys.queue, entries: taken },
        "redis: took back entries handed to this consumer by a read whose reply was lost",
      );
    }
  }

  async #connection(): Promise<RedisClientLike> {
    if (this.#conn === undefined) {
      this.#opening ??= this.#open();
      try {
        this.#conn = await this.#opening;
      } catch (error) {
        this.#opening = undefined;
        throw this.#ctx.wrapError("connect", error);
      }
    }
    if (this.#conn.status !== "ready") {
      throw this.#unreachable(this.#conn);
    }
    return this.#conn;
  }

  #unreachable(conn: RedisClientLike): BrokerConnectionError {
    return new BrokerConnectionError(
      `redis unreachable at ${this.#ctx.displayUrl} (connection ${conn.status}${lastConnectionError(conn)})`,
    );
  }

  async #open(): Promise<RedisClientLike> {
    const conn = await openReader(this.#ctx.main, this.#consumerId, this.#ctx.blockMs, (id) => {
      this.#clientId = id;
    });
    conn.on("ready", this.#onReconnect);
    if (this.#isClosed) dropRedis(conn);
    return conn;
  }

  /**
   * Ends a blocked XREADGROUP at once (it returns as if it timed out). CLIENT UNBLOCK goes over
   * the command connection, so it can reach Redis before the XREADGROUP it targets (sent on
   * the blocking connection) has started to block: it then answers 0 and is tried again a few
   * ms later, for at most ~100 ms, while that read is still pending.
   */
  #unblock(attempt = 0): void {
    if (!this.#isBlocking || this.#clientId === undefined || this.#ctx.main.status !== "ready") return;
    this.#ctx.main.call("CLIENT", "UNBLOCK", this.#clientId).then(
      (unblocked) => {
        if (Number(unblocked) === 0 && this.#isBlocking && attempt < UNBLOCK_ATTEMPTS) {
          setTimeout(() => this.#unblock(attempt + 1), UNBLOCK_RETRY_MS).unref();
        }
      },
      () => {
        // no permission for CLIENT UNBLOCK: the read ends by itself within its block time
      },
    );
  }

  async #renewLeases(): Promise<void> {
    if (this.#isRenewing || this.#isClosed || this.#ctx.main.status !== "ready") return;
    this.#isRenewing = true;
    try {
      // One queue's failure (its group gone) never stops the renewal of the others.
      for (const q of this.#queues) {
        try {
          await this.#renewQueue(q);
        } catch (error) {
          if (isNoGroupError(error)) q.hasGroup = false; // the next fetch re-creates it
          // (wrapped: the error then names a script an ACL refuses, and holds no password)
          const err = this.#ctx.wrapError("lease renewal", error).message;
          // one the consumer's close cut (Redis not answering at a stop): nothing more to renew
          if (this.#isClosed) this.#logger.debug({ queue: q.keys.queue, err }, "redis lease renewal cut by the close");
          else this.#logger.warn({ queue: q.keys.queue, err }, "redis lease renewal failed; will retry");
        }
      }
    } finally {
      this.#isRenewing = false;
    }
  }

  /**
   * Renews the leases of `ids` of `q` in one call. The entries another consumer holds (or will
   * be handed: their group was re-created) leave this consumer: their runs learn it, and
   * read-ahead ones are never handed out. Entries nobody holds that left the stream (settled by
   * a consumer that reclaimed them, or lost in a Redis restart without persistence) leave it
   * too, but with `ofRuns` their runs go on, and their outcomes are stored unless the task has a
   * final one ({@link RedisDelivery.entryGone}): nobody else will run them; those being settled
   * are left to their settle call's judgement. The others are held
   * for another claim idle time from when the call was sent. A missing group is noted for the
   * next fetch to re-create. `ofRuns`: the ids are of handed-out (or read-ahead) entries, as
   * opposed to those of a late read not handed out yet; lost runs are warned of.
   * Returns how many are still held.
   */
  async #renew(
    q: QueueState,
    ids: readonly string[],
    { ofRuns = false, window }: { ofRuns?: boolean; window?: { provenMs: number } },
  ): Promise<number> {
    const sentAtMs = awakeNow();
    // the deliveries renewed: a reply that comes late must not act on a newer one of an id
    const renewed = ids.map((id) => q.inFlight.get(id));
    const [lost, gone, noGroup, streamExtraMs, opened, provenMs] = (await runScript(
      this.#ctx.main,
      "chicoryRenew",
      [q.keys.stream, q.keys.pulse],
      [this.#ctx.group, this.#consumerId, this.#contact.stallMs, this.#ctx.claimMinIdleMs, ...ids],
    )) as [string[], string[], number, number, number, number];
    this.#replied();
    q.pulsedAtMs = sentAtMs;
    if (window) window.provenMs = Number(provenMs) || 0;
    if (opened === 1) this.#streamWindowOpened(q, Number(streamExtraMs));
    if (noGroup === 1) q.hasGroup = false; // the next fetch re-creates it
    let running = 0;
    let goneRunning = 0;
    const isRun = (d: RedisDelivery | undefined): d is RedisDelivery =>
      d !== undefined && !d.isSettled && !this.#buffer.includes(d);
    const sentOf = (id: string): RedisDelivery | undefined => {
      const delivery = q.inFlight.get(id);
      if (delivery === undefined || !renewed.includes(delivery)) return undefined;
      q.inFlight.delete(id);
      return delivery;
    };
    for (const id of lost) {
      const delivery = sentOf(id);
      // handed out (not read-ahead) and not being settled: a run here
      if (ofRuns && isRun(delivery)) running++;
      delivery?.leaseLost();
    }
    for (const id of gone) {
      const delivery = sentOf(id);
      if (ofRuns && isRun(delivery)) {
        goneRunning++;
        delivery.entryGone();
        // Being settled (its settle call went out after this renewal): the entry's absence says
        // no more than that call's own reply will (settled already), which the settler judges
        // (an earlier copy of the call, or a lost lease); a lost lease noted here would overrule
        // it, and warn falsely of every ack resent after a stall of Redis.
      } else if (delivery !== undefined && !delivery.isSettled) delivery.leaseLost();
    }
    if (running > 0) {
      // (a settle finds it out too, and says so; a run aborted here would otherwise end unsaid)
      this.#logger.warn(
        { queue: q.keys.queue, consumer: this.#consumerId, entries: running },
        noGroup === 1
          ? "redis consumer: entries it was running are in no consumer's hands (their consumer group was deleted, then re-created?): their runs here are aborted, and the group delivers them again"
          : "redis consumer: lease lost on entries it held (another worker took them after they went unrenewed for the claim idle time: " +
              "an event loop, process or network stall? or their consumer group was re-created): their runs here are aborted, and their outcomes are left to the worker that runs them",
      );
    }
    if (goneRunning > 0) {
      this.#logger.warn(
        { queue: q.keys.queue, consumer: this.#consumerId, entries: goneRunning },
        "redis consumer: entries it is running left the stream, held by no consumer (Redis restarted without persistence or lost its data, or another worker that took them over finished them): their runs go on unless the task already has a final record (then they are aborted: another worker finished it), and each outcome is stored unless the task has a final record by then",
      );
    }
    for (const delivery of renewed) {
      // still held (neither lost nor gone): its lease was confirmed as this call was sent
      if (delivery !== undefined && q.inFlight.get(delivery.deliveryId) === delivery) {
        delivery.leaseConfirmedAtMs = sentAtMs;
      }
    }
    if ((lost.length > 0 || gone.length > 0) && this.#buffer.length > 0) {
      this.#buffer = this.#buffer.filter((d) => q.inFlight.get(d.deliveryId) === d || d.keys !== q.keys);
    }
    return ids.length - lost.length - gone.length;
  }

  async #renewQueue(q: QueueState): Promise<void> {
    // Not the entries being settled: a renewal that reached Redis after a release would
    // make the released entry look fresh again (others would wait a claim idle time for it).
    // Those whose record is being written in pieces before their ack are still held, though.
    const ids: string[] = [];
    for (const [id, delivery] of q.inFlight) if (!delivery.isSettled || delivery.isWritingRecord) ids.push(id);
    for (let i = 0; i < ids.length; i += RENEW_CHUNK) {
      const chunk = ids.slice(i, i + RENEW_CHUNK);
      if ((await this.#renew(q, chunk, { ofRuns: true })) > 0) q.seenAtMs = awakeNow();
    }
  }

  /**
   * Marks this consumer active on every queue where the group has not seen it for
   * TOUCH_EVERY_MS (see module doc): an empty, non-blocking history read on the command
   * connection. Keeps each queue's pulse (fleet-pulse.lua) when its reclaims and renewals have
   * not for half the stall threshold, with a renewal of no entries: a reply from Redis too, so
   * that a consumer with nothing to read or renew (all its jobs are `at_most_once` ones,
   * acknowledged already) never takes its quiet for a stall; one still quiet (no queue has a
   * group yet) sends a PING. A failure is left to the next
   * round (fetch reports connection problems).
   */
  async #touch(): Promise<void> {
    if (this.#isTouching || this.#isClosed || this.#ctx.main.status !== "ready") return;
    this.#isTouching = true;
    try {
      for (const q of this.#queues) {
        // Keeps the queue's pulse when neither reclaims (no free slot) nor renewals (nothing
        // unsettled) have for half the stall threshold: a renewal of no entries (a reply too).
        if (this.#isClosed) return;
        if (q.hasGroup && awakeNow() - q.pulsedAtMs >= this.#contact.stallMs / 2) await this.#renew(q, [], {});
      }
      // Still quiet (no queue has a group yet): a PING instead.
      if (this.#isClosed) return;
      if (this.#contact.quietForMs() >= this.#contact.stallMs / 2) {
        await this.#ctx.main.call("PING");
        this.#replied();
      }
      for (const q of this.#queues) {
        // closed meanwhile: a read now would re-create the consumer close() removed
        if (this.#isClosed) return;
        if (!q.hasGroup || awakeNow() - q.seenAtMs < TOUCH_EVERY_MS) continue;
        await this.#ctx.main.call(
          "XREADGROUP",
          "GROUP",
          this.#ctx.group,
          this.#consumerId,
          "COUNT",
          1,
          "STREAMS",
          q.keys.stream,
          PAST_LAST_ID,
        );
        this.#replied();
        q.seenAtMs = awakeNow();
      }
    } catch {
      // NOGROUP (fetch re-creates the group) or a connection problem: try again next round
    } finally {
      this.#isTouching = false;
    }
  }

  /** Notes a reply from Redis (with the Redis time it carries, if any); see {@link ContactClock}. */
  #replied(redisNowMs?: number, stream?: string): void {
    this.#outOfTouch(this.#contact.replied(redisNowMs, stream));
  }

  /**
   * A gap in Redis's replies opened (or widened) an out-of-touch window: said once per window,
   * and this consumer's own leases are renewed now rather than at the next round, so other
   * workers coming out of the same stall find them fresh.
   */
  #outOfTouch(window: OutOfTouch | undefined): void {
    if (window === undefined || this.#isClosed) return;
    this.#logger.warn(
      {
        consumer: this.#consumerId,
        queues: this.#queues.map((q) => q.keys.queue),
        gapMs: window.extraMs,
        windowMs: this.#ctx.claimMinIdleMs,
      },
      `redis: no reply from Redis for ${seconds(window.extraMs)} (Redis frozen, paused or restarting, or this process stalled): ` +
        `leases renewed now; for the next ${seconds(this.#ctx.claimMinIdleMs)} (the lease, claimMinIdle) this consumer reclaims only ` +
        `entries idle longer than ${seconds(this.#ctx.claimMinIdleMs + window.extraMs)} (the lease plus that gap), ` +
        "so that live workers cut off by the same stall keep their jobs",
    );
    void this.#renewLeases();
  }

  /**
   * A reclaim or renewal of this consumer opened `q`'s stream window (fleet-pulse.lua): no consumer had
   * called on the stream for `quietMs`, or this consumer saw a stall during which none did. Said
   * once, by the consumer that opened it: a warning, only at info level when this consumer
   * has just warned of the same stall itself ("no reply from Redis …": its own window is open),
   * and at debug level when no consumer held an entry (`held` 0: the window keeps nobody
   * waiting, as on a start after every worker was gone a while; entries given back by stopping
   * workers are not held: reclaims take them at the lease alone, window or not).
   */
  #streamWindowOpened(q: QueueState, quietMs: number, held?: number): void {
    if (this.#isClosed) return;
    const level = held === 0 ? "debug" : this.#contact.extraMs() > 0 ? "info" : "warn";
    const leaseMs = this.#ctx.claimMinIdleMs;
    this.#logger[level](
      {
        consumer: this.#consumerId,
        queue: q.keys.queue,
        quietMs,
        windowMs: leaseMs,
        ...(held === undefined ? {} : { held }),
      },
      `redis: no consumer was in touch with queue ${q.keys.queue} for ${seconds(quietMs)} ` +
        "(Redis frozen, paused or restarting, or no worker was running): " +
        `for the next ${seconds(leaseMs)} (the lease, claimMinIdle) every consumer reclaims only entries ` +
        `idle longer than ${seconds(leaseMs + quietMs)} (the lease plus that time), so that live workers cut off by a stall ` +
        `keep their jobs (entries given back by stopping workers are taken at the lease)` +
        `${held === undefined ? "" : held === 0 ? "; no entry is held now" : `; ${held} ${held === 1 ? "entry is" : "entries are"} held now`}`,
    );
  }

  /**
   * The proven extra idle ms every reclaim of `d`'s stream requires now (fleet-pulse.lua's
   * `sure`), for the settler's judgement of a call resent after a stall: a renewal of no
   * entries, which is a live consumer's call on the stream, so it opens the window when nobody
   * called for longer than the stall threshold (as the next reclaim would). 0 without asking
   * while the command connection is not ready, and 0 when no reply comes within a third of the
   * lease (Redis away again): the judgement then stands without it, and the settle it holds
   * back is not kept waiting.
   */
  async #streamWindowMs(d: RedisDelivery): Promise<number> {
    const q = this.#queueOf(d);
    if (q === undefined || this.#isClosed || this.#ctx.main.status !== "ready") return 0;
    const window = { provenMs: 0 };
    const renewal = this.#renew(q, [], { window });
    renewal.catch(() => undefined); // (past the deadline, its failure is nobody's)
    await withinDeadline(renewal, Math.floor(this.#ctx.claimMinIdleMs / 3));
    return window.provenMs;
  }

  #queueOf(delivery: RedisDelivery): QueueState | undefined {
    return this.#queues.find((q) => q.keys === delivery.keys);
  }
}

/** The names of the consumer groups of `stream` (`XINFO GROUPS`; rejects when it is missing). */
async function groupNames(conn: RedisClientLike, stream: string): Promise<string[]> {
  const groups = await conn.call("XINFO", "GROUPS", stream);
  if (!Array.isArray(groups)) return [];
  const names: string[] = [];
  for (const group of groups) {
    // RESP2: a flat [name, value, …] list per group; RESP3 through `call`: the same
    const fields = Array.isArray(group) ? (group as unknown[]) : [];
    const name = fields[fields.indexOf("name") + 1];
    if (typeof name === "string") names.push(name);
  }
  return names;
}

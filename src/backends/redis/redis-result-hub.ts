/**
 * Result waiting for the Redis backend: one subscriber connection per backend instance on the
 * `${prefix}:done:${db}` channel (message = a JSON array of the records finished in one turn of a
 * worker, a record too large to inline, or deleted, given by its task id), shared by every waiter, on top
 * of the shared {@link ResultWaiter} (batched MGET poll fallback, which also covers
 * notifications missed while the subscriber reconnects). An inlined record resolves its
 * waiters at once; ids of one event-loop turn that someone here waits for are read with one
 * MGET.
 * @module
 */
import { safeJsonParse } from "../../core/json.js";
import { settlesWithin } from "../../core/sleep.js";
import { isNoPermError } from "../../redis/redis-access.js";
import type { RedisClientLike } from "../../redis/redis-client.js";
import { dropRedis, openDuplicate } from "../../redis/redis-connect.js";
import type { TaskRecord, WaitOptions } from "../backend.js";
import { type OutageNotice, ResultWaiter } from "../result-waiter.js";
import { asRecord, RECORD_MAX_DEPTH } from "./redis-record.js";

/** Longest wait for the subscription before a waiter relies on polling alone. */
const SUBSCRIBE_WAIT_MS = 1000;
/**
 * After a failed subscribe, waits poll without trying again for this long: a minute when Redis
 * refused the channel (`NOPERM`: an ACL user without it), a second otherwise (Redis away).
 * Without it every `get()` would open, and drop, a connection of its own.
 */
const NOPERM_RETRY_MS = 60_000;
const FAILED_RETRY_MS = 1000;

/**
 * How often the subscriber connection is checked with a PING, and how long its answer may take.
 * A subscriber only receives: without the check, a connection that died silently (a network
 * partition, a NAT or load balancer that dropped it) would be taken for live for as long as
 * TCP keepalive needs to notice (minutes), and every wait would last the safety poll meanwhile.
 */
const SUBSCRIBER_PING_MS = 5000;
const SUBSCRIBER_PING_TIMEOUT_MS = 3000;

/** Longest wait in `close()` for a subscriber connection still opening. */
const CLOSE_WAIT_MS = 1000;

/** Most task ids remembered as published by this process and not yet waited for. */
const MAX_EXPECTED = 32_768;

/**
 * Most records kept for tasks that finished before anyone waited, and for how long: a wait
 * takes its record out; what nobody waits for is dropped after {@link EARLY_MAX_AGE_MS} (a later
 * wait reads the record from Redis as usual).
 */
const MAX_EARLY = 16_384;
const EARLY_MAX_AGE_MS = 10_000;

/** What the hub needs from the backend. */
export interface ResultHubHost {
  readonly main: RedisClientLike;
  readonly channel: string;
  readonly pollIntervalMs: number;
  fetchMany(ids: string[]): Promise<Map<string, TaskRecord | Error>>;
  /** Something went wrong meanwhile (`what`: default "read failed"); waits go on. */
  onError(error: unknown, what?: string): void;
  /** Tells of an outage that waits meet, once per outage (see {@link OutageNotice}). */
  readonly outage?: OutageNotice;
  /** How long a record lives in Redis, ms (0: for ever): a kept record is handed out for half that at most. */
  readonly recordTtlMs?: number;
}

/** Shared waiting for terminal records (see module doc). */
export class RedisResultHub {
  readonly #host: ResultHubHost;
  readonly #waiter: ResultWaiter;
  /**
   * {@link EARLY_MAX_AGE_MS}, or half the records' TTL when shorter. A record is kept from its
   * arrival, which comes after its write by the notification's delay (more when this process's
   * event loop was busy): the half leaves that delay room, so that a kept record is not handed
   * out after Redis expired it (an expired record reads PENDING) unless its notification came
   * more than half the TTL late. The TTL is this backend's setting; a worker that writes with
   * a shorter one shortens the record's life in Redis, not this.
   */
  readonly #earlyMaxAgeMs: number;
  readonly #notified = new Set<string>();
  /** Ids published by this process (`expect`), oldest first; dropped once their record arrives. */
  readonly #expected = new Set<string>();
  /**
   * Records of expected ids that arrived before a wait, oldest first, with their arrival time
   * (`performance.now()`: a step of the wall clock neither keeps one past its age nor drops it).
   */
  readonly #early = new Map<string, { readonly record: TaskRecord; readonly at: number }>();
  #subscriber: Promise<RedisClientLike | undefined> | undefined;
  /** The subscriber connection once opened, before its subscription is confirmed. */
  #sub: RedisClientLike | undefined;
  #flush: NodeJS.Immediate | undefined;
  /** Drops the kept records once they expire, while any are kept (unref'd). */
  #earlySweep: NodeJS.Timeout | undefined;
  #pingTimer: NodeJS.Timeout | undefined;
  /** The next SUBSCRIBE of a reconnected subscriber after a NOPERM (see #subscribeAgain). */
  #resubscribeTimer: NodeJS.Timeout | undefined;
  #isPinging = false;
  #isClosed = false;
  #isSubscribed = false;
  /** No subscribe before this time (performance.now() ms), after a failed one. */
  #retrySubscribeAtMs = Number.NEGATIVE_INFINITY;
  /** `performance.now()` when the subscription under way (or the last one) began. */
  #subscribeStartedAt = Number.NEGATIVE_INFINITY;
  /** True while the subscription is confirmed and its connection has not dropped since. */
  #isLive = false;

  constructor(host: ResultHubHost) {
    this.#host = host;
    const ttlMs = host.recordTtlMs ?? 0;
    this.#earlyMaxAgeMs = ttlMs > 0 ? Math.min(EARLY_MAX_AGE_MS, Math.floor(ttlMs / 2)) : EARLY_MAX_AGE_MS;
    this.#waiter = new ResultWaiter({
      fetchMany: (ids) => host.fetchMany(ids),
      pollIntervalMs: host.pollIntervalMs,
      onError: (error) => host.onError(error),
      ...(host.outage === undefined ? {} : { outage: host.outage }),
    });
  }

  /** The task ids awaited (those whose wait has begun reading). */
  get waiting(): number {
    return this.#waiter.size;
  }

  /** Resolves with the terminal record, or null on timeout / abort / close. */
  wait(taskId: string, options: WaitOptions = {}): Promise<TaskRecord | null> {
    if (this.#isClosed) return Promise.resolve(null);
    const early = this.#early.get(taskId);
    if (early !== undefined) {
      this.#early.delete(taskId);
      if (performance.now() - early.at <= this.#earlyMaxAgeMs) return Promise.resolve(early.record);
    }
    // From now on the waiter receives the record. An id published here while the subscription
    // was live, whose record has not arrived, needs no first read: its notification is still to
    // come (a dropped subscriber forgets every expected id).
    const isAnnounced = this.#expected.delete(taskId) && this.#isLive;
    if (!this.#isSubscribed) return this.#subscribeThenWait(taskId, options);
    return this.#waiter.wait(taskId, options, isAnnounced);
  }

  /**
   * Subscribes before the first read of the record, so no notification falls in between.
   * Bounded: with Redis unreachable the wait goes on with the poll fallback alone.
   */
  async #subscribeThenWait(taskId: string, options: WaitOptions): Promise<TaskRecord | null> {
    const startedAt = performance.now();
    const subscribing = this.#subscribe();
    // At most SUBSCRIBE_WAIT_MS from the subscription's start, and not past the wait's own
    // timeout or abort: a subscription pending longer (Redis away) is not waited for again,
    // so waits do not each pay that second, nor each hold a reaction on its promise.
    const limit = Math.min(
      SUBSCRIBE_WAIT_MS - (startedAt - this.#subscribeStartedAt),
      options.timeoutMs ?? Number.POSITIVE_INFINITY,
    );
    if (limit > 0) await settlesWithin(subscribing, limit, options.signal);
    // The wait's time counts from the call, subscribing included.
    const { timeoutMs } = options;
    if (timeoutMs === undefined) return this.#waiter.wait(taskId, options);
    return this.#waiter.wait(taskId, {
      ...options,
      timeoutMs: Math.max(0, timeoutMs - (performance.now() - startedAt)),
    });
  }

  /**
   * `taskId` is about to be published by this process: when its record is announced before
   * anyone here waits for it, keep the record (bounded, see {@link MAX_EARLY}) so the wait that
   * follows needs no read; when it has not arrived yet, the wait needs no first read either.
   * Only while the subscription is live (it opens with this process's first wait): a producer
   * that never calls `get()` never subscribes.
   */
  expect(taskId: string): void {
    if (this.#isClosed || !this.#isLive) return;
    if (this.#expected.size >= MAX_EXPECTED) this.#expected.delete(this.#expected.values().next().value as string);
    this.#expected.add(taskId);
  }

  /** Drops what is kept for `taskId` (its record was deleted). */
  forget(taskId: string): void {
    this.#expected.delete(taskId);
    this.#early.delete(taskId);
  }

  /** A record written by this process: resolve local waiters at once. */
  notify(record: TaskRecord): void {
    this.#waiter.notify(record);
  }

  /** Resolves waiters with null and closes the subscriber. */
  async close(): Promise<void> {
    this.#isClosed = true;
    this.#waiter.close();
    this.#expected.clear();
    this.#early.clear();
    clearTimeout(this.#earlySweep);
    this.#earlySweep = undefined;
    if (this.#flush) clearImmediate(this.#flush);
    clearInterval(this.#pingTimer);
    clearTimeout(this.#resubscribeTimer);
    // At once, not after the subscription: with Redis unreachable the SUBSCRIBE waits for it
    // (closing the connection ends that wait). A connection still opening is closed by
    // #openSubscriber, which sees #isClosed.
    if (this.#sub) dropRedis(this.#sub);
    this.#sub = undefined;
    const opening = this.#subscriber;
    this.#subscriber = undefined;
    if (opening) await settlesWithin(opening, CLOSE_WAIT_MS);
  }

  #subscribe(): Promise<RedisClientLike | undefined> {
    if (this.#subscriber === undefined && performance.now() < this.#retrySubscribeAtMs) {
      return Promise.resolve(undefined); // polling meanwhile (see NOPERM_RETRY_MS)
    }
    if (this.#subscriber === undefined) this.#subscribeStartedAt = performance.now();
    this.#subscriber ??= this.#openSubscriber().catch((error: unknown) => {
      // No push notifications: the poll fallback still resolves waiters. Try again later.
      if (!this.#isClosed) this.#host.onError(error, "subscribing failed (waiters poll meanwhile)");
      this.#subscriber = undefined;
      this.#isSubscribed = false;
      this.#retrySubscribeAtMs = performance.now() + (isNoPermError(error) ? NOPERM_RETRY_MS : FAILED_RETRY_MS);
      return undefined;
    });
    return this.#subscriber;
  }

  async #openSubscriber(): Promise<RedisClientLike> {
    const sub = await openDuplicate(this.#host.main, {
      enableAutoPipelining: false,
      enableOfflineQueue: true,
      autoResubscribe: false, // (see the "ready" listener below)
      // e.g. chicory-results-chicory:done:0 (CLIENT LIST tells the apps of one server apart)
      connectionName: `chicory-results-${this.#host.channel}`.replace(/[^A-Za-z0-9._:-]/g, "_").slice(0, 100),
    });
    sub.on("message", (_channel: string, message: string) => this.#onMessage(message));
    // While the subscriber is down, waiters poll at their own interval, and the ids published
    // meanwhile lose their announcement (it may be missed). The records kept go too: the
    // deletion of one announced meanwhile (a DLQ replay) would be missed and a later wait given
    // the old outcome; without them, a wait reads the record.
    sub.on("close", () => {
      this.#isLive = false;
      this.#expected.clear();
      this.#early.clear();
      this.#waiter.setPushActive(false);
    });
    // After a reconnect this SUBSCRIBE (ioredis's own re-subscribe is off: it sends one whose
    // refusal, e.g. NOPERM once the user lost the channel, nobody handles, and the process
    // would end on that unhandled rejection): once answered, notifications flow again and
    // every waited id is read once. Refused, waiters poll meanwhile (see #subscribeAgain).
    sub.on("ready", () => this.#subscribeAgain(sub));
    this.#sub = sub;
    if (this.#isClosed) dropRedis(sub);
    try {
      await sub.subscribe(this.#host.channel);
    } catch (error) {
      // e.g. NOPERM (an ACL user without rights on the channel): this connection is of no use
      dropRedis(sub);
      if (this.#sub === sub) this.#sub = undefined;
      throw error;
    }
    this.#isSubscribed = true;
    this.#onLive();
    clearInterval(this.#pingTimer);
    this.#pingTimer = setInterval(() => this.#checkSubscriber(sub), SUBSCRIBER_PING_MS);
    this.#pingTimer.unref();
    return sub;
  }

  /**
   * Subscribes `sub` again after it reconnected. Refused with NOPERM (the user lost the
   * channel), tried again after {@link NOPERM_RETRY_MS} while the connection stays up; any other
   * failure waits for the next reconnect. Nothing is reported once the hub is closed (a
   * `disconnect()` during the SUBSCRIBE ends it).
   */
  #subscribeAgain(sub: RedisClientLike): void {
    clearTimeout(this.#resubscribeTimer);
    this.#resubscribeTimer = undefined;
    if (this.#isClosed || this.#sub !== sub) return;
    sub.subscribe(this.#host.channel).then(
      () => this.#onLive(),
      (error: unknown) => {
        if (this.#isClosed || this.#sub !== sub) return;
        this.#host.onError(error, "subscribing again after a reconnect failed (waiters poll meanwhile)");
        if (!isNoPermError(error)) return;
        this.#resubscribeTimer = setTimeout(() => {
          if (sub.status === "ready") this.#subscribeAgain(sub);
        }, NOPERM_RETRY_MS);
        this.#resubscribeTimer.unref();
      },
    );
  }

  /** A subscriber that does not answer a PING in time is dropped and reconnected (see above). */
  #checkSubscriber(sub: RedisClientLike): void {
    if (this.#isPinging || this.#isClosed || this.#sub !== sub || sub.status !== "ready") return;
    this.#isPinging = true;
    const answered = sub.call("PING").then(
      () => undefined,
      () => undefined, // an error reply is an answer too
    );
    void settlesWithin(answered, SUBSCRIBER_PING_TIMEOUT_MS).then((isAnswered) => {
      this.#isPinging = false;
      if (isAnswered || this.#isClosed || this.#sub !== sub) return;
      this.#host.onError(
        new Error(`no answer to a PING within ${SUBSCRIBER_PING_TIMEOUT_MS} ms`),
        "subscriber connection silent, reconnecting",
      );
      sub.disconnect(true);
    });
  }

  #onLive(): void {
    if (this.#isClosed) return;
    this.#isLive = true;
    this.#waiter.setPushActive(true);
  }

  #onMessage(message: string): void {
    // Every worker's finished tasks reach every subscriber: nothing to do unless someone waits
    // (or a kept record may be superseded; kept records expire, so this does not last).
    if (this.#early.size > 0) this.#dropExpiredEarly(performance.now());
    if (this.#waiter.size === 0 && this.#expected.size === 0 && this.#early.size === 0) return;
    // A batch is a JSON array holding, per finished task, its record or its id (a record too
    // large to inline); an older worker sends a plain id. A message that fails to parse is a
    // plain id (an id may itself start with "[").
    if (message.startsWith("[")) {
      const items = parseItems(message);
      if (items) {
        for (const item of items) {
          if (typeof item === "string") this.#onDone(item);
          else {
            const record = asRecord(item);
            if (record) this.#onRecord(record);
          }
        }
        return;
      }
    }
    this.#onDone(message);
  }

  #onRecord(record: TaskRecord): void {
    const taskId = record.taskId;
    if (this.#waiter.has(taskId)) {
      this.#waiter.notify(record);
      return;
    }
    const now = performance.now();
    if (this.#early.delete(taskId)) {
      // a newer record of a kept id (FAILURE then DEAD_LETTERED, a duplicate run) replaces it
      this.#early.set(taskId, { record, at: now });
      return;
    }
    if (!this.#expected.delete(taskId)) return;
    this.#dropExpiredEarly(now);
    this.#early.set(taskId, { record, at: now });
    this.#sweepEarlyLater();
  }

  /**
   * While records are kept, drops them as they expire: an idle producer (no more notifications)
   * would otherwise hold up to {@link MAX_EARLY} records for good.
   */
  #sweepEarlyLater(): void {
    if (this.#earlySweep !== undefined || this.#isClosed) return;
    const oldest = this.#early.values().next().value;
    if (oldest === undefined) return;
    const dueMs = Math.max(0, oldest.at + this.#earlyMaxAgeMs - performance.now()) + 100;
    this.#earlySweep = setTimeout(() => {
      this.#earlySweep = undefined;
      this.#dropExpiredEarly(performance.now());
      this.#sweepEarlyLater();
    }, dueMs);
    this.#earlySweep.unref();
  }

  /** Drops kept records past {@link EARLY_MAX_AGE_MS}, and the oldest beyond {@link MAX_EARLY}. */
  #dropExpiredEarly(now: number): void {
    for (const [id, early] of this.#early) {
      if (this.#early.size < MAX_EARLY && now - early.at <= this.#earlyMaxAgeMs) break;
      this.#early.delete(id);
    }
  }

  #onDone(taskId: string): void {
    if (!this.#waiter.has(taskId)) {
      // Announced without its record (too large to inline, or deleted by a DLQ replay): a
      // later wait reads the key, and a record kept from an earlier announcement is stale.
      this.#expected.delete(taskId);
      this.#early.delete(taskId);
      return;
    }
    this.#notified.add(taskId);
    this.#flush ??= setImmediate(() => {
      this.#flush = undefined;
      const ids = [...this.#notified];
      this.#notified.clear();
      this.#host.fetchMany(ids).then(
        (read) => this.#waiter.notifyRead(read),
        (error: unknown) => this.#host.onError(error),
      );
    });
  }
}

/** The items of a batch message, or null when `message` is not a JSON array. */
function parseItems(message: string): unknown[] | null {
  try {
    const parsed = safeJsonParse(message, RECORD_MAX_DEPTH + 1); // an array of records
    return Array.isArray(parsed) ? parsed : null;
  } catch {
    return null;
  }
}

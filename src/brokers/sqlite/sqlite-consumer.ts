/**
 * A pull consumer of the SQLite broker.
 *
 * Waking up: SQLite has no notifications across processes, so `fetch` polls, cheaply.
 * Each round reads `PRAGMA data_version` (a counter that changes when another connection
 * commits to the file; no table access) and looks for work only when it changed, when the
 * earliest known `available_at` (a delayed job or a lease end) has passed, when this process
 * published to one of its queues, or once a second as a safety net. Looking for work is one
 * indexed `MIN(available_at)` per queue, and only when a queue has a due row does the consumer
 * take the write lock to claim. The pause between rounds starts at `pollMinMs` after activity
 * and doubles up to `pollMaxMs` while idle, which bounds the pickup latency of a job published
 * by another process to about `pollMaxMs`.
 *
 * Leases: claimed rows are leased for `claimMinIdleMs`; while they are unsettled the consumer
 * renews them every third of that (one UPDATE for all of them) and refreshes its registration
 * in `chicory_consumers`, which it does every third of a lease even without jobs. The newest
 * registration is the file's pulse: when a consumer, before it claims or writes its own
 * registration, finds that nobody wrote one for more than half a lease, nobody could renew a
 * lease either (another connection held the write lock, every worker was stalled or stopped),
 * so for one lease from then a lease that ran out is reclaimed only if it ran out that quiet
 * time earlier (`chicory_meta` `stall_window`): live owners renew first, instead of seeing
 * their jobs taken and run twice. Queues are read in the order given (preference), each by
 * priority, then in the order rows became available (one priority) or were published (several).
 * @module
 */
import type { Logger } from "../../core/logger.js";
import { peekMessage, truncateError } from "../../core/message.js";
import { timerDelay } from "../../core/sleep.js";
import type { Consumer, Delivery } from "../broker.js";
import { isBusyError } from "./sqlite-database.js";
import { SqliteDelivery, type SqliteSettleAction } from "./sqlite-delivery.js";
import type { ResolvedSqliteBrokerOptions } from "./sqlite-options.js";
import type { ClaimedJob, DeliveryFence, SqliteStore, StallWindow } from "./sqlite-store.js";

/** What a consumer needs from its broker. */
export interface SqliteConsumerHost {
  /** The connected store; throws `BrokerConnectionError` when not connected. */
  store(): SqliteStore;
  /** The broker's options. */
  readonly options: ResolvedSqliteBrokerOptions;
  /** Wakes this process's consumers of `queue` (a job became ready here). */
  notify(queue: string): void;
  /** Forgets a closed consumer. */
  unregister(consumer: SqliteConsumer): void;
  /** Wraps a driver error into a `BrokerConnectionError`. */
  wrap(error: unknown, operation: string): Error;
}

/** Look for work at least this often even when nothing seems to have changed. */
const RECHECK_MS = 1000;
/** Consecutive SQLITE_BUSY claims tolerated before `fetch` reports the broker unreachable. */
const MAX_BUSY_CLAIMS = 3;

/** A {@link Consumer} of one or more queues of a SQLite broker. */
export class SqliteConsumer implements Consumer {
  /** The consumer id (`locked_by` of its leases). */
  readonly consumerId: string;
  /** Queues read, in order of preference. */
  readonly queues: readonly string[];
  readonly #host: SqliteConsumerHost;
  readonly #logger: Logger;
  readonly #inFlight = new Map<number, DeliveryFence>();
  /** In-flight deliveries whose lease was taken over (no longer renewed, warned once). */
  readonly #lostIds = new Set<number>();
  /** The unsettled deliveries by job id (told when their lease is found lost). */
  readonly #deliveries = new Map<number, SqliteDelivery>();
  readonly #waiters = new Set<() => void>();
  #renewTimer: NodeJS.Timeout | undefined;
  #isStarted = false;
  #isClosed = false;
  #wakeRequested = false;
  #seenVersion = -1;
  #nextDueAt = 0;
  #lastCheckAt = 0;
  #pollMs: number;

  /** @param logger where consuming problems are reported (default: the broker's logger) */
  constructor(host: SqliteConsumerHost, consumerId: string, queues: readonly string[], logger?: Logger) {
    this.#host = host;
    this.#logger = logger ?? host.options.logger;
    this.consumerId = consumerId;
    this.queues = [...queues];
    this.#pollMs = host.options.pollMinMs;
  }

  /** {@inheritDoc Consumer.isClosed} */
  get isClosed(): boolean {
    return this.#isClosed;
  }

  get inFlight(): number {
    return this.#inFlight.size;
  }

  async fetch(max: number, signal: AbortSignal): Promise<Delivery[]> {
    if (this.#isClosed || signal.aborted || max <= 0) return [];
    this.#start();
    const { pollMinMs, pollMaxMs, fetchMaxWaitMs } = this.#host.options;
    const deadline = Date.now() + fetchMaxWaitMs;
    let mustCheck = true;
    let busyClaims = 0;
    while (!this.#isClosed && !signal.aborted) {
      const store = this.#host.store();
      const now = Date.now();
      let version: number;
      try {
        version = store.dataVersion();
      } catch (error) {
        throw this.#host.wrap(error, "poll");
      }
      const isCheckDue = now >= this.#nextDueAt || now >= this.#lastCheckAt + RECHECK_MS;
      if (mustCheck || this.#wakeRequested || version !== this.#seenVersion || isCheckDue) {
        mustCheck = false;
        this.#wakeRequested = false;
        this.#seenVersion = version;
        this.#lastCheckAt = now;
        try {
          const jobs = this.#claim(store, max, now);
          busyClaims = 0;
          if (jobs.length > 0) {
            this.#pollMs = pollMinMs;
            return jobs.map((job) => this.#deliver(job));
          }
        } catch (error) {
          if (!isBusyError(error) || ++busyClaims > MAX_BUSY_CLAIMS) throw this.#host.wrap(error, "claim");
          mustCheck = true;
        }
      }
      if (now >= deadline) return [];
      const untilDue = Math.max(1, Math.min(this.#nextDueAt, this.#lastCheckAt + RECHECK_MS) - now);
      await this.#sleep(Math.min(this.#pollMs, untilDue, deadline - now), signal);
      this.#pollMs = Math.min(pollMaxMs, this.#pollMs * 2);
    }
    return [];
  }

  async close(): Promise<void> {
    if (this.#isClosed) return;
    this.#isClosed = true;
    clearInterval(this.#renewTimer);
    this.#wake();
    this.#host.unregister(this);
    try {
      this.#host.store().removeConsumer(this.consumerId);
    } catch {
      // disconnected already: the registration ages out and `cleanupStaleClients` removes it
    }
  }

  /** Wakes a waiting `fetch` when `queue` is one of this consumer's queues. */
  notify(queue: string): void {
    if (this.queues.includes(queue)) this.#wake();
  }

  #start(): void {
    if (this.#isStarted) return;
    this.#isStarted = true;
    try {
      const store = this.#host.store();
      store.transaction(() => {
        const now = Date.now();
        this.#stallWindow(store, now);
        store.touchConsumer(this.consumerId, this.queues, now, this.#host.options.claimMinIdleMs);
      });
    } catch (error) {
      this.#isStarted = false;
      throw this.#host.wrap(error, "register consumer");
    }
    const everyMs = Math.max(10, Math.floor(this.#host.options.claimMinIdleMs / 3));
    this.#renewTimer = setInterval(() => this.#renew(), timerDelay(everyMs));
    this.#renewTimer.unref();
  }

  /** Claims up to `max` due jobs over the queues in preference order, in one write transaction. */
  #claim(store: SqliteStore, max: number, now: number): ClaimedJob[] {
    let nextDueAt = Number.POSITIVE_INFINITY;
    const due: string[] = [];
    for (const queue of this.queues) {
      const at = store.nextAvailableAt(queue);
      if (at === null) continue;
      if (at <= now) due.push(queue);
      else nextDueAt = Math.min(nextDueAt, at);
    }
    this.#nextDueAt = nextDueAt;
    if (due.length === 0) return [];
    return store.transaction(() => {
      // The time once the write lock is held: a claim that waited for it sees that wait.
      const at = Math.max(now, Date.now());
      const window = this.#stallWindow(store, at);
      const reclaimCutoff = window === null ? at : at - window.quietMs;
      // Leases held back by the window are due again when it ends.
      if (window !== null) this.#nextDueAt = Math.min(this.#nextDueAt, window.until);
      const leaseEnd = at + this.#host.options.claimMinIdleMs;
      const jobs: ClaimedJob[] = [];
      for (const queue of due) {
        if (jobs.length >= max) break;
        jobs.push(...store.claim(queue, this.consumerId, max - jobs.length, at, reclaimCutoff, leaseEnd));
      }
      return jobs;
    });
  }

  /**
   * The file's stall window (see the module doc), opened here when nobody wrote a registration
   * for more than half the shortest lease registered; said once, by the consumer that opened it:
   * a warning when it holds back a job of this consumer's queues whose lease ran out, at debug
   * level otherwise (e.g. a start long after the last worker stopped). Call in a transaction.
   */
  #stallWindow(store: SqliteStore, now: number): StallWindow | null {
    const window = store.stallWindow(now, this.#host.options.claimMinIdleMs);
    if (window?.isNew) {
      const isHolding = store.heldBack(this.queues, now - window.quietMs, now);
      this.#logger[isHolding ? "warn" : "debug"](
        { consumerId: this.consumerId, quietMs: window.quietMs, untilMs: window.until },
        `sqlite broker: no consumer wrote to the database for ${(window.quietMs / 1000).toFixed(1)} s (another connection held its write lock, the clock stepped forward, or every worker was stalled or stopped); for the next ${((window.until - now) / 1000).toFixed(1)} s a lease that ran out is reclaimed only if it ran out that long ago, so that live workers renew theirs first`,
      );
    }
    return window;
  }

  #deliver(job: ClaimedJob): Delivery {
    const fence: DeliveryFence = { id: job.id, consumerId: this.consumerId, deliveryCount: job.delivery_count };
    this.#inFlight.set(job.id, fence);
    this.#lostIds.delete(job.id);
    const delivery = new SqliteDelivery(
      job,
      (action) => this.#settle(fence, job, action),
      () => this.#holds(fence),
    );
    this.#deliveries.set(job.id, delivery);
    return delivery;
  }

  /** True while `fence`'s row is still this delivery's (see {@link Delivery.holdsLease}). */
  #holds(fence: DeliveryFence): boolean {
    try {
      return this.#host.store().holds(fence);
    } catch (error) {
      throw this.#host.wrap(error, "holdsLease");
    }
  }

  /** Applies `action`; false when it was fenced (the lease was lost: nothing changed). */
  #settle(fence: DeliveryFence, job: ClaimedJob, action: SqliteSettleAction): boolean {
    const store = this.#host.store();
    const now = Date.now();
    let isApplied: boolean;
    try {
      switch (action.kind) {
        case "ack":
          isApplied = store.ack(fence);
          break;
        case "retry":
          isApplied = store.retry(fence, action.body, now + Math.max(0, Math.ceil(action.delayMs)), now);
          break;
        case "deadLetter":
          isApplied = store.deadLetter(fence, truncateError(action.error), retryCountOf(job.body), now);
          break;
        case "release":
          isApplied = store.release(fence, now, action.countDelivery);
          break;
      }
    } catch (error) {
      // A release is the last thing done with a delivery: when it fails, stop renewing the
      // lease so that it expires and the job is claimed again, rather than held for good.
      if (action.kind === "release") this.#forget(fence);
      throw this.#host.wrap(error, action.kind);
    }
    this.#forget(fence);
    if (!isApplied) {
      this.#logger.warn(
        { queue: job.queue, deliveryId: String(job.id), consumerId: this.consumerId, action: action.kind },
        `sqlite broker: ${action.kind} of delivery ${job.id} ignored: its lease expired and the job was taken over or settled elsewhere`,
      );
    } else if (action.kind === "release" || action.kind === "retry") {
      this.#host.notify(job.queue);
    }
    return isApplied;
  }

  /** Ends `fence`'s bookkeeping here (no more lease renewal). */
  #forget(fence: DeliveryFence): void {
    if (this.#inFlight.get(fence.id) === fence) {
      this.#inFlight.delete(fence.id);
      this.#lostIds.delete(fence.id);
      this.#deliveries.delete(fence.id);
    }
  }

  #renew(): void {
    const { claimMinIdleMs } = this.#host.options;
    const logger = this.#logger;
    try {
      const store = this.#host.store();
      const ids = [...this.#inFlight.keys()].filter((id) => !this.#lostIds.has(id));
      const renewed = store.transaction(() => {
        const now = Date.now();
        this.#stallWindow(store, now);
        const extended = store.renew(this.consumerId, ids, now + claimMinIdleMs);
        store.touchConsumer(this.consumerId, this.queues, now, claimMinIdleMs);
        return extended;
      });
      const lost = ids.filter((id) => !renewed.has(id));
      if (lost.length > 0) {
        for (const id of lost) {
          this.#lostIds.add(id);
          this.#deliveries.get(id)?.leaseLost();
        }
        logger.warn(
          { consumerId: this.consumerId, deliveryIds: lost.map(String) },
          "sqlite broker: leases of in-flight deliveries were lost (this consumer could not renew them within claimMinIdleMs: its process stalled, or the database stayed locked); their jobs may run twice",
        );
      }
    } catch (error) {
      logger.warn({ consumerId: this.consumerId, err: error }, "sqlite broker: lease renewal failed");
    }
  }

  #sleep(ms: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        this.#waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener("abort", done, { once: true });
      this.#waiters.add(done);
    });
  }

  #wake(): void {
    this.#wakeRequested = true;
    for (const waiter of [...this.#waiters]) waiter();
  }
}

/** The message's retry counter, read leniently (0 when the body is not a message). */
function retryCountOf(body: string): number {
  const retries = peekMessage(body)?.retries;
  return typeof retries === "number" && Number.isSafeInteger(retries) && retries >= 0 ? retries : 0;
}

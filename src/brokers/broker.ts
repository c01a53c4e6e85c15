/**
 * The Broker interface: how tasks travel from producers to workers.
 *
 * Semantics every implementation follows (checked by `test/contract/broker-contract.ts`):
 * - `publish` resolves only once the broker accepted the message (durably, as far as the
 *   broker's own persistence goes). Messages are opaque strings to a broker; the codec in
 *   `core/message.ts` owns their format.
 * - Delivery is at-least-once at the broker level: a delivery handed out by a
 *   {@link Consumer} stays owned by that consumer (its lease is renewed by the consumer
 *   itself while unsettled) until it is settled by `ack`, `retry`, `deadLetter` or
 *   `release`. A consumer that dies without settling loses its leases; the messages
 *   are redelivered to another consumer after `claimMinIdle` with `deliveryCount + 1`.
 * - Ordering: FIFO per queue among equal priorities where the broker can; not guaranteed
 *   across redeliveries, retries or priorities.
 * - The broker never interprets task semantics (retries, validation); the worker's
 *   `settle` table decides, the delivery only carries out the action.
 * - Connections are owned by the broker instance unless a ready client was injected,
 *   in which case the caller owns (and closes) it.
 * @module
 */
import type { Backend, TaskRecord } from "../backends/backend.js";
import type { Logger } from "../core/logger.js";
import type { MessageCodec, TaskMessage } from "../core/message.js";

/** Optional features of a broker; the worker and tests branch on these, never on `kind`. */
export interface BrokerCapabilities {
  /** Honors `priority` (higher first). */
  readonly priorities: boolean;
  /** Supports `delayMs` on publish (delayed delivery by the broker's clock). */
  readonly delayedDelivery: boolean;
  /** Supports `unique` publish (idempotent enqueue by task id). */
  readonly uniqueIds: boolean;
  /** Messages survive a restart of all processes (not `memory`). */
  readonly durable: boolean;
  /** Several processes can share the broker. */
  readonly multiProcess: boolean;
  /**
   * The DLQ operations on one queue (list, replay, delete) run one after the other within a
   * process (RabbitMQ: each reads the DLQ on a channel of its own): calling them concurrently
   * gains nothing, and queues each behind the one before. Absent: false.
   */
  readonly serialDlq?: boolean;
}

/** A message to publish. */
export interface OutgoingMessage {
  /** Task id (also used for idempotent enqueue and as the delayed-set member). */
  readonly id: string;
  /** Encoded message (see `MessageCodec`). */
  readonly body: string;
  /** Delay before the message becomes visible, in milliseconds, measured by the broker's clock. */
  readonly delayMs?: number | undefined;
  /** Priority 0-255 (higher first) when the broker supports priorities. */
  readonly priority?: number | null | undefined;
  /**
   * Idempotent enqueue: when a message with this id is already queued, delayed or in
   * flight (not yet acknowledged / dead-lettered), do not enqueue a second one.
   */
  readonly unique?: boolean | undefined;
}

/** Outcome of {@link Broker.publish}. */
export interface PublishResult {
  /** False when `unique` was set and the id already existed (nothing was published). */
  readonly published: boolean;
}

/** Options of {@link Delivery.ack}. */
export interface AckOptions {
  /**
   * Resolve only once the broker has processed the acknowledgement, so the message is not
   * redelivered even if this process dies right after; reject when that is not certain (the
   * caller then treats the message as not acknowledged and does not run it). The worker sets it
   * for `at_most_once` tasks, which are acknowledged before they run. Where the ack is a request
   * with a reply (Redis, SQLite, memory) it resolves once applied anyway; RabbitMQ's `basic.ack`
   * has no reply and needs this option. On Redis and SQLite a confirmed ack rejects when it was
   * fenced (the lease ran out and another consumer took the message), so a worker that stalled
   * past its lease does not run an at-most-once task that another worker now holds.
   */
  readonly confirm?: boolean;
}

/** Who holds a delivered message now (see {@link Delivery.leaseState}). */
export type LeaseState = "held" | "taken" | "ownerless";

/**
 * One message handed to a worker. It knows how to settle itself; exactly one settle
 * call takes effect, later ones are no-ops.
 */
export interface Delivery {
  /** Queue the message was consumed from. */
  readonly queue: string;
  /** Broker-side id of this delivery (stream entry id, row id, delivery tag...). */
  readonly deliveryId: string;
  /** Raw message body as published. */
  readonly body: string;
  /**
   * Why the broker found the message malformed before its body was read (`<reason>: <text>`,
   * e.g. a Redis stream entry with two `data` fields, an AMQP message with an empty body or one
   * that is not UTF-8): the worker rejects it with this error (to the dead-letter queue when
   * enabled, else acknowledged and logged) instead of running it.
   */
  readonly problem?: string | undefined;
  /** How many times the broker handed this message out, counting this one (>= 1). */
  readonly deliveryCount: number;
  /**
   * An identity of the message that stays the same each time the broker hands it out again and
   * differs from every other message's, including a retry's or a replay's of the same task:
   * Redis, the queue and the stream entry id; SQLite, the row id; RabbitMQ, the random
   * `x-chicory-publish-id` header set at publish (none for a message published without it);
   * memory, its sequence number. A worker whose
   * run of a message succeeded knows that message again by it (a delivery of it again is
   * acknowledged without a run). Brokers that cannot tell omit it.
   */
  readonly messageKey?: string | undefined;
  /** Done with the message: remove it from the queue for good. */
  ack(options?: AckOptions): Promise<void>;
  /**
   * Writes `record` (a terminal task record) to the result backend attached with
   * {@link Broker.attachResults}, then acks, in one atomic call: when the write fails nothing is
   * acknowledged. Only on deliveries of a consumer created after `attachResults` returned true.
   * A broker may write a record too long for one call its own way (the Redis broker: the lease
   * checked, the record written in pieces, then the ack), never acking before it is written.
   */
  ackWithRecord?(record: TaskRecord): Promise<void>;
  /**
   * Replace this message by `body` on the same queue, visible after `delayMs`, and remove
   * this one; atomic where the broker allows it (never both lost, at worst both kept).
   */
  retry(body: string, delayMs: number): Promise<void>;
  /**
   * Registers `listener`, called at most once when the broker finds, while this delivery is
   * unsettled, that this consumer no longer holds the message: `taken` (its lease ran out, e.g.
   * the process stalled, and another consumer took it: the worker then aborts the running task's
   * `ctx.signal` and leaves the message to its new owner) or `ownerless` (see
   * {@link Delivery.leaseState}: the worker aborts the task only when it already has a final
   * record, finished by a consumer that took it over). Brokers without leases omit it.
   */
  onLeaseLost?(listener: (reason: Exclude<LeaseState, "held">) => void): void;
  /**
   * Resolves false when this consumer no longer holds the message: its lease ran out and
   * another consumer may have taken it (and stored its own result). The worker asks before it
   * writes a task record that the broker does not fence itself (a result backend on another
   * server, a dead-letter record) and writes nothing when the answer is false. A broker may
   * answer from its last lease renewal while that is recent enough; RabbitMQ answers whether
   * the channel that delivered the message is still open. Brokers without either omit it.
   */
  holdsLease?(): Promise<boolean>;
  /**
   * {@link Delivery.holdsLease} that tells two cases of "not held" apart: `taken` (another
   * consumer holds the message, or will be handed it, and stores its own outcome) and
   * `ownerless` (no consumer holds it and none will run it again: on Redis, an entry that left
   * the stream, lost in a restart without persistence or settled by a consumer that reclaimed it).
   * The worker stores an ownerless delivery's outcome unless the task already has a final record.
   * Brokers that cannot tell omit it (`holdsLease` false then means `taken`).
   */
  leaseState?(): Promise<LeaseState>;
  /**
   * Marks the message as unverified (with signing on, it failed to decode or verify): the task
   * id it claims is not to be trusted, so settling it leaves that id's state alone (Redis: the
   * id's unique marker, which a genuine message of that id may hold). Call before settling.
   */
  markUntrusted?(): void;
  /**
   * The worker decoded (and, with signing on, verified) the message: its task id is `taskId`.
   * A delivery whose broker-side record names another id (Redis: the entry's `id` field, which
   * no signature covers) settles it under `taskId` and as untrusted, leaving the other id's state
   * alone. Call before settling.
   */
  decodedTaskId?(taskId: string): void;
  /** Move the message to its queue's dead-letter queue with a reason, and remove it here. */
  deadLetter(error: string): Promise<void>;
  /**
   * Writes `record` (the task's DEAD_LETTERED record) to the result backend attached with
   * {@link Broker.attachResults} and moves the message to the DLQ, in one atomic call. The
   * record is written only when the move happens: not when this consumer no longer holds the
   * message, nor when the DLQ is full (the call then rejects and nothing changed). Only on
   * deliveries of a consumer created after `attachResults` returned true.
   */
  deadLetterWithRecord?(error: string, record: TaskRecord): Promise<void>;
  /**
   * For a delivery acknowledged before its run (`at_most_once`): appends its message to its
   * queue's DLQ and writes `record` (the task's DEAD_LETTERED record) to the result backend
   * attached with {@link Broker.attachResults}, in one atomic call: both or neither (a worker
   * that dies between two calls would leave a DLQ entry whose record never says so). Rejects,
   * writing nothing, when the DLQ is full. Only on deliveries of a consumer created after
   * `attachResults` returned true.
   */
  writeDeadLetterWithRecord?(error: string, record: TaskRecord): Promise<void>;
  /**
   * Give the message back: visible to other consumers at once. By default without counting a
   * delivery where the broker can avoid it (a worker shutting down gives back what it fetched
   * and did not start); with `countDelivery`, the delivery counts towards `maxDeliveries`
   * (the task ran, but settling its outcome failed: a message that keeps failing that way ends
   * as poison instead of running forever).
   */
  release(options?: ReleaseOptions): Promise<void>;
}

/** Options of {@link Delivery.release}. */
export interface ReleaseOptions {
  /** Count this delivery (default false; RabbitMQ always counts one). */
  readonly countDelivery?: boolean;
}

/** Options of {@link Broker.consumer}. */
export interface ConsumerOptions {
  /** Queues to read, in order of preference. */
  readonly queues: readonly string[];
  /** Stable id of this consumer (the worker id). */
  readonly consumerId: string;
  /**
   * How many deliveries the caller can have in hand at once (the worker's concurrency). Brokers
   * that push messages (RabbitMQ) size their prefetch from it unless configured explicitly.
   */
  readonly capacity?: number | undefined;
  /**
   * Where the consumer reports what goes wrong while consuming (failed renewals, fenced
   * settles, a lost group): the worker passes its own logger. Default: the broker's logger.
   */
  readonly logger?: Logger | undefined;
}

/**
 * A pull-based consumer. The worker asks for at most as many messages as it has free
 * slots, which bounds prefetch. The consumer renews the leases of the deliveries it handed
 * out until they are settled, and reclaims messages whose lease expired (dead consumers).
 */
export interface Consumer {
  /**
   * Waits until at least one message is available (or `signal` aborts, or an internal wait
   * bound passes) and returns at most `max` deliveries; `[]` when none arrived.
   * Never throws on abort; throws {@link BrokerConnectionError} when the broker is
   * unreachable (the caller backs off and calls again).
   */
  fetch(max: number, signal: AbortSignal): Promise<Delivery[]>;
  /** Number of deliveries handed out and not yet settled. */
  readonly inFlight: number;
  /**
   * Optional. True once the consumer is closed, by `close()` or by the broker's `disconnect()`:
   * its `fetch` returns no message ever again (a worker whose app was disconnected under it
   * stops instead of fetching in a loop).
   */
  readonly isClosed?: boolean;
  /**
   * Optional. The caller will fetch no more for now (a worker that stops and lets its running
   * jobs finish): take no new messages and give back at once those held and not handed out.
   * Deliveries in hand can still be settled; a later `fetch` starts taking messages again.
   */
  stopFetching?(): void;
  /**
   * Stops lease renewal and background work of this consumer. Unsettled deliveries keep
   * their lease until it expires (they are redelivered after `claimMinIdle`).
   */
  close(): Promise<void>;
}

/** A dead-lettered message as returned by {@link BrokerAdmin.getDlqMessages}. */
export interface DlqMessage {
  /** Id of the DLQ entry (pass to `replayFromDlq` / `deleteFromDlq`). */
  readonly messageId: string;
  /** The task message, read without verification; null when the body is not a message. */
  readonly originalMessage: Partial<TaskMessage> | null;
  /** The raw body as it was dead-lettered. */
  readonly body: string;
  /** When it was dead-lettered. */
  readonly failedAt: Date;
  /** Why it was dead-lettered. */
  readonly error: string;
  /** The message's retry counter when it was dead-lettered. */
  readonly retryCount: number;
}

/** Connectivity of a broker or backend. */
export interface HealthStatus {
  /** True when a round trip succeeded. */
  readonly connected: boolean;
  /** Why it failed (passwords masked). */
  readonly error?: string | undefined;
  /** Measured round trip in milliseconds, when connected. */
  readonly latencyMs?: number | undefined;
}

/** Inspection and administration of queues and dead letters (SPEC §7). */
export interface BrokerAdmin {
  /** Up to `count` (default 100) oldest entries of `queue`'s DLQ. */
  getDlqMessages(queue?: string, count?: number): Promise<DlqMessage[]>;
  /**
   * Up to `count` (default 100) oldest entries of `queue`'s DLQ that came after entry
   * `afterMessageId` (a `messageId` this broker gave; the entry itself need not exist any more):
   * pages through a DLQ without reading its first entries again. Brokers whose DLQ entries are
   * ordered by id (Redis, SQLite, memory); without it, callers read from the start.
   */
  getDlqMessagesAfter?(afterMessageId: string, queue?: string, count?: number): Promise<DlqMessage[]>;
  /**
   * Moves one DLQ entry back to `queue` (default: the queue it died on). A broker with one DLQ
   * per queue (Redis) looks for the entry in `queue`'s DLQ only, and replays it there: `queue`
   * defaults to `"default"` and must name the queue the entry died on. Idempotent per entry:
   * replaying an entry twice (even concurrently) enqueues it once. Returns false when the
   * entry does not exist (already replayed or deleted).
   * @param resetRetries set the message's `retries` to 0 (default true)
   */
  replayFromDlq(messageId: string, queue?: string, resetRetries?: boolean): Promise<boolean>;
  /** Deletes one DLQ entry; false when it did not exist. */
  deleteFromDlq(messageId: string, queue?: string): Promise<boolean>;
  /**
   * Whether `queue`'s DLQ holds entry `messageId`, without reading the others (brokers that
   * can look an entry up by id). Without it, callers list the DLQ.
   */
  hasDlqEntry?(messageId: string, queue?: string): Promise<boolean>;
  /** Deletes every DLQ entry of `queue`; returns how many. */
  purgeDlq(queue?: string): Promise<number>;
  /** Number of DLQ entries of `queue`. */
  getDlqCount(queue?: string): Promise<number>;
  /** Messages delivered to a consumer and not yet settled. */
  getPendingCount(queue?: string): Promise<number>;
  /** Messages waiting to be delivered (ready now or delayed), excluding pending ones. */
  getQueueSize(queue?: string): Promise<number>;
  /** Consumers currently registered on `queue`. */
  getConsumerCount(queue?: string): Promise<number>;
  /** Deletes every waiting (ready and delayed) message of `queue`; returns how many. */
  purgeQueue(queue?: string): Promise<number>;
  /**
   * Removes consumers idle longer than `staleSeconds` that own no pending messages,
   * atomically (a consumer that reads between check and delete is never removed).
   * Returns how many were removed. A no-op returning 0 where the broker does this itself.
   */
  cleanupStaleClients(queue?: string, staleSeconds?: number): Promise<number>;
  /** Round trip to the broker. Never throws. */
  healthcheck(): Promise<HealthStatus>;
}

/**
 * Runs the move of one DLQ replay (`move` re-enqueues the entry and removes it from the DLQ,
 * resolving false when the entry was gone) for the task `taskId` (undefined when the entry's
 * body names none), and resolves with what `move` resolved. The app uses it to clear the
 * task's stored failure, so that a `get()` after the replay waits for the new run.
 */
export type DlqReplayGuard = (taskId: string | undefined, move: () => Promise<boolean>) => Promise<boolean>;

/** What the app hands a broker before connecting. */
export interface BrokerBinding {
  /** The app's codec, used to rewrite messages (DLQ replay with `resetRetries`). */
  readonly codec: MessageCodec;
  /** Wraps the move of every `replayFromDlq` (see {@link DlqReplayGuard}). */
  readonly guardReplay?: DlqReplayGuard | undefined;
}

/** A broker: data plane plus administration (both reachable from `app.broker`). */
export interface Broker extends BrokerAdmin {
  /** Short kind name (`"memory"`, `"redis"`, ...). */
  readonly kind: string;
  /** Optional features. */
  readonly capabilities: BrokerCapabilities;
  /** Display form of the connection URL with the password masked. */
  readonly displayUrl: string;
  /**
   * The settings beside the URL that decide which queues this broker reaches (e.g. a key
   * prefix), as the worker's banner shows them: two processes with the same URL but different
   * settings do not share jobs. Absent when the URL says it all.
   */
  readonly displaySettings?: string | undefined;
  /** Called by the app once, before `connect`. */
  bind(binding: BrokerBinding): void;
  /**
   * Opens connections; idempotent. Called while a `disconnect()` is under way, opens once
   * that is done. May reject when a `disconnect()` made after the call overtakes it (the
   * Redis, RabbitMQ and SQLite brokers do: that disconnect closes what it opened).
   */
  connect(): Promise<void>;
  /** Closes connections the broker owns; idempotent. */
  disconnect(): Promise<void>;
  /** Publishes one message to `queue`. */
  publish(queue: string, message: OutgoingMessage): Promise<PublishResult>;
  /** Creates a consumer of the given queues. */
  consumer(options: ConsumerOptions): Consumer;
  /**
   * Checks, once the broker is connected, that its server lets this user work on `queues`
   * (e.g. Redis ACL rights). A worker calls it at start and does not start when it throws.
   * @throws ConfigurationError when the server refuses access; other failures (server away)
   *   are not thrown
   */
  checkAccess?(queues: readonly string[]): Promise<void>;
  /**
   * Offers to write `backend`'s terminal records in the same call as the acks of their
   * deliveries (one round trip per settled batch instead of two). Returns true when this broker
   * can, e.g. the Redis broker with a Redis backend on the same server, database and user;
   * consumers created afterwards hand out deliveries with {@link Delivery.ackWithRecord} and
   * {@link Delivery.deadLetterWithRecord}.
   * Call after both are connected.
   */
  attachResults?(backend: Backend): boolean;
  /**
   * Writes a message straight into `queue`'s DLQ (for messages already acknowledged, e.g. an
   * `at_most_once` task that failed).
   */
  writeDeadLetter(queue: string, body: string, error: string): Promise<void>;
}

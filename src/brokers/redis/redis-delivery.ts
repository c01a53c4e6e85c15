/**
 * One message handed out by a {@link RedisConsumer}. Settling runs one Lua script on the
 * broker's command connection; exactly one settle takes effect (later calls are no-ops).
 * @module
 */
import type { TaskRecord } from "../../backends/backend.js";
import { peekMessage } from "../../core/message.js";
import type { AckOptions, Delivery, LeaseState, ReleaseOptions } from "../broker.js";
import { LeaseLostListener } from "../lease-lost.js";
import type { QueueKeys } from "./redis-keys.js";

/** What a delivery asks of its consumer to settle itself. */
export interface DeliverySettler {
  ack(delivery: RedisDelivery, confirm?: boolean, record?: TaskRecord): Promise<void>;
  retry(delivery: RedisDelivery, body: string, delayMs: number): Promise<void>;
  deadLetter(delivery: RedisDelivery, error: string, record?: TaskRecord): Promise<void>;
  writeDeadLetter(delivery: RedisDelivery, error: string, record: TaskRecord): Promise<void>;
  release(delivery: RedisDelivery, countDelivery?: boolean): Promise<void>;
  leaseState(delivery: RedisDelivery): Promise<LeaseState>;
}

/** A stream entry delivered to this consumer. */
export class RedisDelivery implements Delivery {
  /** Queue the message was consumed from. */
  readonly queue: string;
  /** Stream entry id. */
  readonly deliveryId: string;
  /** Raw body (field `data`). */
  readonly body: string;
  /** {@inheritDoc Delivery.problem} */
  get problem(): string | undefined {
    return this.#problem;
  }
  /** Deliveries of this entry to the group, counting this one. */
  readonly deliveryCount: number;
  /** Keys of the queue. */
  readonly keys: QueueKeys;
  readonly #settler: DeliverySettler;
  #problem: string | undefined;
  #taskId: string | undefined;
  /** True when {@link taskId} fell back to the entry id. */
  #taskIdIsEntryId = false;
  readonly #leaseLost = new LeaseLostListener();
  #isSettled = false;
  #isLeaseLost = false;
  #isEntryGone = false;
  #isUntrusted = false;
  /**
   * When this consumer last knew it held the entry (`awakeNow()`: a clock that never goes back
   * and counts the host's suspended time, as Redis's idle time does): when the read or claim
   * that handed it out was sent, or when a renewal that confirmed it was sent. Redis counts the
   * entry's idle time from a moment no earlier.
   */
  leaseConfirmedAtMs: number;
  /**
   * True while its settle writes a record in pieces before the ack (a record over 512 KiB):
   * its lease is renewed meanwhile, as while it ran, so that a slow write does not let another
   * worker take the entry and run it again.
   */
  isWritingRecord = false;

  /** @param leaseFromMs when the read or claim that returned the entry was sent */
  constructor(
    keys: QueueKeys,
    entryId: string,
    fields: readonly string[],
    deliveryCount: number,
    settler: DeliverySettler,
    leaseFromMs: number,
  ) {
    this.leaseConfirmedAtMs = leaseFromMs;
    this.keys = keys;
    this.queue = keys.queue;
    this.deliveryId = entryId;
    this.deliveryCount = deliveryCount;
    this.#settler = settler;
    let body: string | undefined;
    let bodies: string[] | undefined; // an entry written by hand with several `data` fields
    for (let i = 0; i + 1 < fields.length; i += 2) {
      if (fields[i] === "data") {
        const data = fields[i + 1] as string;
        if (body === undefined) body = data;
        else if (bodies === undefined) bodies = [body, data];
        else bodies.push(data);
      } else if (fields[i] === "id") this.#taskId = fields[i + 1];
    }
    // Which one is the message is not known: none runs, and the dead letter holds them all as a
    // JSON array, which is no message either (a replay of it is refused).
    this.body = bodies === undefined ? (body ?? "") : JSON.stringify(bodies);
    this.#problem =
      bodies === undefined ? undefined : `decode_error: the stream entry has ${bodies.length} \`data\` fields`;
  }

  /**
   * True when the body (or the `id` field) holds U+FFFD, which the client puts in place of bytes
   * that are not UTF-8: the consumer then reads the entry's bytes to tell (see
   * {@link RedisDelivery.refuseAsNotUtf8}). A message may hold U+FFFD of its own.
   */
  get mayHoldReplacedBytes(): boolean {
    return this.body.includes("\uFFFD") || (this.#taskId?.includes("\uFFFD") ?? false);
  }

  /**
   * The entry's bytes are not UTF-8 in `field`: read as text, they were altered (each invalid
   * sequence became U+FFFD), so the message is not run as read; it is rejected (dead-lettered
   * as the text read) and, its task id not known for sure, settles nothing of the id it claims.
   * Before the worker sees the delivery.
   */
  refuseAsNotUtf8(field: string): void {
    this.#problem ??= `decode_error: the stream entry's \`${field}\` field is not valid UTF-8 (kept as read, each invalid byte sequence replaced by U+FFFD)`;
    this.#isUntrusted = true;
  }

  /** {@inheritDoc Delivery.messageKey} (the queue and the entry id) */
  get messageKey(): string {
    return `${this.queue}:${this.deliveryId}`;
  }

  /** Task id: the entry's `id` field, else the body's `id`, else the entry id. */
  get taskId(): string {
    if (this.#taskId === undefined) {
      const id = peekMessage(this.body)?.id;
      this.#taskIdIsEntryId = !(typeof id === "string" && id.length > 0);
      this.#taskId = this.#taskIdIsEntryId ? this.deliveryId : (id as string);
    }
    return this.#taskId;
  }

  /**
   * The task id when the entry or its message names one; undefined when {@link taskId} falls back
   * to the entry id (a body that cannot be read and no `id` field): that is no task's id.
   */
  get knownTaskId(): string | undefined {
    const id = this.taskId; // (reads the body's id first, when needed)
    return this.#taskIdIsEntryId ? undefined : id;
  }

  /** {@inheritDoc Delivery.decodedTaskId} */
  decodedTaskId(taskId: string): void {
    // An `id` field that is not the message's own (written by someone with Redis access next to
    // a copied body) must not release that id's unique marker or take its delayed slot.
    if (this.#taskId !== undefined && this.#taskId !== taskId) this.#isUntrusted = true;
    this.#taskId = taskId;
    this.#taskIdIsEntryId = false;
  }

  /** {@inheritDoc Delivery.markUntrusted} */
  markUntrusted(): void {
    this.#isUntrusted = true;
  }

  /** True once {@link RedisDelivery.markUntrusted} was called. */
  get isUntrusted(): boolean {
    return this.#isUntrusted;
  }

  /** True once a settle call succeeded (or is in progress). */
  get isSettled(): boolean {
    return this.#isSettled;
  }

  /** {@inheritDoc Delivery.onLeaseLost} */
  onLeaseLost(listener: (reason: Exclude<LeaseState, "held">) => void): void {
    this.#leaseLost.set(listener);
  }

  /** True once a lease renewal found the entry owned by someone else (or settled). */
  get isLeaseLost(): boolean {
    return this.#isLeaseLost;
  }

  /** Called by the consumer when a lease renewal found the entry owned by someone else. */
  leaseLost(): void {
    this.#isLeaseLost = true;
    this.#leaseLost.fire(this.#isSettled);
  }

  /**
   * True once a lease renewal found the entry held by no consumer and gone from the stream
   * while it ran here ({@link RedisDelivery.entryGone}).
   */
  get isEntryGone(): boolean {
    return this.#isEntryGone;
  }

  /**
   * Called by the consumer when a lease renewal found the entry, while it ran here, held by no
   * consumer and gone from the stream (settled by a consumer that had reclaimed it, or lost in a
   * Redis restart without persistence): the run goes on unless the task already has a final
   * record (the lease-lost listener hears `ownerless`), and {@link RedisDelivery.leaseState}
   * says `ownerless`.
   */
  entryGone(): void {
    this.#isEntryGone = true;
    this.#leaseLost.fire(this.#isSettled, "ownerless");
  }

  /** {@inheritDoc Delivery.holdsLease} */
  async holdsLease(): Promise<boolean> {
    return (await this.#settler.leaseState(this)) === "held";
  }

  /** {@inheritDoc Delivery.leaseState} */
  leaseState(): Promise<LeaseState> {
    return this.#settler.leaseState(this);
  }

  ack(options?: AckOptions): Promise<void> {
    return this.#settle(() => this.#settler.ack(this, options?.confirm === true));
  }

  /** {@inheritDoc Delivery.ackWithRecord} */
  ackWithRecord(record: TaskRecord): Promise<void> {
    return this.#settle(() => this.#settler.ack(this, false, record));
  }

  retry(body: string, delayMs: number): Promise<void> {
    return this.#settle(() => this.#settler.retry(this, body, delayMs));
  }

  deadLetter(error: string): Promise<void> {
    return this.#settle(() => this.#settler.deadLetter(this, error));
  }

  /** {@inheritDoc Delivery.deadLetterWithRecord} */
  deadLetterWithRecord(error: string, record: TaskRecord): Promise<void> {
    return this.#settle(() => this.#settler.deadLetter(this, error, record));
  }

  /** {@inheritDoc Delivery.writeDeadLetterWithRecord} */
  writeDeadLetterWithRecord(error: string, record: TaskRecord): Promise<void> {
    // (acknowledged already: not a settle of the entry, which is gone)
    return this.#settler.writeDeadLetter(this, error, record);
  }

  release(options?: ReleaseOptions): Promise<void> {
    return this.#settle(() => this.#settler.release(this, options?.countDelivery === true));
  }

  async #settle(action: () => Promise<void>): Promise<void> {
    if (this.#isSettled) return;
    this.#isSettled = true;
    try {
      await action();
    } catch (error) {
      // Not settled after all: the caller may try another settle (e.g. ack after a failed dead-letter).
      this.#isSettled = false;
      throw error;
    }
  }
}

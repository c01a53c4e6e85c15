/**
 * A RabbitMQ delivery that settles itself on the channel that delivered it. Once that
 * channel is gone (connection lost, consumer closed), RabbitMQ has already put the message
 * back in its queue: settling becomes a logged no-op, never an ack with a stale delivery
 * tag on another channel (which would kill that channel with PRECONDITION_FAILED).
 * `retry` and `deadLetter` publish the new copy with a confirm first and ack the original
 * after it: at worst both copies exist, never neither.
 * @module
 */
import { randomUUID } from "node:crypto";
import type { Logger } from "../../core/logger.js";
import { peekMessage, truncateError } from "../../core/message.js";
import { nextTurn } from "../../core/sleep.js";
import { BrokerConnectionError } from "../../errors.js";
import type { AckOptions, Delivery } from "../broker.js";
import type { AmqpChannel, AmqpMessage } from "./rabbitmq-driver.js";
import { DLQ_HEADERS, PUBLISH_ID_HEADER, type RabbitMqSender } from "./rabbitmq-sender.js";

/** A consumer channel, whether it is still open, and its subscriptions (null: not consuming). */
export interface ConsumerSession {
  readonly channel: AmqpChannel;
  readonly id: number;
  isOpen: boolean;
  tags: string[] | null;
  /** Deliveries of this channel handed out and not settled. */
  inFlight: number;
  /** What the server said when it closed the channel (its `error` event), if it said anything. */
  closedBecause?: string;
}

/** A delivery older than this reads the socket once before it says whether its channel is open. */
const STALL_CHECK_AFTER_MS = 1000;

/** Longest `x-chicory-error` header kept (amqplib refuses header tables over 64 KiB). */
const MAX_ERROR_HEADER_CHARS = 4096;

/**
 * How many times RabbitMQ delivered `message`: exact on quorum queues (`x-delivery-count`
 * + 1, trusted only on redeliveries); on classic queues only 1, or 2 when the redelivered flag is
 * set (at least 2).
 */
export function deliveryCountOf(message: AmqpMessage): number {
  // Not redelivered = first delivery, whatever headers the publisher wrote: a forged
  // `x-delivery-count` must not make a fresh message poison (RELIABILITY A6).
  if (!message.fields.redelivered) return 1;
  const header = message.properties.headers?.["x-delivery-count"];
  const count = typeof header === "number" ? header : typeof header === "string" ? Number(header) : Number.NaN;
  if (Number.isSafeInteger(count) && count >= 0) return count + 1;
  return 2;
}

/** Moves a delivered message to its DLQ with a reason (confirm first, then ack). */
export async function sendToDlq(
  sender: RabbitMqSender,
  queue: string,
  message: Pick<AmqpMessage, "content"> & { readonly properties: Pick<AmqpMessage["properties"], "messageId"> },
  error: string,
) {
  const peeked = peekMessage(message.content.toString("utf8"));
  const retries = typeof peeked?.retries === "number" && Number.isSafeInteger(peeked.retries) ? peeked.retries : 0;
  await sender.sendToDlq(
    queue,
    message.content,
    {
      [DLQ_HEADERS.id]: randomUUID(),
      [DLQ_HEADERS.error]: truncateError(error).slice(0, MAX_ERROR_HEADER_CHARS),
      [DLQ_HEADERS.failedAt]: new Date().toISOString(),
      [DLQ_HEADERS.retryCount]: retries,
      [DLQ_HEADERS.queue]: queue,
    },
    message.properties.messageId,
  );
}

/** See module doc. */
export class RabbitMqDelivery implements Delivery {
  readonly queue: string;
  readonly deliveryId: string;
  readonly body: string;
  readonly problem: string | undefined;
  readonly deliveryCount: number;
  readonly #message: AmqpMessage;
  readonly #session: ConsumerSession;
  readonly #sender: RabbitMqSender;
  readonly #logger: Logger;
  readonly #beforeSettle: () => Promise<void>;
  #state: "open" | "settling" | "settled" = "open";
  /** When the consumer handed the delivery out (`performance.now()`). */
  readonly #handedOutAtMs = performance.now();

  constructor(init: {
    queue: string;
    message: AmqpMessage;
    session: ConsumerSession;
    sender: RabbitMqSender;
    logger: Logger;
    /** Runs once, before the settle frame is sent (counters, subscription changes). */
    beforeSettle: () => Promise<void>;
    /** Why the message cannot be read (see {@link Delivery.problem}). */
    problem?: string | undefined;
  }) {
    this.queue = init.queue;
    this.#message = init.message;
    this.#session = init.session;
    this.#sender = init.sender;
    this.#logger = init.logger;
    this.#beforeSettle = init.beforeSettle;
    this.deliveryId = `${init.session.id}:${init.message.fields.deliveryTag}`;
    this.body = init.message.content.toString("utf8");
    this.problem = init.problem;
    this.deliveryCount = deliveryCountOf(init.message);
  }

  /**
   * {@inheritDoc Delivery.messageKey} (the queue and the `x-chicory-publish-id` header Chicory
   * sets at publish; none for a message published without it by another tool)
   */
  get messageKey(): string | undefined {
    const id = this.#message.properties.headers?.[PUBLISH_ID_HEADER];
    return typeof id === "string" && id.length > 0 ? `${this.queue}:${id}` : undefined;
  }

  /**
   * {@inheritDoc Delivery.ack}
   * `basic.ack` has no reply, and amqplib writes it to the socket on a later event-loop turn:
   * without `confirm`, a process killed right after `ack()` resolved can leave the message
   * unacknowledged (RabbitMQ redelivers it). With `confirm`, a passive declare of `amq.direct`
   * follows on the same channel; RabbitMQ answers it after it processed the ack. A closed
   * channel rejects (RabbitMQ redelivers the message).
   */
  async ack(options?: AckOptions): Promise<void> {
    if (!this.#begin()) return;
    const sent = await this.#settle((channel) => channel.ack(this.#message), "ack");
    if (!options?.confirm) return;
    if (!sent) {
      throw new BrokerConnectionError(
        "RabbitMQ ack not sent: the channel that delivered the message is closed (RabbitMQ redelivers it)",
      );
    }
    try {
      await this.#session.channel.checkExchange("amq.direct");
    } catch (error) {
      throw new BrokerConnectionError(`RabbitMQ ack not confirmed: ${(error as Error).message}`, { cause: error });
    }
  }

  /**
   * {@inheritDoc Delivery.holdsLease}
   * RabbitMQ has no lease: the message is this consumer's while the channel that delivered it
   * is open (once it closed, RabbitMQ put the message back in its queue for another consumer).
   * For a delivery handed out over a second ago, one turn of the event loop first: a process
   * that stalled (a task that blocked the event loop past the AMQP heartbeat) has not read yet
   * the close of the connection the server dropped meanwhile.
   */
  async holdsLease(): Promise<boolean> {
    if (this.#session.isOpen && performance.now() - this.#handedOutAtMs > STALL_CHECK_AFTER_MS) await nextTurn();
    return this.#session.isOpen;
  }

  /** {@inheritDoc Delivery.retry} */
  async retry(body: string, delayMs: number): Promise<void> {
    if (!this.#begin()) return;
    await this.#replace("retry", () =>
      this.#sender.send(this.queue, Buffer.from(body, "utf8"), {
        delayMs,
        priority: this.#message.properties.priority,
        messageId: this.#message.properties.messageId,
      }),
    );
  }

  /** {@inheritDoc Delivery.deadLetter} */
  async deadLetter(error: string): Promise<void> {
    if (!this.#begin()) return;
    await this.#replace("deadLetter", () => sendToDlq(this.#sender, this.queue, this.#message, error));
  }

  /**
   * {@inheritDoc Delivery.release}
   * RabbitMQ cannot requeue without counting: a quorum queue's `x-delivery-count` grows by one.
   */
  async release(): Promise<void> {
    if (!this.#begin()) return;
    await this.#settle((channel) => channel.nack(this.#message, false, true), "release");
  }

  /**
   * Re-delays the message (`x-chicory-delay-remaining-ms` after the top delay level):
   * publishes it to the next delay queue, then acks this copy.
   * @internal used by the consumer, never handed to a worker
   */
  async redelay(remainingMs: number): Promise<void> {
    if (!this.#begin()) return;
    await this.#replace("redelay", () =>
      this.#sender.send(this.queue, this.#message.content, {
        delayMs: remainingMs,
        priority: this.#message.properties.priority,
        messageId: this.#message.properties.messageId,
      }),
    );
  }

  #begin(): boolean {
    if (this.#state !== "open") return false;
    this.#state = "settling";
    return true;
  }

  async #replace(action: string, publish: () => Promise<void>): Promise<void> {
    if (!this.#session.isOpen) {
      // publishing now would duplicate the message RabbitMQ is already redelivering
      await this.#settle(() => {}, action);
      return;
    }
    try {
      await publish();
    } catch (error) {
      this.#state = "open"; // nothing happened: the caller may settle again (e.g. release)
      throw error;
    }
    await this.#settle((channel) => channel.ack(this.#message), action);
  }

  /** Sends the settle frame; false when the channel is gone (RabbitMQ redelivers the message). */
  async #settle(apply: (channel: AmqpChannel) => void, action: string): Promise<boolean> {
    this.#state = "settled";
    await this.#beforeSettle().catch(() => {});
    if (!this.#session.isOpen) {
      this.#logger.debug(
        { queue: this.queue, deliveryId: this.deliveryId, action },
        "rabbitmq delivery from a closed channel: settle skipped, RabbitMQ redelivers the message",
      );
      return false;
    }
    try {
      apply(this.#session.channel);
      return true;
    } catch (error) {
      this.#logger.debug(
        { queue: this.queue, deliveryId: this.deliveryId, action, err: (error as Error).message },
        "rabbitmq settle failed: the channel closed, RabbitMQ redelivers the message",
      );
      return false;
    }
  }
}

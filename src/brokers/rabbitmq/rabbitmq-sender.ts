/**
 * Routes outgoing messages: to the work queue, to a delay queue (see `rabbitmq-delays.ts`) or
 * to the DLQ, declaring the queues first (once per connection) and publishing with confirms.
 * A message returned unroutable (its queue was deleted behind our back) is declared again
 * and published once more.
 * @module
 */
import { randomUUID } from "node:crypto";
import { BrokerConnectionError } from "../../errors.js";
import type { RabbitMqConnection } from "./rabbitmq-connection.js";
import { planDelay, REMAINING_DELAY_HEADER } from "./rabbitmq-delays.js";
import type { AmqpHeaders, AmqpPublishOptions } from "./rabbitmq-driver.js";
import type { RabbitMqSettings } from "./rabbitmq-options.js";
import { type RabbitMqPublisher, UnroutableError } from "./rabbitmq-publisher.js";
import { checkQueueName, type QueueNames, type RabbitMqTopology } from "./rabbitmq-topology.js";

/** What to publish besides the body. */
export interface SendOptions {
  /** Delay before the message becomes visible (ms). */
  readonly delayMs?: number | undefined;
  /** Priority (clamped to 0..maxPriority; ignored without `maxPriority`). */
  readonly priority?: number | null | undefined;
  /** AMQP message id (the task id). */
  readonly messageId?: string | undefined;
}

/**
 * A random id of each published message (a retry or a replay is published anew, with its own),
 * kept by its passage through delay queues: the delivery's `messageKey`.
 */
export const PUBLISH_ID_HEADER = "x-chicory-publish-id";

/** Headers of a dead-lettered message. */
export const DLQ_HEADERS = {
  id: "x-chicory-dlq-id",
  error: "x-chicory-error",
  failedAt: "x-chicory-failed-at",
  retryCount: "x-chicory-retry-count",
  queue: "x-chicory-queue",
} as const;

/** Publishes messages to their RabbitMQ queues (see module doc). */
export class RabbitMqSender {
  readonly #settings: RabbitMqSettings;
  readonly #connection: RabbitMqConnection;
  readonly #publisher: RabbitMqPublisher;
  readonly #topology: RabbitMqTopology;

  constructor(
    settings: RabbitMqSettings,
    connection: RabbitMqConnection,
    publisher: RabbitMqPublisher,
    topology: RabbitMqTopology,
  ) {
    this.#settings = settings;
    this.#connection = connection;
    this.#publisher = publisher;
    this.#topology = topology;
  }

  /** Declares the work queue and DLQ of `queue`. */
  async ensureQueue(queue: string): Promise<QueueNames> {
    checkQueueName(queue);
    await this.#connection.ready(this.#settings.publishTimeoutMs);
    return this.#topology.ensureQueue(queue, this.#connection.generation);
  }

  /** Publishes `content` to `queue` (through a delay queue when `delayMs` > 0) and waits for the confirm. */
  async send(queue: string, content: Buffer, options: SendOptions = {}): Promise<void> {
    checkQueueName(queue);
    const plan = planDelay(options.delayMs ?? 0, this.#settings.delayLevelsMs);
    // an identity of this one message, whatever its body: a worker knows it again by it (`messageKey`)
    const headers: AmqpHeaders = { [PUBLISH_ID_HEADER]: randomUUID() };
    if (plan && plan.remainingMs > 0) headers[REMAINING_DELAY_HEADER] = String(plan.remainingMs);
    const properties = this.#properties(options, headers);
    await this.#withRedeclare(async () => {
      await this.#connection.ready(this.#settings.publishTimeoutMs);
      const generation = this.#connection.generation;
      const target = plan
        ? await this.#topology.ensureDelayQueue(queue, plan.levelMs, generation)
        : (await this.#topology.ensureQueue(queue, generation)).work;
      await this.#publisher.send(target, content, properties);
    });
  }

  /** Publishes `content` to the DLQ of `queue` with `headers` and waits for the confirm. */
  async sendToDlq(queue: string, content: Buffer, headers: AmqpHeaders, messageId?: string): Promise<void> {
    checkQueueName(queue);
    const properties = this.#properties({ messageId }, headers);
    await this.#withRedeclare(async () => {
      await this.#connection.ready(this.#settings.publishTimeoutMs);
      const names = await this.#topology.ensureQueue(queue, this.#connection.generation);
      await this.#publisher.send(names.dlq, content, properties);
    });
  }

  async #withRedeclare(attempt: () => Promise<void>): Promise<void> {
    try {
      await attempt();
    } catch (error) {
      if (!(error instanceof UnroutableError)) throw error;
      this.#topology.forget();
      try {
        await attempt();
      } catch (second) {
        throw second instanceof BrokerConnectionError
          ? second
          : new BrokerConnectionError(String(second), { cause: second });
      }
    }
  }

  #properties(options: SendOptions, headers: AmqpHeaders): AmqpPublishOptions {
    const properties: AmqpPublishOptions = {
      persistent: this.#settings.durable,
      contentType: "application/json",
      timestamp: Math.floor(Date.now() / 1000),
      headers,
    };
    if (options.messageId) properties.messageId = options.messageId;
    const max = this.#settings.maxPriority;
    if (max !== null && typeof options.priority === "number" && Number.isFinite(options.priority)) {
      properties.priority = Math.min(max, Math.max(0, Math.round(options.priority)));
    }
    return properties;
  }
}

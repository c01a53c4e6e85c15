/**
 * Queue names and declarations. Every queue lives under the prefix (default `chicory`):
 * - `<prefix>.<Q>`: the work queue of Chicory queue `Q` (durable classic or quorum);
 *   its dead-letter exchange is the default exchange with routing key `<prefix>.<Q>.dlq`,
 *   so messages RabbitMQ itself dead-letters (TTL, `x-delivery-limit`) land in the DLQ too.
 * - `<prefix>.<Q>.dlq`: its dead-letter queue (always a durable classic queue, never
 *   length-limited: dead letters are never silently dropped, RELIABILITY C12).
 * - `<prefix>.delay.<Q>.<ms>`: one delay queue per level, `x-message-ttl` = the level, dead-
 *   lettering to the work queue (see `rabbitmq-delays.ts`).
 * Queue names ending in `.dlq` or starting with `delay.` are refused so that no two Chicory
 * queues can map to the same RabbitMQ queue. All declarations use the same arguments
 * everywhere; a queue that exists with other arguments fails with a {@link ConfigurationError}
 * naming it (RabbitMQ's PRECONDITION_FAILED).
 * @module
 */
import { assertValidName } from "../../core/names.js";
import { BrokerConnectionError, ConfigurationError, ValidationError } from "../../errors.js";
import { type AmqpChannel, amqpCode } from "./rabbitmq-driver.js";
import type { RabbitMqSettings } from "./rabbitmq-options.js";

/** RabbitMQ names of one Chicory queue. */
export interface QueueNames {
  /** The work queue. */
  readonly work: string;
  /** Its dead-letter queue. */
  readonly dlq: string;
}

/**
 * Checks a Chicory queue name for this broker.
 * @throws ValidationError when invalid or reserved
 */
export function checkQueueName(queue: string): void {
  assertValidName(queue, "queue");
  if (queue.endsWith(".dlq") || queue.startsWith("delay.")) {
    throw new ValidationError(
      `queue name "${queue}" is reserved by the RabbitMQ broker: names may not end in ".dlq" or start with "delay."`,
    );
  }
}

/** The RabbitMQ names of Chicory queue `queue`. */
export function queueNames(prefix: string, queue: string): QueueNames {
  return { work: `${prefix}.${queue}`, dlq: `${prefix}.${queue}.dlq` };
}

/** The delay queue of `queue` for a level of `levelMs` milliseconds. */
export function delayQueueName(prefix: string, queue: string, levelMs: number): string {
  return `${prefix}.delay.${queue}.${levelMs}`;
}

/** Arguments of a work queue. */
export function workQueueArguments(settings: RabbitMqSettings, names: QueueNames): Record<string, unknown> {
  const args: Record<string, unknown> = {
    "x-dead-letter-exchange": "",
    "x-dead-letter-routing-key": names.dlq,
  };
  if (settings.queueType === "quorum") {
    args["x-queue-type"] = "quorum";
    // at-least-once dead-lettering (RabbitMQ 3.10+) requires reject-publish overflow
    args["x-dead-letter-strategy"] = "at-least-once";
    args["x-overflow"] = "reject-publish";
    if (settings.deliveryLimit !== null) args["x-delivery-limit"] = settings.deliveryLimit;
  }
  if (settings.queueMaxLength !== null) {
    args["x-max-length"] = settings.queueMaxLength;
    args["x-overflow"] = "reject-publish";
  }
  if (settings.messageTtlMs !== null) args["x-message-ttl"] = settings.messageTtlMs;
  if (settings.maxPriority !== null) args["x-max-priority"] = settings.maxPriority;
  return args;
}

/** Arguments of a delay queue: expire after the level, then go to the work queue. */
export function delayQueueArguments(
  settings: RabbitMqSettings,
  workQueue: string,
  levelMs: number,
): Record<string, unknown> {
  const args: Record<string, unknown> = {
    "x-message-ttl": levelMs,
    "x-dead-letter-exchange": "",
    "x-dead-letter-routing-key": workQueue,
  };
  if (settings.queueType === "quorum") {
    args["x-queue-type"] = "quorum";
    args["x-dead-letter-strategy"] = "at-least-once";
    args["x-overflow"] = "reject-publish";
  }
  // no x-max-priority here: a priority queue would not expire in arrival order; the
  // priority property survives dead-lettering and the work queue honors it
  return args;
}

/** Declares queues once per connection (idempotent on the server, cached here). */
export class RabbitMqTopology {
  readonly #settings: RabbitMqSettings;
  readonly #channel: () => Promise<AmqpChannel>;
  #declared = new Map<string, Promise<void>>();
  #generation = -1;

  /**
   * @param channel the channel to declare on (a shared admin channel)
   */
  constructor(settings: RabbitMqSettings, channel: () => Promise<AmqpChannel>) {
    this.#settings = settings;
    this.#channel = channel;
  }

  /** Declares the work queue and DLQ of `queue` (DLQ first: it is the work queue's dead-letter target). */
  async ensureQueue(queue: string, generation: number): Promise<QueueNames> {
    const names = queueNames(this.#settings.prefix, queue);
    const durable = this.#settings.durable;
    await this.#declare(names.dlq, generation, { durable });
    await this.#declare(names.work, generation, {
      durable,
      arguments: workQueueArguments(this.#settings, names),
    });
    return names;
  }

  /** Declares the delay queue of `queue` for `levelMs`; returns its name. */
  async ensureDelayQueue(queue: string, levelMs: number, generation: number): Promise<string> {
    const { work } = await this.ensureQueue(queue, generation);
    const name = delayQueueName(this.#settings.prefix, queue, levelMs);
    await this.#declare(name, generation, {
      durable: this.#settings.durable,
      arguments: delayQueueArguments(this.#settings, work, levelMs),
    });
    return name;
  }

  /** Forgets declarations (a queue was deleted behind our back: declare again). */
  forget(): void {
    this.#declared.clear();
  }

  #declare(
    name: string,
    generation: number,
    options: { durable: boolean; arguments?: Record<string, unknown> },
  ): Promise<void> {
    if (generation !== this.#generation) {
      // a new connection: RabbitMQ may have restarted (non-durable queues gone), declare again
      this.#declared.clear();
      this.#generation = generation;
    }
    let pending = this.#declared.get(name);
    if (!pending) {
      pending = this.#channel()
        .then((channel) => channel.assertQueue(name, options))
        .then(
          () => undefined,
          (error: unknown) => {
            this.#declared.delete(name);
            throw declareError(name, error);
          },
        );
      this.#declared.set(name, pending);
    }
    return pending;
  }
}

function declareError(name: string, error: unknown): Error {
  const text = error instanceof Error ? error.message : String(error);
  if (amqpCode(error) === 406) {
    return new ConfigurationError(
      `RabbitMQ queue "${name}" already exists with other arguments (${text}); delete it or use the options it was ` +
        "declared with (queueType, durable, maxPriority, queueMaxLength, messageTtl, deliveryLimit)",
      { cause: error },
    );
  }
  if (error instanceof ConfigurationError || error instanceof BrokerConnectionError) return error;
  return new BrokerConnectionError(`RabbitMQ could not declare queue "${name}": ${text}`, { cause: error });
}

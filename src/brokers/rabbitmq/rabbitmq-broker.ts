/**
 * The RabbitMQ broker (AMQP 0-9-1 through `amqplib`, loaded lazily).
 *
 * - Connections: one for publishing (confirm channel) and one for consuming (a channel per
 *   consumer), both reconnecting on their own with capped backoff; owned by the broker.
 * - Publish: persistent messages on durable (or quorum) queues, resolved only after the
 *   publisher confirm; a lost connection or a missing confirm within `publishTimeout`
 *   rejects with {@link BrokerConnectionError}, never hangs.
 * - Delivery: at-least-once; acks always on the delivering channel; messages held by a
 *   closed channel go back to the queue at once. Ordering FIFO per queue among equal
 *   priorities, not across redeliveries, retries or priorities.
 * - Delays: per-level delay queues (no head-of-line blocking, never early); see
 *   `rabbitmq-delays.ts`.
 * - Not supported: `unique` publish (capability `uniqueIds` is false; the flag is ignored).
 * @module
 */

import { DisconnectGate, overtakenMessage } from "../../core/disconnect-gate.js";
import { staleMs } from "../../core/duration.js";
import { MessageCodec, peekMessage } from "../../core/message.js";
import { maskUrl, redactSecrets, urlPassword } from "../../core/url.js";
import { BrokerConnectionError } from "../../errors.js";
import type {
  Broker,
  BrokerBinding,
  BrokerCapabilities,
  Consumer,
  ConsumerOptions,
  DlqMessage,
  DlqReplayGuard,
  HealthStatus,
  OutgoingMessage,
  PublishResult,
} from "../broker.js";
import { consumerCount, messageCounts, purgeQueues } from "./rabbitmq-admin.js";
import { RabbitMqConnection } from "./rabbitmq-connection.js";
import { RabbitMqConsumer } from "./rabbitmq-consumer.js";
import { sendToDlq } from "./rabbitmq-delivery.js";
import { RabbitMqDlq } from "./rabbitmq-dlq.js";
import { type RabbitMqBrokerOptions, type RabbitMqSettings, resolveRabbitMqSettings } from "./rabbitmq-options.js";
import { RabbitMqPublisher } from "./rabbitmq-publisher.js";
import { RabbitMqSender } from "./rabbitmq-sender.js";
import { checkQueueName, delayQueueName, queueNames, RabbitMqTopology } from "./rabbitmq-topology.js";

const HEALTH_TIMEOUT_MS = 2000;

/**
 * Chicory's RabbitMQ broker (see module doc and `docs/brokers/rabbitmq.md`).
 * @example
 * ```ts
 * import { Chicory } from "chicory";
 * import { RabbitMqBroker } from "chicory/rabbitmq";
 * const app = new Chicory({
 *   broker: new RabbitMqBroker({ url: "amqp://guest:guest@localhost:5672", queueType: "quorum", deliveryLimit: 10 }),
 * });
 * ```
 */
export class RabbitMqBroker implements Broker {
  /** {@inheritDoc Broker.kind} */
  readonly kind = "rabbitmq";
  /** {@inheritDoc Broker.capabilities} */
  readonly capabilities: BrokerCapabilities;
  /** {@inheritDoc Broker.displayUrl} */
  readonly displayUrl: string;
  /** The resolved settings (password inside `url`: do not log it). */
  readonly settings: RabbitMqSettings;
  /** {@inheritDoc Broker.displaySettings} */
  get displaySettings(): string {
    return `prefix "${this.settings.prefix}", ${this.settings.queueType} queues`;
  }
  readonly #publishConnection: RabbitMqConnection;
  readonly #consumeConnection: RabbitMqConnection;
  readonly #publisher: RabbitMqPublisher;
  readonly #topology: RabbitMqTopology;
  readonly #sender: RabbitMqSender;
  readonly #dlq: RabbitMqDlq;
  readonly #consumers = new Set<RabbitMqConsumer>();
  #codec: MessageCodec | null = null;
  #replayGuard: DlqReplayGuard | undefined;
  /** The `disconnect()` under way, if any: a `connect()` meanwhile opens once it is done. */
  readonly #disconnecting = new DisconnectGate();

  /**
   * @param options connection and queue options; unset ones come from `CHICORY_BROKER_RABBITMQ_*`
   * @throws ConfigurationError on invalid options (the message names the option or variable)
   */
  constructor(options: RabbitMqBrokerOptions = {}) {
    const settings = resolveRabbitMqSettings(options);
    this.settings = settings;
    this.displayUrl = maskUrl(settings.url);
    this.capabilities = {
      priorities: settings.maxPriority !== null,
      delayedDelivery: true,
      uniqueIds: false,
      durable: settings.durable,
      multiProcess: true,
      serialDlq: true,
    };
    const connection = (role: "publish" | "consume") =>
      new RabbitMqConnection({
        url: settings.url,
        role,
        connectionName: settings.connectionName,
        tls: settings.tls,
        reconnectDelayMs: settings.reconnectDelayMs,
        maxReconnectDelayMs: settings.maxReconnectDelayMs,
        logger: settings.logger,
      });
    this.#publishConnection = connection("publish");
    this.#consumeConnection = connection("consume");
    this.#publisher = new RabbitMqPublisher(this.#publishConnection, settings.publishTimeoutMs);
    this.#topology = new RabbitMqTopology(settings, () =>
      this.#publishConnection.adminChannel(settings.publishTimeoutMs),
    );
    this.#sender = new RabbitMqSender(settings, this.#publishConnection, this.#publisher, this.#topology);
    this.#dlq = new RabbitMqDlq(settings, this.#publishConnection, this.#sender, () => {
      this.#codec ??= new MessageCodec();
      return { codec: this.#codec, guardReplay: this.#replayGuard };
    });
  }

  /** {@inheritDoc Broker.bind} */
  bind(binding: BrokerBinding): void {
    this.#codec = binding.codec;
    this.#replayGuard = binding.guardReplay;
  }

  /**
   * {@inheritDoc Broker.connect} Opens the publish connection; the consume connection opens
   * with the first consumer. After a `disconnect()` still under way, once it is done.
   */
  connect(): Promise<void> {
    return this.#disconnecting.connect(
      async () => {
        this.#consumeConnection.enable();
        await this.#publishConnection.open();
      },
      () => new BrokerConnectionError(overtakenMessage("rabbitmq broker", this.displayUrl)),
    );
  }

  /** {@inheritDoc Broker.disconnect} Closes consumers (their unsettled messages go back to the queue) and connections. */
  disconnect(): Promise<void> {
    return this.#disconnecting.closing(this.#disconnect());
  }

  async #disconnect(): Promise<void> {
    await Promise.allSettled([...this.#consumers].map((consumer) => consumer.close()));
    await this.#publisher.close();
    await Promise.allSettled([this.#publishConnection.close(), this.#consumeConnection.close()]);
  }

  /** {@inheritDoc Broker.publish} `unique` is ignored (capability `uniqueIds` is false). */
  async publish(queue: string, message: OutgoingMessage): Promise<PublishResult> {
    await this.#sender.send(queue, Buffer.from(message.body, "utf8"), {
      delayMs: message.delayMs,
      priority: message.priority,
      messageId: message.id,
    });
    return { published: true };
  }

  /** Writes an already acknowledged message (an `at_most_once` failure) into `queue`'s DLQ. */
  async writeDeadLetter(queue: string, body: string, error: string): Promise<void> {
    const id = peekMessage(body)?.id;
    const content = Buffer.from(body, "utf8");
    await sendToDlq(
      this.#sender,
      queue,
      { content, properties: { messageId: typeof id === "string" ? id : undefined } },
      error,
    );
  }

  /** {@inheritDoc Broker.consumer} */
  consumer(options: ConsumerOptions): Consumer {
    for (const queue of options.queues) checkQueueName(queue);
    const consumer = new RabbitMqConsumer(
      {
        connection: this.#consumeConnection,
        sender: this.#sender,
        prefetchCount: this.settings.prefetchCount ?? Math.min(65535, Math.max(1, options.capacity ?? 16)),
        logger: options.logger ?? this.settings.logger,
        forgetTopology: () => this.#topology.forget(),
        onClose: (closed) => this.#consumers.delete(closed),
      },
      options,
    );
    this.#consumers.add(consumer);
    return consumer;
  }

  /** {@inheritDoc BrokerAdmin.getDlqMessages} */
  getDlqMessages(queue?: string, count = 100): Promise<DlqMessage[]> {
    return this.#dlq.list(queue ?? this.settings.defaultQueue, count);
  }

  /** {@inheritDoc BrokerAdmin.replayFromDlq} `queue` names the DLQ searched and the queue replayed to. */
  replayFromDlq(messageId: string, queue?: string, resetRetries = true): Promise<boolean> {
    return this.#dlq.replay(messageId, queue ?? this.settings.defaultQueue, resetRetries);
  }

  /** {@inheritDoc BrokerAdmin.deleteFromDlq} */
  deleteFromDlq(messageId: string, queue?: string): Promise<boolean> {
    return this.#dlq.remove(messageId, queue ?? this.settings.defaultQueue);
  }

  /** {@inheritDoc BrokerAdmin.purgeDlq} */
  purgeDlq(queue?: string): Promise<number> {
    return purgeQueues(this.#publishConnection, this.settings.publishTimeoutMs, [this.#names(queue).dlq]);
  }

  /** {@inheritDoc BrokerAdmin.getDlqCount} Entries being read by a DLQ call of another process are not counted. */
  async getDlqCount(queue?: string): Promise<number> {
    const [count] = await messageCounts(this.#publishConnection, this.settings.publishTimeoutMs, [
      this.#names(queue).dlq,
    ]);
    return count ?? 0;
  }

  /**
   * {@inheritDoc BrokerAdmin.getPendingCount}
   * AMQP does not expose unacknowledged counts: this counts the deliveries handed out and not
   * settled by the consumers of THIS broker instance only.
   */
  async getPendingCount(queue?: string): Promise<number> {
    const name = queue ?? this.settings.defaultQueue;
    let pending = 0;
    for (const consumer of this.#consumers) pending += consumer.pendingCount(name);
    return pending;
  }

  /**
   * {@inheritDoc BrokerAdmin.getQueueSize}
   * Ready messages plus messages in its delay queues plus messages prefetched by this
   * instance's consumers and not yet handed out (prefetched by other processes: not counted).
   */
  async getQueueSize(queue?: string): Promise<number> {
    const name = queue ?? this.settings.defaultQueue;
    const counts = await messageCounts(this.#publishConnection, this.settings.publishTimeoutMs, this.#allQueues(name));
    let size = counts.reduce((sum, count) => sum + count, 0);
    for (const consumer of this.#consumers) size += consumer.bufferedCount(name);
    return size;
  }

  /**
   * {@inheritDoc BrokerAdmin.getConsumerCount}
   * Subscriptions RabbitMQ reports, plus this instance's consumers that are idle (they cancel
   * their subscription while they have nothing to do).
   */
  async getConsumerCount(queue?: string): Promise<number> {
    const name = queue ?? this.settings.defaultQueue;
    const count = await consumerCount(this.#publishConnection, this.settings.publishTimeoutMs, this.#names(name).work);
    let idle = 0;
    for (const consumer of this.#consumers) if (consumer.isIdle && consumer.queues.includes(name)) idle += 1;
    return count + idle;
  }

  /** {@inheritDoc BrokerAdmin.purgeQueue} Purges the work queue and its delay queues. */
  purgeQueue(queue?: string): Promise<number> {
    const name = queue ?? this.settings.defaultQueue;
    return purgeQueues(this.#publishConnection, this.settings.publishTimeoutMs, this.#allQueues(name));
  }

  /**
   * {@inheritDoc BrokerAdmin.cleanupStaleClients}
   * A no-op returning 0: RabbitMQ removes the consumers of closed connections itself (and
   * detects dead peers with heartbeats), requeueing their unacknowledged messages.
   */
  async cleanupStaleClients(_queue?: string, staleSeconds = 300): Promise<number> {
    staleMs(staleSeconds); // (checked as on every broker; RabbitMQ removes its consumers itself)
    return 0;
  }

  /** {@inheritDoc BrokerAdmin.healthcheck} */
  async healthcheck(): Promise<HealthStatus> {
    const started = performance.now();
    try {
      const channel = await this.#publishConnection.adminChannel(HEALTH_TIMEOUT_MS);
      await channel.checkExchange("amq.direct");
      return { connected: true, latencyMs: performance.now() - started };
    } catch (error) {
      const text = error instanceof Error ? error.message : String(error);
      return { connected: false, error: redactSecrets(text, urlPassword(this.settings.url)) };
    }
  }

  #names(queue: string | undefined) {
    const name = queue ?? this.settings.defaultQueue;
    checkQueueName(name);
    return queueNames(this.settings.prefix, name);
  }

  #allQueues(queue: string): string[] {
    const { work } = this.#names(queue);
    const delays = this.settings.delayLevelsMs.map((levelMs) => delayQueueName(this.settings.prefix, queue, levelMs));
    return [work, ...delays];
  }
}

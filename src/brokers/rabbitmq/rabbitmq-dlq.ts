/**
 * The DLQ API over AMQP, which has no "peek": entries are read with `basic.get` (no auto-
 * ack) on a dedicated channel, and closing that channel puts every entry it read back in its
 * original position (classic queue). `replayFromDlq` publishes the found entry to its queue
 * with a confirm and only then acks the DLQ copy, so a second replay cannot find it;
 * operations on one DLQ are serialized within a process. Across processes, entries another
 * process is reading at that moment are invisible (a concurrent list/replay may miss them),
 * and a process that dies between the confirm and the ack leaves the entry in the DLQ, so a
 * later replay could enqueue it a second time. Scans read the DLQ from the head: O(n).
 * Entry ids: the `x-chicory-dlq-id` header set when Chicory dead-letters a message; for
 * messages RabbitMQ dead-lettered itself (TTL, `x-delivery-limit`) the task id
 * (`msg-<id>`) or a hash of the body.
 * @module
 */
import { createHash } from "node:crypto";
import { BrokerConnectionError, ChicoryError } from "../../errors.js";
import type { BrokerBinding, DlqMessage } from "../broker.js";
import { dlqListCount, guardedReplay, replayedTaskId, rewriteForReplay, toDlqMessage } from "../dlq.js";
import type { RabbitMqConnection } from "./rabbitmq-connection.js";
import { type AmqpChannel, type AmqpMessage, amqpCode } from "./rabbitmq-driver.js";
import type { RabbitMqSettings } from "./rabbitmq-options.js";
import { DLQ_HEADERS, type RabbitMqSender } from "./rabbitmq-sender.js";
import { checkQueueName, queueNames } from "./rabbitmq-topology.js";

/** The id of a DLQ entry (see module doc). */
export function dlqEntryId(message: AmqpMessage): string {
  const header = message.properties.headers?.[DLQ_HEADERS.id];
  if (typeof header === "string" && header.length > 0) return header;
  if (message.properties.messageId) return `msg-${message.properties.messageId}`;
  return `sha-${createHash("sha256").update(message.content).digest("hex").slice(0, 32)}`;
}

function firstDeath(message: AmqpMessage): Record<string, unknown> | undefined {
  const deaths = message.properties.headers?.["x-death"];
  return Array.isArray(deaths) && deaths[0] && typeof deaths[0] === "object"
    ? (deaths[0] as Record<string, unknown>)
    : undefined;
}

/** Turns a DLQ message into a {@link DlqMessage}. */
export function toEntry(message: AmqpMessage): DlqMessage {
  const headers = message.properties.headers ?? {};
  const death = firstDeath(message);
  const error =
    typeof headers[DLQ_HEADERS.error] === "string"
      ? (headers[DLQ_HEADERS.error] as string)
      : `dead-lettered by RabbitMQ: ${String(death?.reason ?? "unknown")}`;
  const failedAtHeader = headers[DLQ_HEADERS.failedAt];
  const deathTime = typeof death?.time === "number" ? death.time * 1000 : undefined;
  const failedAt = typeof failedAtHeader === "string" ? failedAtHeader : (deathTime ?? Date.now());
  const retryHeader = headers[DLQ_HEADERS.retryCount];
  return toDlqMessage(dlqEntryId(message), {
    body: message.content.toString("utf8"),
    error,
    failedAt,
    retryCount: typeof retryHeader === "number" ? retryHeader : undefined,
  });
}

/** DLQ operations of one broker (see module doc). */
export class RabbitMqDlq {
  readonly #settings: RabbitMqSettings;
  readonly #connection: RabbitMqConnection;
  readonly #sender: RabbitMqSender;
  readonly #binding: () => BrokerBinding;
  readonly #locks = new Map<string, Promise<unknown>>();

  constructor(
    settings: RabbitMqSettings,
    connection: RabbitMqConnection,
    sender: RabbitMqSender,
    binding: () => BrokerBinding,
  ) {
    this.#settings = settings;
    this.#connection = connection;
    this.#sender = sender;
    this.#binding = binding;
  }

  /** Up to `count` entries from the head of `queue`'s DLQ. */
  async list(queue: string, count: number): Promise<DlqMessage[]> {
    dlqListCount("getDlqMessages", count);
    return this.#scan(
      queue,
      async (get) => {
        const out: DlqMessage[] = [];
        while (out.length < count) {
          const message = await get();
          if (!message) break;
          out.push(toEntry(message));
        }
        return out;
      },
      [],
    );
  }

  /** Replays entry `messageId` of `queue`'s DLQ to `queue`; false when not found. */
  replay(messageId: string, queue: string, resetRetries: boolean): Promise<boolean> {
    return this.#scan(
      queue,
      async (get, channel) => {
        const message = await this.#find(get, messageId);
        if (!message) return false;
        const { codec, guardReplay } = this.#binding();
        const storedError = message.properties.headers?.[DLQ_HEADERS.error];
        const body = rewriteForReplay(
          codec,
          message.content.toString("utf8"),
          resetRetries,
          typeof storedError === "string" ? storedError : undefined,
        );
        return guardedReplay(guardReplay, replayedTaskId(body), async () => {
          await this.#sender.send(queue, Buffer.from(body, "utf8"), {
            messageId: message.properties.messageId,
            priority: message.properties.priority,
          });
          channel.ack(message);
          return true;
        });
      },
      false,
    );
  }

  /** Deletes entry `messageId` of `queue`'s DLQ; false when not found. */
  remove(messageId: string, queue: string): Promise<boolean> {
    return this.#scan(
      queue,
      async (get, channel) => {
        const message = await this.#find(get, messageId);
        if (!message) return false;
        channel.ack(message);
        return true;
      },
      false,
    );
  }

  async #find(get: () => Promise<AmqpMessage | false>, messageId: string): Promise<AmqpMessage | null> {
    for (;;) {
      const message = await get();
      if (!message) return null;
      if (dlqEntryId(message) === messageId) return message;
    }
  }

  /** Runs `work` on a dedicated channel of the DLQ, serialized per DLQ; a missing DLQ gives `empty`. */
  async #scan<T>(
    queue: string,
    work: (get: () => Promise<AmqpMessage | false>, channel: AmqpChannel) => Promise<T>,
    empty: T,
  ): Promise<T> {
    checkQueueName(queue);
    const dlq = queueNames(this.#settings.prefix, queue).dlq;
    const previous = this.#locks.get(dlq) ?? Promise.resolve();
    const run = previous
      .catch(() => {})
      .then(() =>
        this.#connection.withChannel(this.#settings.publishTimeoutMs, async (channel) => {
          const get = () => channel.get(dlq, { noAck: false });
          try {
            return await work(get, channel);
          } catch (error) {
            if (amqpCode(error) === 404) return empty;
            if (error instanceof ChicoryError) throw error;
            throw new BrokerConnectionError(`RabbitMQ DLQ operation on "${dlq}" failed: ${(error as Error).message}`, {
              cause: error,
            });
          }
        }),
      );
    this.#locks.set(dlq, run);
    try {
      return await run;
    } finally {
      if (this.#locks.get(dlq) === run) this.#locks.delete(dlq);
    }
  }
}

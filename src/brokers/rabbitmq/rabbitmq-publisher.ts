/**
 * Publishing with publisher confirms on one confirm channel of the publish connection.
 * `send` resolves only after RabbitMQ confirmed the message (for a persistent message on a
 * durable queue: written to disk / replicated); it rejects with a
 * {@link BrokerConnectionError} when the broker nacks it, the channel or connection is lost
 * before the confirm, the queue does not exist (the message comes back as `basic.return`:
 * published with `mandatory`), or no confirm arrives within the publish timeout (e.g. a
 * memory alarm blocks publishers). It never hangs. After a timeout the message may still be
 * confirmed later: a caller that publishes again can create a duplicate (at-least-once).
 * @module
 */
import { BrokerConnectionError } from "../../errors.js";
import type { RabbitMqConnection } from "./rabbitmq-connection.js";
import type { AmqpConfirmChannel, AmqpMessage, AmqpPublishOptions } from "./rabbitmq-driver.js";

interface ConfirmState {
  readonly channel: AmqpConfirmChannel;
  isOpen: boolean;
  /** Correlation ids of messages RabbitMQ returned as unroutable (return precedes the confirm). */
  readonly returned: Set<string>;
}

/** The message came back unroutable: its queue does not exist (deleted behind our back). */
export class UnroutableError extends BrokerConnectionError {}

let sequence = 0;

/** Publishes with confirms (see module doc). */
export class RabbitMqPublisher {
  readonly #connection: RabbitMqConnection;
  readonly #timeoutMs: number;
  #state: Promise<ConfirmState> | null = null;

  constructor(connection: RabbitMqConnection, timeoutMs: number) {
    this.#connection = connection;
    this.#timeoutMs = timeoutMs;
  }

  /**
   * Publishes `content` to queue `queue` through the default exchange and waits for the confirm.
   * @throws BrokerConnectionError (see module doc)
   */
  async send(queue: string, content: Buffer, options: AmqpPublishOptions): Promise<void> {
    const deadline = Date.now() + this.#timeoutMs;
    const state = await this.#open(deadline);
    sequence = (sequence + 1) % Number.MAX_SAFE_INTEGER;
    const correlationId = `c${sequence}`;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          finish(
            new BrokerConnectionError(
              `RabbitMQ did not confirm a message for queue "${queue}" within ${this.#timeoutMs} ms ` +
                "(connection lost or publishers blocked by a resource alarm)",
            ),
          ),
        Math.max(1, deadline - Date.now()),
      );
      let isDone = false;
      const finish = (error?: Error): void => {
        if (isDone) return;
        isDone = true;
        clearTimeout(timer);
        state.returned.delete(correlationId);
        if (error) reject(error);
        else resolve();
      };
      try {
        state.channel.sendToQueue(queue, content, { ...options, mandatory: true, correlationId }, (error: unknown) => {
          if (error) {
            finish(
              new BrokerConnectionError(
                `RabbitMQ refused a message for queue "${queue}" (${describe(error)}; a queue with ` +
                  "x-max-length rejects publishes when full)",
                { cause: error },
              ),
            );
          } else if (state.returned.has(correlationId)) {
            finish(new UnroutableError(`RabbitMQ queue "${queue}" does not exist (message returned unroutable)`));
          } else {
            finish();
          }
        });
      } catch (error) {
        state.isOpen = false;
        finish(
          new BrokerConnectionError(`RabbitMQ publish to "${queue}" failed: ${describe(error)}`, { cause: error }),
        );
      }
    });
  }

  /** Closes the confirm channel (waiting for outstanding confirms is the callers' business). */
  async close(): Promise<void> {
    const state = await this.#state?.catch(() => null);
    this.#state = null;
    if (state?.isOpen) await state.channel.close().catch(() => {});
  }

  async #open(deadline: number): Promise<ConfirmState> {
    for (let current = this.#state; current; current = this.#state) {
      const existing = await current.catch(() => null);
      if (existing?.isOpen) return existing;
      // another caller may have replaced the closed channel meanwhile: use theirs
      if (this.#state === current) break;
    }
    const created = this.#create(deadline);
    this.#state = created;
    created.catch(() => {
      if (this.#state === created) this.#state = null;
    });
    return created;
  }

  async #create(deadline: number): Promise<ConfirmState> {
    const connection = await this.#connection.ready(Math.max(1, deadline - Date.now()));
    let channel: AmqpConfirmChannel;
    try {
      channel = await connection.createConfirmChannel();
    } catch (error) {
      throw new BrokerConnectionError(`RabbitMQ confirm channel could not be opened: ${describe(error)}`, {
        cause: error,
      });
    }
    const state: ConfirmState = { channel, isOpen: true, returned: new Set() };
    channel.on("error", () => {});
    channel.on("close", () => {
      state.isOpen = false;
    });
    channel.on("return", (message: AmqpMessage) => {
      const id = message.properties.correlationId;
      if (id) state.returned.add(id);
    });
    return state;
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

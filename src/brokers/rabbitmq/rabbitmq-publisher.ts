/**
 * Publishing with publisher confirms on one confirm channel of the publish connection.
 * `send` resolves only after RabbitMQ confirmed the message (for a persistent message on a
 * durable queue: written to disk / replicated); it rejects with a
 * {@link BrokerConnectionError} when the broker nacks it, the channel or connection is lost
 * before the confirm, the queue does not exist (the message comes back as `basic.return`:
 * published with `mandatory`), or no confirm arrives within the publish timeout (e.g. a
 * memory alarm blocks publishers). It never hangs. After a timeout the message may still be
 * confirmed later: a caller that publishes again can create a duplicate (at-least-once).
 *
 * A message over the server's `max_message_size` (128 MiB by default in RabbitMQ 3.8-3.13, 16 MiB
 * in 4.x; AMQP does not tell a client) makes RabbitMQ close the channel: that message fails
 * with a {@link MessageTooLargeError} naming the server's limit, and later messages over the
 * limit learned so are refused before they are sent, so they close no channel again. Messages
 * over {@link LARGE_MESSAGE_BYTES} (possible only with `CHICORY_MAX_MESSAGE_BYTES` raised over
 * its 1 MiB default) go one at a time on a confirm channel of their own: the channel such a
 * message closes carries no other message, so no other publish fails with it (on a shared
 * channel, the messages unconfirmed when it closes would fail with an unknown outcome). A long
 * message may so reach its queue after shorter ones sent after it.
 * @module
 */
import { DEFAULT_MAX_MESSAGE_BYTES } from "../../core/message.js";
import { BrokerConnectionError, MessageTooLargeError } from "../../errors.js";
import type { RabbitMqConnection } from "./rabbitmq-connection.js";
import type { AmqpConfirmChannel, AmqpMessage, AmqpPublishOptions } from "./rabbitmq-driver.js";

interface ConfirmState {
  readonly channel: AmqpConfirmChannel;
  isOpen: boolean;
  /** Correlation ids of messages RabbitMQ returned as unroutable (return precedes the confirm). */
  readonly returned: Set<string>;
  /** Why RabbitMQ closed the channel (its `error` event comes before the failed confirms). */
  closeReason: string | undefined;
}

/** RabbitMQ's reason for closing a channel on a message over `max_message_size`: its size and the limit. */
function sizeRefusal(reason: string | undefined): { size: number; max: number } | undefined {
  const found = /message size (\d+) is larger than configured max size (\d+)/.exec(reason ?? "");
  return found ? { size: Number(found[1]), max: Number(found[2]) } : undefined;
}

/** The source named by a {@link MessageTooLargeError} for RabbitMQ's limit. */
const MAX_SIZE_SOURCE = "RabbitMQ's max_message_size; keep CHICORY_MAX_MESSAGE_BYTES at most that";

/** The message came back unroutable: its queue does not exist (deleted behind our back). */
export class UnroutableError extends BrokerConnectionError {}

let sequence = 0;

/**
 * Messages longer than this are published on their own channel, one at a time (see module
 * doc): the default message limit, under the least default `max_message_size` of RabbitMQ
 * (16 MiB in 4.x).
 */
const LARGE_MESSAGE_BYTES = DEFAULT_MAX_MESSAGE_BYTES;

/** A confirm channel, opened when first needed and again after it closed. */
interface Lane {
  state: Promise<ConfirmState> | null;
}

/** Publishes with confirms (see module doc). */
export class RabbitMqPublisher {
  readonly #connection: RabbitMqConnection;
  readonly #timeoutMs: number;
  /** The channel of messages up to {@link LARGE_MESSAGE_BYTES}. */
  readonly #common: Lane = { state: null };
  /** The channel of longer ones, one message at a time. */
  readonly #large: Lane = { state: null };
  /** The end of the line of long messages. */
  #largeTail: Promise<unknown> = Promise.resolve();
  /** The server's `max_message_size`, once a refusal told it (see module doc). */
  #maxMessageSize: number | undefined;

  constructor(connection: RabbitMqConnection, timeoutMs: number) {
    this.#connection = connection;
    this.#timeoutMs = timeoutMs;
  }

  /**
   * Publishes `content` to queue `queue` through the default exchange and waits for the confirm.
   * @throws BrokerConnectionError (see module doc)
   */
  send(queue: string, content: Buffer, options: AmqpPublishOptions): Promise<void> {
    if (content.length <= LARGE_MESSAGE_BYTES) return this.#sendOn(this.#common, queue, content, options);
    // the publish timeout starts when the message's turn comes
    const turn = this.#largeTail.then(() => this.#sendOn(this.#large, queue, content, options));
    this.#largeTail = turn.catch(() => undefined);
    return turn;
  }

  async #sendOn(lane: Lane, queue: string, content: Buffer, options: AmqpPublishOptions): Promise<void> {
    const max = this.#maxMessageSize;
    if (max !== undefined && content.length > max) {
      throw new MessageTooLargeError(content.length, max, { source: MAX_SIZE_SOURCE });
    }
    const deadline = Date.now() + this.#timeoutMs;
    const state = await this.#open(lane, deadline);
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
            finish(this.#refusal(queue, content, state.closeReason, error));
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

  /** The error of a message RabbitMQ did not confirm: `error` from amqplib, `closeReason` from the server. */
  #refusal(queue: string, content: Buffer, closeReason: string | undefined, error: unknown): Error {
    const tooLarge = sizeRefusal(closeReason);
    if (tooLarge !== undefined) {
      this.#maxMessageSize = tooLarge.max;
      if (content.length > tooLarge.max) {
        return new MessageTooLargeError(content.length, tooLarge.max, { source: MAX_SIZE_SOURCE, cause: error });
      }
    }
    if (closeReason !== undefined) {
      return new BrokerConnectionError(
        `RabbitMQ closed the publish channel before confirming a message for queue "${queue}" (${closeReason}); its outcome is unknown`,
        { cause: error },
      );
    }
    return new BrokerConnectionError(
      `RabbitMQ refused a message for queue "${queue}" (${describe(error)}; a queue with ` +
        "x-max-length rejects publishes when full)",
      { cause: error },
    );
  }

  /** Closes the confirm channels (waiting for outstanding confirms is the callers' business). */
  async close(): Promise<void> {
    await Promise.all(
      [this.#common, this.#large].map(async (lane) => {
        const state = await lane.state?.catch(() => null);
        lane.state = null;
        if (state?.isOpen) await state.channel.close().catch(() => {});
      }),
    );
  }

  async #open(lane: Lane, deadline: number): Promise<ConfirmState> {
    for (let current = lane.state; current; current = lane.state) {
      const existing = await current.catch(() => null);
      if (existing?.isOpen) return existing;
      // another caller may have replaced the closed channel meanwhile: use theirs
      if (lane.state === current) break;
    }
    const created = this.#create(deadline);
    lane.state = created;
    created.catch(() => {
      if (lane.state === created) lane.state = null;
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
    const state: ConfirmState = { channel, isOpen: true, returned: new Set(), closeReason: undefined };
    channel.on("error", (error: unknown) => {
      state.closeReason = describe(error);
    });
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

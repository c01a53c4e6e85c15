/**
 * The pull-based consumer over `basic.consume`: one channel per consumer with
 * `basic.qos(prefetchCount)`; RabbitMQ pushes up to `prefetchCount` unacknowledged messages
 * into a local buffer and `fetch` hands out up to `max` of them, preferring earlier queues.
 * A consumer that has nothing in flight, nothing buffered and no `fetch` waiting cancels its
 * subscription (before sending the settle that made it idle) and subscribes again on its
 * next `fetch`, so an idle consumer does not collect messages other consumers ask for.
 * Bound: it holds at most its callers' capacity (in flight) plus `prefetchCount` (buffered).
 * Each subscription has a consumer tag of its own (RabbitMQ counts prefetch per tag: an ack
 * of a message delivered under a cancelled tag must not free credit of the next one), and a
 * consumer subscribes again only once the messages that were on their way to the cancelled
 * subscription are handed out (its buffer is empty). "Idle" is decided one event-loop turn
 * after the last settle, so a worker that asks for more at once keeps its subscription.
 * On `stopFetching()` (a worker stops and lets its running jobs finish), the consumer cancels
 * its subscription at once and gives back (`basic.nack`, requeue) what it holds unfetched, so
 * it takes no more messages while its jobs finish: pushed meanwhile, they would go back only
 * when its channel closes. (A message given back either way is marked redelivered, with a
 * delivery counted on quorum queues.) A later `fetch` subscribes again.
 *
 * Leases: RabbitMQ keeps a delivered message assigned while the channel lives (no renewal
 * needed; the server's `consumer_timeout`, default 30 min, closes a channel that holds a
 * message longer, and the message is redelivered). When the channel closes (consumer
 * closed, connection lost) RabbitMQ requeues its unacknowledged messages at once, so
 * `claimMinIdle` does not apply. While the consume connection is down, `fetch` waits up to
 * 2 s for it and then throws {@link BrokerConnectionError}; the next `fetch` after the
 * connection is back opens a new channel and consumes again (topology declared again).
 * A message whose body cannot be read (empty, not UTF-8) is handed out with its `problem`: the
 * worker rejects it as any undecodable message (SPEC §8): to the DLQ with the reason and its raw
 * bytes, or acknowledged and logged when its DLQ is off; it never runs.
 * @module
 */
import { isUtf8 } from "node:buffer";
import { randomBytes } from "node:crypto";
import type { Logger } from "../../core/logger.js";
import { nextTurn } from "../../core/sleep.js";
import { BrokerConnectionError, ChicoryError } from "../../errors.js";
import type { Consumer, ConsumerOptions, Delivery } from "../broker.js";
import type { RabbitMqConnection } from "./rabbitmq-connection.js";
import { remainingDelayMs } from "./rabbitmq-delays.js";
import { type ConsumerSession, RabbitMqDelivery } from "./rabbitmq-delivery.js";
import type { AmqpMessage } from "./rabbitmq-driver.js";
import type { RabbitMqSender } from "./rabbitmq-sender.js";

/** What a consumer needs from its broker. */
export interface ConsumerHost {
  readonly connection: RabbitMqConnection;
  readonly sender: RabbitMqSender;
  readonly prefetchCount: number;
  readonly logger: Logger;
  /** Queue names were declared but a consume failed (queue deleted): declare again. */
  forgetTopology(): void;
  /** Called once when the consumer closes. */
  onClose(consumer: RabbitMqConsumer): void;
}

/** Longest a `fetch` waits for a message before returning `[]`. */
const FETCH_WAIT_MS = 5000;
/** Longest a `fetch` waits for a lost connection before throwing. */
const RECONNECT_WAIT_MS = 2000;
/** Pause before a message whose re-delay failed is requeued. */
const INTERNAL_RETRY_MS = 1000;

interface Buffered {
  readonly session: ConsumerSession;
  readonly message: AmqpMessage;
  /** Why its body cannot be read, if so. */
  readonly problem?: string | undefined;
}

let sessionIds = 0;
let subscriptionIds = 0;

/** See module doc. */
export class RabbitMqConsumer implements Consumer {
  readonly #host: ConsumerHost;
  readonly #queues: readonly string[];
  readonly #tagPrefix: string;
  readonly #buffers = new Map<string, Buffered[]>();
  readonly #inFlightByQueue = new Map<string, number>();
  #session: ConsumerSession | null = null;
  #opening: Promise<ConsumerSession> | null = null;
  #subscription: Promise<void> = Promise.resolve();
  #waiters = new Set<() => void>();
  #fetching = 0;
  #inFlight = 0;
  #isClosed = false;
  /** `stopFetching()` was called and no fetch came since: take no more messages. */
  #isStopped = false;

  constructor(host: ConsumerHost, options: ConsumerOptions) {
    if (options.queues.length === 0) throw new ChicoryError("a consumer needs at least one queue");
    this.#host = host;
    this.#queues = [...new Set(options.queues)];
    this.#tagPrefix = `${options.consumerId.slice(0, 160)}.${randomBytes(4).toString("hex")}`;
    for (const queue of this.#queues) this.#buffers.set(queue, []);
  }

  /** {@inheritDoc Consumer.isClosed} */
  get isClosed(): boolean {
    return this.#isClosed;
  }

  /** {@inheritDoc Consumer.inFlight} */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** The queues this consumer reads. */
  get queues(): readonly string[] {
    return this.#queues;
  }

  /** Deliveries of `queue` handed out and not settled. */
  pendingCount(queue: string): number {
    return this.#inFlightByQueue.get(queue) ?? 0;
  }

  /** Messages of `queue` pushed to this consumer and not yet handed out by `fetch`. */
  bufferedCount(queue: string): number {
    return this.#buffers.get(queue)?.filter((entry) => entry.session.isOpen).length ?? 0;
  }

  /** True while this consumer has an open channel but no subscription (idle). */
  get isIdle(): boolean {
    return !this.#isClosed && this.#session?.isOpen === true && this.#session.tags === null;
  }

  /** {@inheritDoc Consumer.fetch} */
  async fetch(max: number, signal: AbortSignal): Promise<Delivery[]> {
    if (max < 1) return [];
    this.#isStopped = false;
    const deadline = Date.now() + FETCH_WAIT_MS;
    this.#fetching += 1;
    try {
      while (!this.#isClosed && !signal.aborted && !this.#isStopped) {
        const session = await this.#ensureSession();
        const taken = this.#take(Math.floor(max));
        if (taken.length > 0) return taken;
        if (Date.now() >= deadline) return [];
        if (session.tags === null && session.isOpen) {
          await this.#syncSubscription().catch((error: unknown) => {
            throw new BrokerConnectionError(`RabbitMQ consume failed: ${(error as Error).message}`, { cause: error });
          });
          continue; // messages may have arrived meanwhile
        }
        await this.#wait(deadline, signal);
      }
      return [];
    } finally {
      this.#fetching -= 1;
    }
  }

  /** {@inheritDoc Consumer.close} */
  async close(): Promise<void> {
    if (this.#isClosed) return;
    this.#isClosed = true;
    this.#wake();
    this.#host.onClose(this);
    const session = this.#session ?? (await this.#opening?.catch(() => null)) ?? null;
    this.#session = null;
    for (const buffer of this.#buffers.values()) buffer.length = 0;
    // closing the channel requeues everything it holds (buffered and unsettled)
    if (session?.isOpen) await session.channel.close().catch(() => {});
  }

  /** {@inheritDoc Consumer.stopFetching} (see module doc) */
  stopFetching(): void {
    if (this.#isClosed) return;
    this.#isStopped = true;
    this.#wake();
    this.#syncSubscription().catch((error: unknown) => {
      this.#host.logger.debug({ err: (error as Error).message }, "rabbitmq cancel on stop failed");
    });
  }

  async #ensureSession(): Promise<ConsumerSession> {
    if (this.#session?.isOpen) return this.#session;
    this.#opening ??= this.#open().finally(() => {
      this.#opening = null;
    });
    return this.#opening;
  }

  async #open(): Promise<ConsumerSession> {
    const { connection, sender, prefetchCount, logger } = this.#host;
    const amqp = await connection.ready(RECONNECT_WAIT_MS);
    for (const queue of this.#queues) await sender.ensureQueue(queue);
    let session: ConsumerSession;
    try {
      const channel = await amqp.createChannel();
      session = { channel, id: ++sessionIds, isOpen: true, tags: null, inFlight: 0 };
      channel.on("error", (error) => {
        session.closedBecause = error.message;
        logger.debug({ err: error.message }, "rabbitmq consumer channel error");
      });
      channel.on("close", () => this.#onChannelClose(session));
      await channel.prefetch(prefetchCount);
    } catch (error) {
      throw new BrokerConnectionError(`RabbitMQ consumer channel could not be opened: ${(error as Error).message}`, {
        cause: error,
      });
    }
    if (this.#isClosed) await session.channel.close().catch(() => {});
    else this.#session = session;
    return session;
  }

  /** Subscribes while messages are wanted, cancels when idle; serialized, re-evaluated per step. */
  #syncSubscription(): Promise<void> {
    const step = this.#subscription.then(() => this.#applySubscription());
    this.#subscription = step.catch(() => {});
    return step;
  }

  async #applySubscription(): Promise<void> {
    const session = this.#session;
    if (!session?.isOpen || this.#isClosed) return;
    const hasBuffered = this.#hasBuffered();
    const isWanted = !this.#isStopped && (this.#fetching > 0 || this.#inFlight > 0 || hasBuffered);
    if (isWanted && session.tags === null && !hasBuffered) {
      const subscription = ++subscriptionIds;
      const tags: string[] = [];
      session.tags = tags;
      try {
        for (const [index, queue] of this.#queues.entries()) {
          const { work } = await this.#host.sender.ensureQueue(queue);
          const reply = await session.channel.consume(work, (message) => this.#onMessage(session, queue, message), {
            noAck: false,
            consumerTag: `${this.#tagPrefix}.${session.id}.${subscription}.${index}`,
          });
          tags.push(reply.consumerTag);
        }
      } catch (error) {
        // e.g. the queue was deleted (404 closes the channel): declare again on the next try
        this.#host.forgetTopology();
        this.#host.logger.warn({ err: (error as Error).message }, "rabbitmq consume failed");
        session.channel.close().catch(() => {});
        throw error;
      }
    } else if (!isWanted && session.tags !== null) {
      const tags = session.tags;
      session.tags = null;
      for (const tag of tags) await session.channel.cancel(tag);
    }
    // Stopped: after the cancel-ok nothing more arrives; what came before goes back now, to be
    // taken by other consumers at once rather than when this channel closes.
    if (this.#isStopped && session.isOpen && session.tags === null) this.#requeueBuffered(session);
  }

  #requeueBuffered(session: ConsumerSession): void {
    for (const buffer of this.#buffers.values()) {
      for (const entry of buffer.splice(0)) {
        if (entry.session !== session) continue;
        try {
          session.channel.nack(entry.message, false, true);
        } catch {
          return; // the channel closed meanwhile: RabbitMQ requeued everything it held
        }
      }
    }
  }

  #onChannelClose(session: ConsumerSession): void {
    session.isOpen = false;
    if (this.#session === session) this.#session = null;
    if (!this.#isClosed && session.inFlight > 0) {
      // said to the worker's logger: the connection's own log goes to the broker's (silent unless given one)
      const reason = session.closedBecause;
      const isAckTimeout = reason !== undefined && /acknowledgement .*timed out/i.test(reason);
      this.#host.logger.warn(
        { queues: this.#queues, inFlight: session.inFlight, ...(reason === undefined ? {} : { reason }) },
        isAckTimeout
          ? "rabbitmq: the channel that delivered the jobs running here closed: a job ran longer than RabbitMQ's " +
              `consumer_timeout (${reason}); RabbitMQ requeues their messages, so they may run again, on another worker ` +
              "or this one, and the runs under way cannot acknowledge theirs: raise consumer_timeout above the longest " +
              "task (docs/brokers/rabbitmq.md)"
          : "rabbitmq: the channel that delivered the jobs running here closed (the connection was lost: a network cut, a " +
              "RabbitMQ restart, or this process blocked past the AMQP heartbeat or consumer_timeout; or the consumer was " +
              `cancelled${reason === undefined ? "" : `; the server said: ${reason}`}); RabbitMQ requeues their messages, ` +
              "so they may run again, on another worker or this one",
      );
    }
    // RabbitMQ requeued them; the next channel receives them again
    for (const [queue, buffer] of this.#buffers) {
      this.#buffers.set(
        queue,
        buffer.filter((entry) => entry.session !== session),
      );
    }
    this.#wake();
  }

  #onMessage(session: ConsumerSession, queue: string, message: AmqpMessage | null): void {
    if (message === null) {
      // the server cancelled the consumer (queue deleted): start over on a new channel
      this.#host.logger.warn({ queue }, "rabbitmq cancelled the consumer (queue deleted?); consuming again");
      this.#host.forgetTopology();
      session.channel.close().catch(() => {});
      return;
    }
    const problem =
      message.content.length === 0
        ? "empty_body: the message has no body"
        : !isUtf8(message.content)
          ? "decode_error: the message body is not valid UTF-8"
          : undefined;
    const remainingMs = problem === undefined ? remainingDelayMs(message.properties.headers) : 0;
    if (remainingMs > 0) {
      this.#redelay(session, queue, message, remainingMs);
      return;
    }
    this.#buffers.get(queue)?.push({ session, message, problem });
    this.#wake();
  }

  /** A delayed message not due yet (longer than the top delay level): on to the next delay queue. */
  #redelay(session: ConsumerSession, queue: string, message: AmqpMessage, remainingMs: number): void {
    const { sender, logger } = this.#host;
    const delivery = new RabbitMqDelivery({ queue, message, session, sender, logger, beforeSettle: async () => {} });
    delivery.redelay(remainingMs).catch((error: unknown) => {
      logger.warn({ queue, err: (error as Error).message }, "rabbitmq could not re-delay a message; requeueing it");
      setTimeout(() => void delivery.release(), INTERNAL_RETRY_MS).unref();
    });
  }

  #take(max: number): Delivery[] {
    const out: Delivery[] = [];
    const { sender, logger } = this.#host;
    for (const queue of this.#queues) {
      const buffer = this.#buffers.get(queue) ?? [];
      while (out.length < max && buffer.length > 0) {
        const entry = buffer.shift();
        if (!entry?.session.isOpen) continue;
        const session = entry.session;
        this.#inFlight += 1;
        session.inFlight += 1;
        this.#inFlightByQueue.set(queue, (this.#inFlightByQueue.get(queue) ?? 0) + 1);
        const beforeSettle = () => {
          this.#inFlight -= 1;
          session.inFlight -= 1;
          this.#inFlightByQueue.set(queue, (this.#inFlightByQueue.get(queue) ?? 1) - 1);
          // cancel before the settle frame when this makes the consumer idle (see module doc)
          return this.#inFlight === 0 && this.#fetching === 0 ? this.#cancelIfStillIdle() : Promise.resolve();
        };
        out.push(
          new RabbitMqDelivery({
            queue,
            message: entry.message,
            session: entry.session,
            sender,
            logger,
            beforeSettle,
            problem: entry.problem,
          }),
        );
      }
    }
    return out;
  }

  /**
   * Cancels the subscription if, one event-loop turn later, nobody fetched meanwhile (the
   * worker's loop usually asks for more as soon as its other jobs settled).
   */
  async #cancelIfStillIdle(): Promise<void> {
    await nextTurn();
    await this.#syncSubscription();
  }

  #hasBuffered(): boolean {
    for (const buffer of this.#buffers.values()) if (buffer.some((entry) => entry.session.isOpen)) return true;
    return false;
  }

  #wait(deadline: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        this.#waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(1, deadline - Date.now()));
      signal.addEventListener("abort", done, { once: true });
      this.#waiters.add(done);
    });
  }

  #wake(): void {
    for (const waiter of [...this.#waiters]) waiter();
  }
}

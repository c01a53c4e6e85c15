/**
 * One AMQP connection that heals itself: after an unexpected close (RabbitMQ restart,
 * network drop, `rabbitmqctl close_connection`) it reconnects in the background with capped
 * exponential backoff until it is closed on purpose. Callers never get a half-dead
 * connection: {@link RabbitMqConnection.ready} waits (bounded) for the next one or throws a
 * {@link BrokerConnectionError}. Channels are never carried over to a new connection; their
 * owners notice the channel's `close` event and open new ones (so no delivery tag of an old
 * channel is ever used on a new one).
 * @module
 */
import type { Logger } from "../../core/logger.js";
import { warnTlsUnverified } from "../../core/tls.js";
import { maskUrl, redactSecrets, urlPassword } from "../../core/url.js";
import { BrokerConnectionError, ChicoryError } from "../../errors.js";
import { type AmqpChannel, type AmqpConnection, loadAmqplib } from "./rabbitmq-driver.js";

/** Settings of a {@link RabbitMqConnection}. */
export interface RabbitMqConnectionOptions {
  /** Full AMQP URL (with credentials). */
  readonly url: string;
  /** What the connection is for; shown in RabbitMQ as `<connectionName>:<role>`. */
  readonly role: "publish" | "consume";
  /** Prefix of the connection name shown in RabbitMQ. */
  readonly connectionName: string;
  /** TLS options for `amqps://` (merged into the socket options). */
  readonly tls?: Record<string, unknown> | undefined;
  /** First reconnect delay. */
  readonly reconnectDelayMs: number;
  /** Longest reconnect delay. */
  readonly maxReconnectDelayMs: number;
  /** Logger for state changes. */
  readonly logger: Logger;
}

const CONNECT_TIMEOUT_MS = 10_000;

/** A self-healing AMQP connection (see module doc). */
export class RabbitMqConnection {
  readonly #options: RabbitMqConnectionOptions;
  readonly #displayUrl: string;
  #current: AmqpConnection | null = null;
  #connecting: Promise<AmqpConnection> | null = null;
  #timer: NodeJS.Timeout | null = null;
  #attempt = 0;
  #generation = 0;
  #lastError: unknown = null;
  #isClosed = false;
  #waiters = new Set<() => void>();
  #admin: Promise<AmqpChannel> | null = null;

  constructor(options: RabbitMqConnectionOptions) {
    this.#options = options;
    this.#displayUrl = maskUrl(options.url);
  }

  /** True while connected. */
  get isUp(): boolean {
    return this.#current !== null;
  }

  /** Increases with every successful (re)connection. */
  get generation(): number {
    return this.#generation;
  }

  /**
   * Connects now if not connected (one attempt, no backoff).
   * @throws BrokerConnectionError when RabbitMQ cannot be reached
   */
  async open(): Promise<AmqpConnection> {
    this.#isClosed = false;
    if (this.#current) return this.#current;
    try {
      return await this.#connectOnce();
    } catch (error) {
      throw this.#wrap(error);
    }
  }

  /** Allows (re)connecting after {@link close}; the connection itself opens on first use. */
  enable(): void {
    this.#isClosed = false;
  }

  /**
   * The live connection, waiting up to `timeoutMs` for a reconnection in progress (and
   * starting one when none is).
   * @throws BrokerConnectionError when none is up within `timeoutMs`
   */
  async ready(timeoutMs: number): Promise<AmqpConnection> {
    if (this.#current) return this.#current;
    if (this.#isClosed) throw new BrokerConnectionError(`RabbitMQ ${this.#options.role} connection is closed`);
    this.#scheduleReconnect();
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.#waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      this.#waiters.add(done);
    });
    if (this.#current) return this.#current;
    throw this.#wrap(this.#lastError, "is down (reconnecting in the background)");
  }

  /**
   * A shared plain channel for declarations and queue statistics on the current
   * connection (re-created after it closes). Operations that may fail with a channel
   * error (passive checks of queues that may not exist) should use {@link withChannel}.
   */
  async adminChannel(timeoutMs: number): Promise<AmqpChannel> {
    const connection = await this.ready(timeoutMs);
    if (!this.#admin) {
      const created = connection.createChannel().then((channel) => {
        channel.on("error", (error) =>
          this.#options.logger.debug({ err: error.message }, "rabbitmq admin channel error"),
        );
        channel.on("close", () => {
          if (this.#admin === created) this.#admin = null;
        });
        return channel;
      });
      created.catch(() => {
        if (this.#admin === created) this.#admin = null;
      });
      this.#admin = created;
    }
    return this.#admin;
  }

  /** Runs `fn` on a fresh channel that is closed afterwards (unacked messages go back). */
  async withChannel<T>(timeoutMs: number, fn: (channel: AmqpChannel) => Promise<T>): Promise<T> {
    const connection = await this.ready(timeoutMs);
    const channel = await connection.createChannel();
    let isOpen = true;
    channel.on("error", () => {});
    channel.on("close", () => {
      isOpen = false;
    });
    try {
      return await fn(channel);
    } finally {
      if (isOpen) await channel.close().catch(() => {});
    }
  }

  /** Closes the connection and stops reconnecting; idempotent. */
  async close(): Promise<void> {
    this.#isClosed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    const current = this.#current ?? (await this.#connecting?.catch(() => null)) ?? null;
    this.#current = null;
    this.#admin = null;
    this.#wake();
    if (current) await current.close().catch(() => {});
  }

  #connectOnce(): Promise<AmqpConnection> {
    this.#connecting ??= this.#connect().finally(() => {
      this.#connecting = null;
    });
    return this.#connecting;
  }

  async #connect(): Promise<AmqpConnection> {
    const amqp = await loadAmqplib();
    const { role, connectionName, logger } = this.#options;
    if (this.#options.tls?.rejectUnauthorized === false) {
      warnTlsUnverified(`RabbitMQ ${role} connection`, this.#displayUrl, "CHICORY_BROKER_RABBITMQ");
    }
    const connection = await amqp.connect(this.#options.url, {
      ...this.#options.tls,
      clientProperties: { connection_name: `${connectionName}:${role}` },
      timeout: CONNECT_TIMEOUT_MS,
      noDelay: true,
    });
    if (this.#isClosed) {
      await connection.close().catch(() => {});
      throw new BrokerConnectionError(`RabbitMQ ${role} connection was closed while connecting`);
    }
    connection.on("error", (error) => {
      this.#lastError = error;
    });
    connection.on("blocked", (reason) => logger.warn({ reason, role }, "rabbitmq connection blocked by the broker"));
    connection.on("unblocked", () => logger.info({ role }, "rabbitmq connection unblocked"));
    connection.on("close", (error) => this.#onClose(connection, error));
    this.#current = connection;
    this.#attempt = 0;
    this.#generation += 1;
    this.#wake();
    return connection;
  }

  #onClose(connection: AmqpConnection, error: Error | undefined): void {
    if (this.#current !== connection) return;
    this.#current = null;
    this.#admin = null;
    if (this.#isClosed) return;
    this.#lastError = error ?? this.#lastError ?? new Error("connection closed");
    this.#options.logger.warn(
      { role: this.#options.role, url: this.#displayUrl, err: this.#message(this.#lastError) },
      "rabbitmq connection lost; reconnecting",
    );
    this.#scheduleReconnect();
  }

  #scheduleReconnect(): void {
    if (this.#isClosed || this.#timer || this.#connecting || this.#current) return;
    const { reconnectDelayMs, maxReconnectDelayMs } = this.#options;
    const baseMs = this.#attempt === 0 ? 0 : Math.min(maxReconnectDelayMs, reconnectDelayMs * 2 ** (this.#attempt - 1));
    const delayMs = baseMs * (0.8 + 0.2 * Math.random());
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#connectOnce().then(
        () => this.#options.logger.info({ role: this.#options.role }, "rabbitmq connection restored"),
        (error: unknown) => {
          this.#lastError = error;
          this.#attempt += 1;
          this.#options.logger.warn(
            { role: this.#options.role, url: this.#displayUrl, attempt: this.#attempt, err: this.#message(error) },
            "rabbitmq reconnect failed",
          );
          this.#scheduleReconnect();
        },
      );
    }, delayMs);
    this.#timer.unref();
  }

  #wake(): void {
    for (const waiter of [...this.#waiters]) waiter();
    this.#waiters.clear();
  }

  #message(error: unknown): string {
    const text = error instanceof Error ? error.message : String(error ?? "unknown error");
    // amqplib's words when the server closes a connection it is opening, which it does for a
    // virtual host that does not exist or that the user may not use
    const hint = /Expected ConnectionOpenOk/.test(text)
      ? " (RabbitMQ closed the connection as it opened: does the URL's virtual host exist, and may the user use it?)"
      : "";
    return redactSecrets(`${text}${hint}`, urlPassword(this.#options.url));
  }

  #wrap(error: unknown, state = "failed"): ChicoryError {
    if (error instanceof ChicoryError) return error;
    return new BrokerConnectionError(
      `RabbitMQ ${this.#options.role} connection to ${this.#displayUrl} ${state}: ${this.#message(error)}`,
      { cause: error },
    );
  }
}

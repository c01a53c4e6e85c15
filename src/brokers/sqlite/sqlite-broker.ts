/**
 * The SQLite broker: the embedded default. One database file (WAL mode) holds the queue,
 * the delayed jobs and the dead letters, so producers and workers in several processes of
 * one host cooperate with no server.
 *
 * Semantics:
 * - `publish` resolves after the row is committed (durable across a process crash; with
 *   `synchronous: "FULL"` also across power loss). A unique publish inserts nothing while a
 *   job with the same task id is waiting, delayed or in flight on that queue.
 * - Delivery is at-least-once: a claim leases rows to one consumer for `claimMinIdleMs`; a live
 *   consumer renews its leases, and a dead one's jobs are claimed again after the lease
 *   expires, with `deliveryCount + 1`. Settlements are fenced by lease holder and delivery
 *   count: a consumer that lost its lease changes nothing (a warning is logged).
 * - Ordering: per queue by priority (higher first), then publish order; a multi-queue consumer
 *   drains its queues in the order given. Delayed jobs are never handed out before their time
 *   (all processes read the same host clock).
 * - Connections: the broker opens one connection (better-sqlite3, synchronous) unless a ready
 *   `database` was given, which the caller owns. Statements briefly block the event loop;
 *   a lock held by another process is waited for up to `busyTimeoutMs`.
 * - `sqlite::memory:` lives in one connection: a single broker instance of one process.
 * @module
 */

import { DisconnectGate, overtakenMessage, SharedOpen } from "../../core/disconnect-gate.js";
import { staleMs } from "../../core/duration.js";
import { MessageCodec, peekMessage, truncateError } from "../../core/message.js";
import { assertValidName } from "../../core/names.js";
import { BrokerConnectionError, ChicoryError, ConfigurationError, ValidationError } from "../../errors.js";
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
import {
  dlqListCount,
  guardedReplay,
  replayedTaskId,
  replayRefusedError,
  rewriteForReplay,
  toDlqMessage,
} from "../dlq.js";
import { type DlqRow, SqliteAdmin } from "./sqlite-admin.js";
import { SqliteConsumer, type SqliteConsumerHost } from "./sqlite-consumer.js";
import type { SqliteDatabase } from "./sqlite-database.js";
import {
  type ResolvedSqliteBrokerOptions,
  resolveSqliteBrokerOptions,
  type SqliteBrokerOptions,
} from "./sqlite-options.js";
import { migrateSqliteSchema } from "./sqlite-schema.js";
import { SqliteStore } from "./sqlite-store.js";

const DEFAULT_QUEUE = "default";

interface Connection {
  readonly db: SqliteDatabase;
  readonly store: SqliteStore;
  readonly admin: SqliteAdmin;
}

/**
 * A {@link Broker} on a SQLite file (better-sqlite3 12).
 * @example
 * ```ts
 * import { Chicory } from "chicory";
 * import { SqliteBroker } from "chicory/sqlite";
 *
 * const app = new Chicory({ broker: new SqliteBroker({ path: "./jobs.db" }) });
 * ```
 */
export class SqliteBroker implements Broker {
  /** {@inheritDoc Broker.kind} */
  readonly kind = "sqlite";
  /** {@inheritDoc Broker.capabilities} */
  readonly capabilities: BrokerCapabilities;
  /** {@inheritDoc Broker.displayUrl} */
  readonly displayUrl: string;
  /** The database file (or `":memory:"`). */
  readonly path: string;
  readonly #options: ResolvedSqliteBrokerOptions;
  readonly #consumers = new Set<SqliteConsumer>();
  readonly #host: SqliteConsumerHost;
  #codec = new MessageCodec();
  #replayGuard: DlqReplayGuard | undefined;
  #connection: Connection | undefined;
  readonly #connecting = new SharedOpen();
  /** The `disconnect()` under way, if any: a `connect()` meanwhile opens once it is done. */
  readonly #disconnecting = new DisconnectGate();

  constructor(options: SqliteBrokerOptions = {}) {
    this.#options = resolveSqliteBrokerOptions(options);
    this.path = this.#options.path;
    this.displayUrl = `sqlite:${this.path}`;
    const isFile = this.path !== ":memory:" && this.path !== "";
    this.capabilities = {
      priorities: true,
      delayedDelivery: true,
      uniqueIds: true,
      durable: isFile,
      multiProcess: isFile,
    };
    this.#host = {
      store: () => this.#connected().store,
      options: this.#options,
      notify: (queue) => this.#notify(queue),
      unregister: (consumer) => this.#consumers.delete(consumer),
      wrap: (error, operation) => this.#wrap(error, operation),
    };
  }

  /** {@inheritDoc Broker.bind} */
  bind(binding: BrokerBinding): void {
    this.#codec = binding.codec;
    this.#replayGuard = binding.guardReplay;
  }

  /**
   * Opens the database; idempotent. After a `disconnect()` still under way, once it is done;
   * rejects when a `disconnect()` made after the call overtakes it.
   */
  connect(): Promise<void> {
    return this.#disconnecting.connect(
      () => (this.#connection ? Promise.resolve() : this.#connecting.run(() => this.#open())),
      () => new BrokerConnectionError(overtakenMessage("sqlite broker", this.displayUrl)),
    );
  }

  /** Closes the consumers and the database (not a database given); idempotent. */
  disconnect(): Promise<void> {
    return this.#disconnecting.closing(this.#disconnect());
  }

  async #disconnect(): Promise<void> {
    await this.#connecting.running?.catch(() => undefined);
    const connection = this.#connection;
    if (!connection) return;
    for (const consumer of [...this.#consumers]) await consumer.close();
    this.#connection = undefined;
    if (this.#options.database === undefined) {
      try {
        connection.db.close();
      } catch (error) {
        this.#options.logger.warn({ err: error }, `sqlite broker: closing ${this.displayUrl} failed`);
      }
    }
  }

  /** Writes an already acknowledged message (an `at_most_once` failure) into `queue`'s DLQ. */
  async writeDeadLetter(queue: string, body: string, reason: string): Promise<void> {
    assertValidName(queue, "queue");
    const { store } = this.#connected();
    const message = peekMessage(body);
    const taskId = typeof message?.id === "string" ? message.id : "";
    const retries = typeof message?.retries === "number" ? message.retries : 0;
    try {
      store.writeDeadLetter(queue, taskId, body, truncateError(reason), retries, Date.now());
    } catch (error) {
      throw this.#wrap(error, "writeDeadLetter");
    }
  }

  /** {@inheritDoc Broker.publish} */
  async publish(queue: string, message: OutgoingMessage): Promise<PublishResult> {
    assertValidName(queue, "queue");
    const { store } = this.#connected();
    const now = Date.now();
    const delayMs =
      Number.isFinite(message.delayMs) && (message.delayMs ?? 0) > 0 ? Math.ceil(message.delayMs ?? 0) : 0;
    const priority = Math.min(255, Math.max(0, Math.trunc(message.priority ?? 0) || 0));
    let isPublished: boolean;
    try {
      isPublished = store.insert(
        {
          queue,
          taskId: message.id,
          body: message.body,
          priority,
          availableAt: now + delayMs,
          uniqueKey: message.unique ? message.id : null,
        },
        now,
      );
    } catch (error) {
      throw this.#wrap(error, "publish");
    }
    // also for delayed jobs: a waiting consumer of this process learns when the job comes due
    if (isPublished) this.#notify(queue);
    return { published: isPublished };
  }

  /** {@inheritDoc Broker.consumer} */
  consumer(options: ConsumerOptions): Consumer {
    if (options.queues.length === 0) throw new ConfigurationError("a SQLite consumer needs at least one queue");
    for (const queue of options.queues) assertValidName(queue, "queue");
    const consumer = new SqliteConsumer(this.#host, options.consumerId, options.queues, options.logger);
    this.#consumers.add(consumer);
    return consumer;
  }

  /** {@inheritDoc BrokerAdmin.getDlqMessages} */
  async getDlqMessages(queue = DEFAULT_QUEUE, count = 100): Promise<DlqMessage[]> {
    const size = dlqListCount("getDlqMessages", count);
    return toDlqMessages(this.#admin("list DLQ", (admin) => admin.dlqList(queue, size)));
  }

  /**
   * {@inheritDoc BrokerAdmin.getDlqMessagesAfter} Row ids only grow (`AUTOINCREMENT`), so an
   * entry dead-lettered later is never skipped; an id that is not a row id is a `ValidationError`.
   */
  async getDlqMessagesAfter(afterMessageId: string, queue = DEFAULT_QUEUE, count = 100): Promise<DlqMessage[]> {
    const afterId = parseRowId(afterMessageId);
    if (afterId === undefined) {
      throw new ValidationError(
        `DLQ message id ${JSON.stringify(afterMessageId.slice(0, 64))} is not a SQLite DLQ row id (a whole number, e.g. 42)`,
      );
    }
    const size = dlqListCount("getDlqMessagesAfter", count);
    return toDlqMessages(this.#admin("list DLQ", (admin) => admin.dlqListAfter(queue, afterId, size)));
  }

  /** {@inheritDoc BrokerAdmin.replayFromDlq} */
  async replayFromDlq(messageId: string, queue?: string, resetRetries = true): Promise<boolean> {
    const id = parseRowId(messageId);
    if (id === undefined) return false;
    if (queue !== undefined) assertValidName(queue, "queue");
    const row = this.#admin("read DLQ", (admin) => admin.dlqGet(id));
    if (row === undefined) return false;
    const body = rewriteForReplay(this.#codec, row.body, resetRetries, row.error ?? undefined);
    const target = queue ?? row.queue;
    // The row's task id is empty when the body was too large to peek at when it died.
    const taskId = row.task_id || replayedTaskId(body);
    return guardedReplay(this.#replayGuard, taskId, async () => {
      const outcome = this.#admin("replay DLQ", (admin) => admin.dlqReplay(row, target, body, taskId, Date.now()));
      if (outcome === "refused") throw replayRefusedError(messageId, taskId ?? "");
      if (outcome === "replayed") this.#notify(target);
      return outcome === "replayed";
    });
  }

  /** Whether `queue`'s dead letters (default `"default"`) include entry `messageId`. */
  async hasDlqEntry(messageId: string, queue = DEFAULT_QUEUE): Promise<boolean> {
    const id = parseRowId(messageId);
    if (id === undefined) return false;
    assertValidName(queue, "queue");
    const row = this.#admin("read DLQ", (admin) => admin.dlqGet(id));
    return row !== undefined && row.queue === queue;
  }

  /** {@inheritDoc BrokerAdmin.deleteFromDlq} */
  async deleteFromDlq(messageId: string, queue?: string): Promise<boolean> {
    const id = parseRowId(messageId);
    if (id === undefined) return false;
    return this.#admin("delete from DLQ", (admin) => admin.dlqDelete(id, queue ?? null));
  }

  /** {@inheritDoc BrokerAdmin.purgeDlq} */
  async purgeDlq(queue = DEFAULT_QUEUE): Promise<number> {
    return this.#admin("purge DLQ", (admin) => admin.dlqPurge(queue));
  }

  /** {@inheritDoc BrokerAdmin.getDlqCount} */
  async getDlqCount(queue = DEFAULT_QUEUE): Promise<number> {
    return this.#admin("count DLQ", (admin) => admin.dlqCount(queue));
  }

  /** {@inheritDoc BrokerAdmin.getPendingCount} */
  async getPendingCount(queue = DEFAULT_QUEUE): Promise<number> {
    return this.#admin("count pending", (admin) => admin.pendingCount(queue, Date.now()));
  }

  /** {@inheritDoc BrokerAdmin.getQueueSize} */
  async getQueueSize(queue = DEFAULT_QUEUE): Promise<number> {
    return this.#admin("count queue", (admin) => admin.waitingCount(queue, Date.now()));
  }

  /** {@inheritDoc BrokerAdmin.getConsumerCount} */
  async getConsumerCount(queue = DEFAULT_QUEUE): Promise<number> {
    return this.#admin("count consumers", (admin) => admin.consumerCount(queue));
  }

  /** {@inheritDoc BrokerAdmin.purgeQueue} */
  async purgeQueue(queue = DEFAULT_QUEUE): Promise<number> {
    return this.#admin("purge queue", (admin) => admin.purgeQueue(queue, Date.now()));
  }

  /** {@inheritDoc BrokerAdmin.cleanupStaleClients} */
  async cleanupStaleClients(queue = DEFAULT_QUEUE, staleSeconds = 300): Promise<number> {
    const idleMs = staleMs(staleSeconds);
    const now = Date.now();
    return this.#admin("clean up consumers", (admin) => admin.cleanupConsumers(queue, now - idleMs, now));
  }

  /** {@inheritDoc BrokerAdmin.healthcheck} */
  async healthcheck(): Promise<HealthStatus> {
    const connection = this.#connection;
    if (!connection) return { connected: false, error: `sqlite broker ${this.displayUrl} is not connected` };
    const started = performance.now();
    try {
      connection.admin.ping();
      return { connected: true, latencyMs: performance.now() - started };
    } catch (error) {
      return { connected: false, error: this.#wrap(error, "healthcheck").message };
    }
  }

  async #open(): Promise<void> {
    const options = this.#options;
    let db: SqliteDatabase | undefined = options.database;
    try {
      db ??= await options.open(this.path, { busyTimeoutMs: options.busyTimeoutMs });
      const mode = await migrateSqliteSchema(db, options);
      if (this.capabilities.multiProcess && mode !== "wal") {
        options.logger.warn(
          { journalMode: mode },
          `sqlite broker: ${this.displayUrl} is not in WAL mode (the file system may not support it); readers and writers will block each other`,
        );
      }
      const store = new SqliteStore(db);
      this.#connection = { db, store, admin: new SqliteAdmin(db, store) };
    } catch (error) {
      if (db !== undefined && options.database === undefined) {
        try {
          db.close();
        } catch {
          // the open failed half-way; the original error matters more
        }
      }
      throw this.#wrap(error, "connect");
    }
  }

  #connected(): Connection {
    if (!this.#connection) {
      throw new BrokerConnectionError(`sqlite broker ${this.displayUrl} is not connected: call connect() first`);
    }
    return this.#connection;
  }

  #admin<T>(operation: string, fn: (admin: SqliteAdmin) => T): T {
    const { admin } = this.#connected();
    try {
      return fn(admin);
    } catch (error) {
      throw this.#wrap(error, operation);
    }
  }

  #notify(queue: string): void {
    for (const consumer of this.#consumers) consumer.notify(queue);
  }

  #wrap(error: unknown, operation: string): Error {
    if (error instanceof ChicoryError) return error;
    const reason = error instanceof Error ? error.message : String(error);
    return new BrokerConnectionError(`sqlite broker ${this.displayUrl}: ${operation} failed: ${reason}`, {
      cause: error,
    });
  }
}

/** The {@link DlqMessage}s of DLQ rows. */
function toDlqMessages(rows: readonly DlqRow[]): DlqMessage[] {
  return rows.map((row) =>
    toDlqMessage(String(row.id), {
      body: row.body,
      error: row.error,
      failedAt: row.failed_at,
      retryCount: row.retry_count,
    }),
  );
}

/** A DLQ message id as a row id, or undefined when it is not one. */
function parseRowId(messageId: string): number | undefined {
  if (!/^\d{1,15}$/.test(messageId)) return undefined;
  return Number(messageId);
}

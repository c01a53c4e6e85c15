/**
 * The SQL result backend: one implementation for PostgreSQL, MySQL/MariaDB, SQLite and
 * SQL Server over Kysely, with the dialect differences confined to `sql-upsert.ts`,
 * `sql-ddl.ts`, `sql-clock.ts` and the `dialects/` modules.
 *
 * Semantics (see `backend.ts`): writes are single-statement upserts with state precedence;
 * timestamps and TTLs come from the database clock; records expire after the result TTL
 * (expired rows are invisible at once and deleted by `cleanupStaleClients`). Waiters share
 * one batched poll per backend, and on PostgreSQL one LISTEN connection per process wakes
 * them as soon as a terminal write commits.
 *
 * Failure handling: an operation that fails because its connection died is retried (up to
 * four times, each on another connection; every operation here is idempotent), deadlocks are retried up to
 * three times, and anything else rejects with a `BackendConnectionError` (or
 * `DbPoolExhaustedError`), so a worker never acknowledges a message whose result is not
 * stored. Connections belong to the backend unless a pool/database was injected.
 *
 * A `get()` without a timeout waits through an outage; when its reads have failed (or gone
 * unanswered) for 5 s the backend warns once, naming itself (password masked) and the reason,
 * and logs an info line when they succeed again (see `OutageNotice`). The retries of those
 * reads log nothing of their own. Without a logger, warnings are process warnings, once each.
 * @module
 */

import { setMaxListeners } from "node:events";
import type { Kysely } from "kysely";
import type { HealthStatus } from "../../brokers/broker.js";
import { DisconnectGate, overtakenMessage } from "../../core/disconnect-gate.js";
import { staleMs } from "../../core/duration.js";
import type { EnvMap } from "../../core/env.js";
import type { Logger } from "../../core/logger.js";
import { DeadlinePassed, sleep, withinDeadline } from "../../core/sleep.js";
import { processWarningLogger } from "../../core/warn-once.js";
import { BackendConnectionError } from "../../errors.js";
import {
  type Backend,
  isTerminalState,
  type ResultSizeLimit,
  type StoredError,
  type TaskRecord,
  type TaskState,
  type WaitOptions,
  type WorkerStats,
} from "../backend.js";
import { loadKysely, sql } from "./kysely.js";
import { subscribePg } from "./pg-listener.js";
import { nowMs } from "./sql-clock.js";
import { isConnectionError, isTransientConflict, wrapSqlError } from "./sql-errors.js";
import { type SqlTableNames, type TextCodec, tableNames, textCodec } from "./sql-names.js";
import { envPrefix, resolveTableSettings, type SqlTableOptions, type SqlTableSettings } from "./sql-options.js";
import { encodeKey, errorJson, MAX_KEY_LENGTH, millis, toTaskRecord, toWorkerStats } from "./sql-rows.js";
import { ensureSchema } from "./sql-schema.js";
import { SqlOperation } from "./sql-sockets.js";
import type { SqlConnection, SqlDatabase, SqlDialect, SqlFlavor } from "./sql-types.js";
import { upsertHeartbeat, upsertResult } from "./sql-upsert.js";
import { SqlWaitHub } from "./sql-wait-hub.js";

/** Options of {@link SqlBackend}. */
export interface SqlBackendOptions extends SqlTableOptions {
  /** The database: `postgresDialect()`, `mysqlDialect()`, `sqliteDialect()` or `mssqlDialect()`. */
  dialect: SqlDialect;
  /** Environment for `CHICORY_BACKEND_<DB>_*` defaults (default `process.env`). */
  env?: EnvMap | undefined;
  /**
   * Logger for background problems: an outage that waiting `get()`s meet (one warning after 5 s,
   * one info line when results can be read again), lost connections, LISTEN reconnects. Default:
   * warnings become process warnings (code `CHICORY_<KIND>_BACKEND`, e.g.
   * `CHICORY_POSTGRES_BACKEND`), each message once per process.
   */
  logger?: Logger | undefined;
}

/** Ids per `IN (...)` query (well under every database's parameter limit). */
const CHUNK = 500;
/** Room a MySQL upsert takes besides its result (the statement, id, state, name, times): ample. */
const STATEMENT_ROOM_BYTES = 64 * 1024;
/** How often a SQLite backend with waiters reads `data_version` (plus 1 ms per 50 waiting ids). */
const VERSION_CHECK_MS = 20;

/** Tries of an operation after its connection died (or was refused), after the first. */
const CONNECTION_RETRIES = 4;
/** Shortest time between two "retrying on a new connection" warnings of one backend. */
const RETRY_WARN_EVERY_MS = 10_000;

/** An operation still waiting when `disconnect()` had closed its connection (see `#cuts`). */
class CutByDisconnect extends Error {
  constructor() {
    super("the backend was disconnected while the operation waited");
    this.name = "CutByDisconnect";
  }
}

/**
 * A result backend on a SQL database.
 * @example
 * ```ts
 * import { SqlBackend, postgresDialect } from "chicory/sql";
 * const backend = new SqlBackend({ dialect: postgresDialect({ url: "postgres://app@db/app" }) });
 * const app = new Chicory({ broker: "redis://localhost", backend });
 * ```
 */
export class SqlBackend implements Backend {
  /** {@inheritDoc Backend.kind} */
  readonly kind: SqlFlavor;
  /** {@inheritDoc Backend.displayUrl} */
  readonly displayUrl: string;
  /** {@inheritDoc Backend.multiProcess} */
  readonly multiProcess: boolean;
  /** {@inheritDoc Backend.displaySettings} */
  get displaySettings(): string {
    const { tablePrefix, schema } = this.#settings;
    return `table prefix "${tablePrefix}"${schema === undefined ? "" : `, schema "${schema}"`}`;
  }
  readonly #dialect: SqlDialect;
  readonly #settings: SqlTableSettings;
  readonly #names: SqlTableNames;
  readonly #codec: TextCodec;
  readonly #logger: Logger;
  readonly #hub: SqlWaitHub;
  #connection: SqlConnection | undefined;
  /** Connections that disconnect() closed (an operation on one is not retried). */
  readonly #closed = new WeakSet<SqlConnection>();
  /**
   * Per connection: aborted once `disconnect()` has closed it, ending the operations still
   * waiting then (a checkout queued in the pool, which its driver would leave waiting for
   * `poolTimeout`) and the pauses between retries.
   */
  readonly #cuts = new WeakMap<SqlConnection, AbortController>();
  #retryWarnedAtMs = Number.NEGATIVE_INFINITY;
  #retriesNotWarned = 0;
  #connecting: Promise<SqlConnection> | undefined;
  /** The `disconnect()` under way, if any: a `connect()` meanwhile opens once it is done. */
  readonly #disconnecting = new DisconnectGate();
  /** The `connect()` under way: whether a `disconnect()` cut it, and its connection once made. */
  #opening: { isCut: boolean; connection: SqlConnection | undefined } | undefined;
  #unlisten: (() => Promise<void>) | undefined;
  /** The `data_version` check's timer while results are awaited (SQLite). */
  #versionTimer: NodeJS.Timeout | undefined;

  constructor(options: SqlBackendOptions) {
    this.#dialect = options.dialect;
    this.kind = options.dialect.flavor;
    this.displayUrl = options.dialect.displayUrl;
    this.multiProcess = options.dialect.multiProcess ?? true;
    this.#settings = resolveTableSettings(this.kind, options, options.env ?? process.env);
    this.#names = tableNames(this.#settings.tablePrefix, this.#settings.schema);
    this.#codec = textCodec(this.kind);
    this.#logger = (options.logger ?? processWarningLogger(`CHICORY_${this.kind.toUpperCase()}_BACKEND`)).child({
      backend: this.kind,
    });
    // get() without a timeout waits through an outage: one warning (not one per poll or per
    // get()), and one line when the database answers again
    this.#hub = new SqlWaitHub((ids) => this.#fetchRecords(ids, true), this.#settings.pollIntervalMs, this.#logger, {
      logger: this.#logger,
      backend: `${this.kind} backend ${this.displayUrl}`,
    });
  }

  /** The real table names (prefix and schema applied). */
  get tables(): {
    /** The task records' table (default `chicory_results`). */
    readonly results: string;
    /** The worker heartbeats' table (default `chicory_workers`). */
    readonly workers: string;
    /** The one-row table holding the schema version (default `chicory_schema_version`). */
    readonly schemaVersion: string;
  } {
    return this.#names.qualified;
  }

  /** {@inheritDoc Backend.isOpen} */
  get isOpen(): boolean {
    return this.#connection !== undefined || this.#connecting !== undefined || this.#disconnecting.connectsWaiting > 0;
  }

  /** {@inheritDoc Backend.isReady} */
  get isReady(): boolean {
    return this.#connection !== undefined;
  }

  /** {@inheritDoc Backend.connect} */
  connect(): Promise<void> {
    // After a disconnect() still under way (it may be cutting the connect under way, which this
    // call would otherwise join and fail with): opened anew once it is done, unless another
    // disconnect() came after this call (it then fails as one that disconnect() cut).
    return this.#disconnecting.connect(
      () => this.#connectNow(),
      () => this.#cutError(),
    );
  }

  async #connectNow(): Promise<void> {
    if (this.#connection) return;
    if (this.#connecting === undefined) {
      const opening = { isCut: false, connection: undefined };
      this.#opening = opening;
      // (#connection set in the same step as #connecting cleared: a disconnect() between the two
      // would find neither and leave the connection open)
      this.#connecting = this.#open(opening)
        .then((connection) => {
          // (a disconnect() while it opened, up to this step, closed it)
          if (opening.isCut) throw this.#cutError();
          this.#connection = connection;
          return connection;
        })
        .finally(() => {
          this.#connecting = undefined;
          if (this.#opening === opening) this.#opening = undefined;
        });
    }
    await this.#connecting;
  }

  /** {@inheritDoc Backend.disconnect} */
  disconnect(): Promise<void> {
    return this.#disconnecting.closing(this.#disconnect());
  }

  /** What a `connect()` that a `disconnect()` overtook rejects with. */
  #cutError(cause?: unknown): BackendConnectionError {
    return new BackendConnectionError(
      overtakenMessage(`${this.kind} backend`, this.displayUrl),
      cause === undefined ? undefined : { cause },
    );
  }

  async #disconnect(): Promise<void> {
    const pending = this.#connecting;
    if (pending) {
      // A connect() under way is cut, not waited for: a database that never answers would
      // hold it until poolTimeout. It rejects (`… was disconnected while it ran`).
      const opening = this.#opening;
      if (opening) {
        opening.isCut = true;
        // (discarded: a failure to close it does not stop the rest of the teardown)
        if (opening.connection) await this.#close(opening.connection).catch(() => undefined);
      }
      await pending.catch(() => undefined);
    }
    const connection = this.#connection;
    this.#connection = undefined;
    this.#hub.close();
    if (this.#versionTimer !== undefined) clearTimeout(this.#versionTimer);
    this.#versionTimer = undefined;
    const unlisten = this.#unlisten;
    this.#unlisten = undefined;
    // Together: each waits for the database's goodbye at most a few seconds.
    await Promise.all([unlisten?.(), connection ? this.#close(connection) : undefined]);
  }

  /** Closes `connection` and ends what still runs on it (see {@link SqlBackend.#cuts}). */
  async #close(connection: SqlConnection): Promise<void> {
    this.#closed.add(connection);
    try {
      await connection.close();
    } finally {
      this.#cutOf(connection).abort();
    }
  }

  /** The cut of `connection` (see {@link SqlBackend.#cuts}). */
  #cutOf(connection: SqlConnection): AbortController {
    let cut = this.#cuts.get(connection);
    if (cut === undefined) {
      cut = new AbortController();
      setMaxListeners(0, cut.signal); // one listener per running operation, removed when it ends
      this.#cuts.set(connection, cut);
    }
    return cut;
  }

  /** {@inheritDoc Backend.setState} */
  async setState(
    taskId: string,
    state: TaskState,
    extra: { error?: StoredError; retries?: number; taskName?: string } = {},
  ): Promise<void> {
    await this.#write(taskId, state, null, extra.error, extra.retries, extra.taskName, true);
  }

  /** {@inheritDoc Backend.storeResult} */
  async storeResult(record: TaskRecord): Promise<void> {
    const result = record.result === undefined ? null : JSON.stringify(record.result);
    await this.#write(record.taskId, record.state, result, record.error, record.retries, record.taskName, false);
  }

  /** {@inheritDoc Backend.getResult} */
  async getResult(taskId: string): Promise<TaskRecord | null> {
    if (!this.#isStorableKey(taskId)) return null;
    const [record] = await this.#fetchRecords([taskId]);
    return record ?? null;
  }

  /** {@inheritDoc Backend.deleteResult} */
  async deleteResult(taskId: string): Promise<void> {
    if (!this.#isStorableKey(taskId)) return;
    const id = this.#codec.encode(taskId);
    await this.#run("deleteResult", (db) =>
      db.deleteFrom(this.#names.qualified.results).where("task_id", "=", id).execute(),
    );
  }

  /** One `DELETE` matching the state and time read (`updated_at` is in milliseconds). */
  async deleteResultIf(taskId: string, seen: Pick<TaskRecord, "state" | "updatedAt">): Promise<boolean> {
    const updatedAt = Date.parse(seen.updatedAt);
    if (!this.#isStorableKey(taskId) || !Number.isFinite(updatedAt)) return false;
    const id = this.#codec.encode(taskId);
    const result = await this.#run("deleteResultIf", (db) =>
      db
        .deleteFrom(this.#names.qualified.results)
        .where("task_id", "=", id)
        .where("state", "=", seen.state)
        .where("updated_at", "=", updatedAt)
        .executeTakeFirst(),
    );
    return Number(result.numDeletedRows) > 0;
  }

  /** {@inheritDoc Backend.storeHeartbeat} */
  async storeHeartbeat(stats: WorkerStats, ttlSeconds: number): Promise<void> {
    const id = encodeKey(this.#codec, stats.workerId, "worker id");
    const json = JSON.stringify(stats);
    await this.#run("storeHeartbeat", (db) =>
      upsertHeartbeat(this.kind, this.#names, id, json, ttlSeconds * 1000).execute(db),
    );
  }

  /** {@inheritDoc Backend.getHeartbeat} */
  async getHeartbeat(workerId: string): Promise<WorkerStats | null> {
    if (!this.#isStorableKey(workerId)) return null;
    const id = this.#codec.encode(workerId);
    const row = await this.#run("getHeartbeat", (db) =>
      db
        .selectFrom(this.#names.qualified.workers)
        .select(["stats", "last_heartbeat"])
        .where("worker_id", "=", id)
        .where("expires_at", ">", nowMs(this.kind))
        .executeTakeFirst(),
    );
    return row ? this.#toStats(row) : null;
  }

  /** {@inheritDoc Backend.getActiveWorkers} */
  async getActiveWorkers(): Promise<WorkerStats[]> {
    const rows = await this.#run("getActiveWorkers", (db) =>
      db
        .selectFrom(this.#names.qualified.workers)
        .select(["stats", "last_heartbeat"])
        .where("expires_at", ">", nowMs(this.kind))
        .orderBy("worker_id")
        .execute(),
    );
    return rows.map((row) => this.#toStats(row));
  }

  /** {@inheritDoc Backend.cleanupStaleClients} */
  async cleanupStaleClients(staleSeconds: number): Promise<number> {
    const idleMs = staleMs(staleSeconds);
    const removed = await this.#run("cleanupStaleClients", (db) =>
      db
        .deleteFrom(this.#names.qualified.workers)
        .where("last_heartbeat", "<", sql<number>`${nowMs(this.kind)} - ${idleMs}`)
        .executeTakeFirst(),
    );
    await this.cleanupExpiredResults();
    return Number(removed.numDeletedRows);
  }

  /** Deletes results whose TTL has passed; returns how many. */
  async cleanupExpiredResults(): Promise<number> {
    const removed = await this.#run("cleanupExpiredResults", (db) =>
      db.deleteFrom(this.#names.qualified.results).where("expires_at", "<=", nowMs(this.kind)).executeTakeFirst(),
    );
    return Number(removed.numDeletedRows);
  }

  /** {@inheritDoc Backend.healthcheck} */
  async healthcheck(): Promise<HealthStatus> {
    const connection = this.#connection;
    if (!connection) return { connected: false, error: "not connected" };
    const started = performance.now();
    try {
      await this.#bounded(connection, (db) => sql`select 1 as ok`.execute(db));
      return { connected: true, latencyMs: Math.round((performance.now() - started) * 100) / 100 };
    } catch (error) {
      if (error instanceof DeadlinePassed)
        return { connected: false, error: `healthcheck: ${this.#silence(connection)}` };
      return { connected: false, error: wrapSqlError(error, "healthcheck", this.displayUrl, false).message };
    }
  }

  /** {@inheritDoc Backend.waitForResult} */
  waitForResult(taskId: string, options: WaitOptions = {}): Promise<TaskRecord | null> {
    const connection = this.#requireConnection("waitForResult");
    this.#listen();
    const waiting = this.#hub.wait(taskId, options);
    this.#watchDataVersion(connection);
    return waiting;
  }

  /**
   * SQLite: while results are awaited, reads the file's `data_version` every few tens of ms and
   * fetches the awaited records when another process committed (a result it stored), instead
   * of waiting for the poll interval. The interval grows with the number of waiting ids (each
   * check reads them all).
   */
  #watchDataVersion(connection: SqlConnection): void {
    const read = connection.dataVersion;
    if (!read || this.#versionTimer !== undefined) return;
    let seen: number;
    try {
      seen = read();
    } catch {
      return; // the poll goes on as before
    }
    this.#hub.setNotified(true);
    const tick = () => {
      this.#versionTimer = undefined;
      if (this.#hub.size === 0 || this.#connection !== connection) {
        this.#hub.setNotified(false);
        return;
      }
      try {
        const now = read();
        if (now !== seen) {
          seen = now;
          this.#hub.notifyAll();
        }
      } catch {
        this.#hub.setNotified(false);
        return;
      }
      this.#versionTimer = setTimeout(tick, VERSION_CHECK_MS + Math.floor(this.#hub.size / 50));
      this.#versionTimer.unref();
    };
    this.#versionTimer = setTimeout(tick, VERSION_CHECK_MS);
    this.#versionTimer.unref();
  }

  async #open(opening: { isCut: boolean; connection: SqlConnection | undefined }): Promise<SqlConnection> {
    let connection: SqlConnection;
    try {
      await loadKysely();
      connection = await this.#dialect.connect(this.#logger);
    } catch (error) {
      throw wrapSqlError(error, "connect", this.displayUrl, false);
    }
    if (opening.isCut) {
      // disconnect() came while the driver loaded: nothing was sent yet
      await this.#close(connection).catch(() => undefined);
      throw this.#cutError();
    }
    opening.connection = connection;
    try {
      await this.#withRetries("create schema", connection, (db) => ensureSchema(this.kind, db, this.#names));
    } catch (error) {
      // (closed by disconnect(): its step failed however the driver says it, e.g. "driver has
      // already been destroyed")
      if (opening.isCut) throw this.#cutError(error);
      await connection.close().catch(() => undefined);
      throw error;
    }
    return connection; // (cut meanwhile: connect() rejects)
  }

  /**
   * {@inheritDoc Backend.resultSizeLimit} MySQL and MariaDB only: the server's
   * `max_allowed_packet` (16 MiB by default on MariaDB, 64 MiB on MySQL 8, 4 MiB on MySQL 5.7),
   * the lower of its global value and the connection's (a `SET GLOBAL` reaches only connections
   * made after it), less room for the statement, with quotes and backslashes counted twice (the
   * driver escapes them on the client). The other databases take records far larger than
   * `maxResultBytes` allows.
   */
  async resultSizeLimit(): Promise<ResultSizeLimit | undefined> {
    const connection = this.#connection;
    if (this.kind !== "mysql" || connection === undefined) return undefined;
    let value: number;
    try {
      const { rows } = await this.#withRetries("read max_allowed_packet", connection, (db) =>
        // the session's value is the global one when the connection was made: a pooled
        // connection made before a SET GLOBAL keeps the old one, new connections take the new one
        sql<{ max: unknown }>`select least(@@global.max_allowed_packet, @@session.max_allowed_packet) as max`.execute(
          db,
        ),
      );
      value = Number(rows[0]?.max);
    } catch (error) {
      this.#logger.debug(
        { err: error instanceof Error ? error.message : String(error) },
        "mysql backend: max_allowed_packet could not be read; a record the server refuses is recognized by its error",
      );
      return undefined;
    }
    if (!Number.isSafeInteger(value) || value <= 2 * STATEMENT_ROOM_BYTES) return undefined;
    return {
      bytes: value - STATEMENT_ROOM_BYTES,
      source: `the result backend's max_allowed_packet of ${value} bytes, less room for the statement, counting quotes and backslashes twice (the MySQL driver escapes them)`,
      quotesEscaped: true,
    };
  }

  #listen(): void {
    const source = this.#dialect.listen;
    if (!source || this.#unlisten) return;
    this.#unlisten = subscribePg(
      source,
      this.#names.channel,
      {
        onNotify: (payload) => this.#hub.notify(this.#codec.decode(payload)),
        onStatus: (isListening) => {
          this.#hub.setNotified(isListening);
          // Notifications sent while no one listened are lost: re-check every waiter.
          if (isListening) this.#hub.notifyAll();
        },
      },
      this.#logger,
    );
  }

  async #write(
    taskId: string,
    state: TaskState,
    result: string | null,
    error: StoredError | undefined,
    retries: number | undefined,
    taskName: string | undefined,
    keepPrevious: boolean,
  ): Promise<void> {
    const row = {
      taskId: encodeKey(this.#codec, taskId, "task id"),
      state,
      result,
      error: errorJson(error),
      retries: retries ?? null,
      taskName: taskName === undefined ? null : encodeKey(this.#codec, taskName, "task name"),
      ttlMs: this.#settings.resultTtlMs,
      isTerminal: isTerminalState(state),
      keepPrevious,
    };
    await this.#run(keepPrevious ? "setState" : "storeResult", (db) =>
      upsertResult(this.kind, this.#names, row).execute(db),
    );
  }

  /** Reads the records of `ids`; `isWait`: for the waiters, whose retries log nothing (see module doc). */
  async #fetchRecords(ids: readonly string[], isWait = false): Promise<TaskRecord[]> {
    const encoded = ids.filter((id) => this.#isStorableKey(id)).map((id) => this.#codec.encode(id));
    const records: TaskRecord[] = [];
    for (let i = 0; i < encoded.length; i += CHUNK) {
      const chunk = encoded.slice(i, i + CHUNK);
      const rows = await this.#run(
        "getResult",
        (db) =>
          db
            .selectFrom(this.#names.qualified.results)
            .select(["task_id", "state", "result", "error", "retries", "task_name", "updated_at"])
            .where("task_id", "in", chunk)
            .where((eb) => eb.or([eb("expires_at", "is", null), eb("expires_at", ">", nowMs(this.kind))]))
            .execute(),
        isWait,
      );
      for (const row of rows) records.push(toTaskRecord(row, this.#codec));
    }
    return records;
  }

  #toStats(row: { stats: string; last_heartbeat: unknown }): WorkerStats {
    const stats = toWorkerStats(row.stats);
    // Stamped by the database clock, like the TTL (hazard C17).
    return { ...stats, lastHeartbeat: new Date(millis(row.last_heartbeat as number)).toISOString() };
  }

  /** {@inheritDoc Backend.taskIdProblem} */
  taskIdProblem(taskId: string): string | undefined {
    // (every message's id is checked: one that fits even with each character doubled, as a
    // generated id does, is not encoded)
    if (taskId.length * 2 <= MAX_KEY_LENGTH) return undefined;
    const stored = this.#codec.encode(taskId).length;
    if (stored <= MAX_KEY_LENGTH) return undefined;
    return `the ${this.kind} result backend stores it as ${stored} characters (a backslash or NUL counts as two there), over its ${MAX_KEY_LENGTH}`;
  }

  #isStorableKey(value: string): boolean {
    return typeof value === "string" && value.length > 0 && this.taskIdProblem(value) === undefined;
  }

  #requireConnection(what: string): SqlConnection {
    const connection = this.#connection;
    if (!connection) {
      throw new BackendConnectionError(
        `${what}: the ${this.kind} backend at ${this.displayUrl} is not connected (call connect() first)`,
      );
    }
    return connection;
  }

  #run<T>(what: string, fn: (db: Kysely<SqlDatabase>) => Promise<T>, isQuiet = false): Promise<T> {
    return this.#withRetries(what, this.#requireConnection(what), fn, isQuiet);
  }

  /**
   * Says that an operation is retried on a new connection: at most once per
   * {@link RETRY_WARN_EVERY_MS} per backend (an outage fails every operation's tries within
   * milliseconds), with how many retries the lines left out.
   */
  #warnRetry(what: string, error: unknown): void {
    const now = performance.now();
    if (now - this.#retryWarnedAtMs < RETRY_WARN_EVERY_MS) {
      this.#retriesNotWarned++;
      return;
    }
    this.#logger.warn(
      {
        err: error instanceof Error ? error.message : String(error),
        operation: what,
        ...(this.#retriesNotWarned > 0 ? { retriesSinceLastWarning: this.#retriesNotWarned } : {}),
      },
      "database connection lost or refused; retrying on a new connection",
    );
    this.#retryWarnedAtMs = now;
    this.#retriesNotWarned = 0;
  }

  /**
   * Runs `fn` as one {@link SqlOperation}, rejecting with `DeadlinePassed` after `queryTimeout`:
   * the connections it holds then may never hear back (a half-open link), so they are closed
   * and the pool opens new ones.
   */
  async #bounded<T>(connection: SqlConnection, fn: (db: Kysely<SqlDatabase>) => Promise<T>): Promise<T> {
    const operation = new SqlOperation();
    const limitMs = connection.queryTimeoutMs ?? 0;
    const { signal } = this.#cutOf(connection);
    if (signal.aborted) throw new CutByDisconnect(); // (a retry after disconnect() closed the pool)
    const running = operation.run(() => fn(connection.db));
    let onCut = (): void => undefined;
    const cut = new Promise<never>((_, reject) => {
      onCut = () => reject(new CutByDisconnect());
    });
    signal.addEventListener("abort", onCut, { once: true });
    try {
      return await Promise.race([limitMs > 0 ? withinDeadline(running, limitMs) : running, cut]);
    } catch (error) {
      if (error instanceof DeadlinePassed || error instanceof CutByDisconnect) {
        operation.abandon();
        running.catch(() => undefined);
      }
      throw error;
    } finally {
      signal.removeEventListener("abort", onCut);
    }
  }

  /** What a `DeadlinePassed` of {@link SqlBackend.#bounded} means, for an error message. */
  #silence(connection: SqlConnection): string {
    const limitMs = connection.queryTimeoutMs ?? 0;
    return `${this.displayUrl} did not answer within ${limitMs / 1000} s (queryTimeout, ${envPrefix(this.kind)}QUERY_TIMEOUT): the database is stalled or unreachable`;
  }

  /**
   * Runs `fn`, retrying up to four times after a dead connection and up to three times after a
   * deadlock; `isQuiet`: without a warning per retry.
   */
  async #withRetries<T>(
    what: string,
    connection: SqlConnection,
    fn: (db: Kysely<SqlDatabase>) => Promise<T>,
    isQuiet = false,
  ): Promise<T> {
    // After a server restart or pg_terminate_backend every idle pooled connection is dead, and
    // each failed try discards one: try a few more before giving up.
    let connectionRetries = CONNECTION_RETRIES;
    let conflictRetries = 3;
    for (;;) {
      try {
        return await this.#bounded(connection, fn);
      } catch (error) {
        if (error instanceof DeadlinePassed) {
          // Not tried again: a write may already be applied.
          throw new BackendConnectionError(
            `${what}: ${this.#silence(connection)}; its connection was closed, and a write may already be applied`,
            { cause: error },
          );
        }
        if (error instanceof CutByDisconnect || (this.#closed.has(connection) && isConnectionError(error))) {
          // disconnect() closed the pool under it: nothing to retry on.
          throw new BackendConnectionError(
            `${what}: the ${this.kind} backend at ${this.displayUrl} was disconnected while it ran; a write may already be applied`,
            { cause: error },
          );
        }
        const isPoolTimeout = connection.isPoolTimeout(error);
        if (!isPoolTimeout && isConnectionError(error) && connectionRetries-- > 0) {
          if (!isQuiet) this.#warnRetry(what, error);
          // The first retry at once (the next pooled connection is likely alive); the later ones
          // spaced out (25, 100, 400 ms, ± 20 %), so a database that refuses connections for a
          // moment (a restart, a failover) is waited out rather than hit four times in a row.
          const tried = CONNECTION_RETRIES - connectionRetries;
          if (tried > 1)
            await sleep(25 * 4 ** (tried - 2) * (0.8 + Math.random() * 0.4), this.#cutOf(connection).signal);
          continue;
        }
        if (!isPoolTimeout && isTransientConflict(error) && conflictRetries-- > 0) {
          await new Promise((resolve) => setTimeout(resolve, 5 + Math.random() * 20));
          continue;
        }
        throw wrapSqlError(error, what, this.displayUrl, isPoolTimeout);
      }
    }
  }
}

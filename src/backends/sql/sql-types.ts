/**
 * Types shared by the SQL result backend: the tables as Kysely sees them, and the small
 * interface every dialect module (postgres, mysql, sqlite, mssql) implements.
 * @module
 */
import type { Kysely } from "kysely";
import type { Logger } from "../../core/logger.js";

/** The SQL databases Chicory can store results in. */
export type SqlFlavor = "postgres" | "mysql" | "sqlite" | "mssql";

/** Epoch milliseconds as drivers return a BIGINT column (pg and tedious give strings). */
export type DbMillis = number | string | bigint;

/** One row of the results table. JSON values are stored as text. */
export interface ResultsTable {
  task_id: string;
  state: string;
  result: string | null;
  error: string | null;
  retries: number | null;
  task_name: string | null;
  updated_at: DbMillis;
  expires_at: DbMillis | null;
}

/** One row of the workers (heartbeats) table. */
export interface WorkersTable {
  worker_id: string;
  stats: string;
  last_heartbeat: DbMillis;
  expires_at: DbMillis;
}

/** The schema version table (one row, id 1). */
export interface SchemaVersionTable {
  id: number;
  version: number;
}

/**
 * Logical table names as Kysely's types know them. At run time the backend passes the real,
 * prefixed (and schema-qualified) names in their place; see `SqlTableNames`.
 */
export interface SqlDatabase {
  results: ResultsTable;
  workers: WorkersTable;
  schema_version: SchemaVersionTable;
}

/** What a dialect module hands the backend once connected. */
export interface SqlConnection {
  /** The query builder over the dialect's pool. */
  readonly db: Kysely<SqlDatabase>;
  /** Closes what the dialect owns (not an injected pool). */
  close(): Promise<void>;
  /** Maps a driver error to a Chicory error when it means the pool had no free connection in time. */
  isPoolTimeout(error: unknown): boolean;
  /** How long one operation may wait for the database (`queryTimeout`, ms; 0 or absent: no limit). */
  readonly queryTimeoutMs?: number | undefined;
  /**
   * SQLite only: the file's `data_version`, which changes when another connection (another
   * process) commits. Read cheaply and often, it tells a waiter when to look for results.
   */
  dataVersion?(): number;
}

/** A dedicated connection that receives PostgreSQL notifications. */
export interface PgListenClient {
  query(text: string): Promise<unknown>;
  on(event: "notification", listener: (message: { channel: string; payload?: string | undefined }) => void): unknown;
  on(event: "error", listener: (error: Error) => void): unknown;
  on(event: "end", listener: () => void): unknown;
  removeAllListeners(event?: string): unknown;
  /** Closes the connection. */
  end(): Promise<void>;
}

/**
 * A database to connect to, built by `postgresDialect()`, `mysqlDialect()`,
 * `sqliteDialect()` or `mssqlDialect()`. Nothing is opened until `connect()`.
 */
export interface SqlDialect {
  /** Which database this is. */
  readonly flavor: SqlFlavor;
  /** The connection URL with its password masked. */
  readonly displayUrl: string;
  /** False for a database that lives in this process only (SQLite `:memory:`); absent: shared. */
  readonly multiProcess?: boolean;
  /**
   * Imports the driver lazily and opens the pool; `logger`: the backend's, for what the dialect
   * could not set up on a connection.
   */
  connect(logger?: Logger): Promise<SqlConnection>;
  /**
   * PostgreSQL only: opens a connection for LISTEN (one per process, shared by all waiters),
   * and the key that identifies the database for sharing it.
   */
  readonly listen?: PgListenSource | undefined;
}

/** How to open the LISTEN connection, and how to check it is alive. */
export interface PgListenSource {
  readonly key: string;
  /** Opens the connection; `signal` ends an opening still under way (it then rejects). */
  connect(signal?: AbortSignal): Promise<PgListenClient>;
  /**
   * While it listens, the connection runs `select 1` every `intervalMs` and is replaced when that
   * gets no answer within `timeoutMs`: a link gone silent (a NAT or firewall that dropped it)
   * raises no error, and its waiters would only ever get results from their polls.
   */
  readonly probe?: { readonly intervalMs: number; readonly timeoutMs: number } | undefined;
}

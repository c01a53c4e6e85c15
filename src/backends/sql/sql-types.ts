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
  /** The task id (primary key; on PostgreSQL, `\` and NUL escaped). */
  task_id: string;
  /** The task state (`PENDING`, `SUCCESS`, ...). */
  state: string;
  /** The return value as JSON text, or null. */
  result: string | null;
  /** The stored error as JSON text, or null. */
  error: string | null;
  /** Retries done so far, or null. */
  retries: number | null;
  /** Task name, or null when unknown. */
  task_name: string | null;
  /** When the state was written, in epoch milliseconds (database clock). */
  updated_at: DbMillis;
  /** When the record expires, in epoch milliseconds (database clock); null: never. */
  expires_at: DbMillis | null;
}

/** One row of the workers (heartbeats) table. */
export interface WorkersTable {
  /** The worker id (primary key). */
  worker_id: string;
  /** The worker's `WorkerStats` as JSON text. */
  stats: string;
  /** Time of the last heartbeat, in epoch milliseconds (database clock). */
  last_heartbeat: DbMillis;
  /** When the heartbeat expires, in epoch milliseconds (database clock). */
  expires_at: DbMillis;
}

/** The schema version table (one row, id 1). */
export interface SchemaVersionTable {
  /** Always 1. */
  id: number;
  /** The schema version of the tables (one newer than this release's is refused). */
  version: number;
}

/**
 * Logical table names as Kysely's types know them. At run time the backend passes the real,
 * prefixed (and schema-qualified) names in their place; see `SqlTableNames`.
 */
export interface SqlDatabase {
  /** The task records. */
  results: ResultsTable;
  /** The worker heartbeats. */
  workers: WorkersTable;
  /** The schema version (one row). */
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
  /** Runs a statement (`LISTEN`, and `select 1` as a liveness probe). */
  query(text: string): Promise<unknown>;
  /** Listens for notifications on the channels LISTENed to. */
  on(event: "notification", listener: (message: { channel: string; payload?: string | undefined }) => void): unknown;
  /** Listens for connection errors. */
  on(event: "error", listener: (error: Error) => void): unknown;
  /** Listens for the end of the connection. */
  on(event: "end", listener: () => void): unknown;
  /** Removes the listeners of `event` (of every event when absent). */
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
  /** Identifies the database (URL and application name): backends with the same key share one LISTEN connection. */
  readonly key: string;
  /** Opens the connection; `signal` ends an opening still under way (it then rejects). */
  connect(signal?: AbortSignal): Promise<PgListenClient>;
  /**
   * While it listens, the connection runs `select 1` every `intervalMs` and is replaced when that
   * gets no answer within `timeoutMs`: a link gone silent (a NAT or firewall that dropped it)
   * raises no error, and its waiters would only ever get results from their polls.
   */
  readonly probe?:
    | {
        /** Milliseconds between probes. */
        readonly intervalMs: number;
        /** Milliseconds a probe waits for its answer before the connection is replaced. */
        readonly timeoutMs: number;
      }
    | undefined;
}

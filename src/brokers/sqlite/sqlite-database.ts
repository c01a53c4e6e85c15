/**
 * The little of a SQLite driver the SQLite broker needs, as a local structural type, and the
 * default opener for better-sqlite3 12 (imported lazily, so users of other brokers never need
 * it). `node:sqlite`'s `DatabaseSync` (Node 22.13+) has the same shape (`prepare`, `exec`,
 * `close`; statements with `run`/`get`/`all`), so a second {@link SqliteOpener} can plug it in
 * later without touching the broker.
 * @module
 */
import { DriverNotInstalledError } from "../../errors.js";

/** A value bound to a statement parameter. */
export type SqliteValue = string | number | bigint | null;

/** What `run()` reports. */
export interface SqliteRunResult {
  /** Rows changed by the statement. */
  readonly changes: number | bigint;
  /** Row id of the last inserted row. */
  readonly lastInsertRowid: number | bigint;
}

/** A prepared statement (better-sqlite3 `Statement`, node:sqlite `StatementSync`). */
export interface SqliteStatement {
  /** Executes the statement. */
  run(...params: SqliteValue[]): SqliteRunResult;
  /** First row, or undefined. */
  get(...params: SqliteValue[]): unknown;
  /** All rows. */
  all(...params: SqliteValue[]): unknown[];
}

/** A synchronous SQLite connection (better-sqlite3 `Database`, node:sqlite `DatabaseSync`). */
export interface SqliteDatabase {
  /** Compiles a statement; the broker caches what it prepares per connection. */
  prepare(sql: string): SqliteStatement;
  /** Runs one or more statements without results. */
  exec(sql: string): unknown;
  /** Closes the connection. */
  close(): unknown;
}

/** Options of a {@link SqliteOpener}. */
export interface SqliteOpenOptions {
  /** How long a statement waits for a lock held by another connection, in milliseconds. */
  readonly busyTimeoutMs: number;
}

/** Opens a connection to a database file (or `":memory:"`). */
export type SqliteOpener = (path: string, options: SqliteOpenOptions) => Promise<SqliteDatabase>;

type BetterSqlite3Constructor = new (path: string, options?: { timeout?: number }) => SqliteDatabase;

/**
 * Opens `path` with better-sqlite3 12, imported lazily.
 * @throws DriverNotInstalledError when better-sqlite3 cannot be imported
 */
export const openBetterSqlite3: SqliteOpener = async (path, options) => {
  let Database: BetterSqlite3Constructor;
  try {
    const mod = (await import("better-sqlite3")) as unknown as { default?: unknown };
    Database = (mod.default ?? mod) as BetterSqlite3Constructor;
  } catch (error) {
    throw new DriverNotInstalledError("better-sqlite3@12", "the SQLite broker", { cause: error });
  }
  return new Database(path, { timeout: options.busyTimeoutMs });
};

/**
 * True when `error` is SQLite's "database is busy/locked" (another connection holds the lock
 * past the busy timeout): worth retrying, unlike other errors.
 */
export function isBusyError(error: unknown): boolean {
  if (error === null || typeof error !== "object") return false;
  const { code, errcode } = error as { code?: unknown; errcode?: unknown };
  if (typeof code === "string" && (code.startsWith("SQLITE_BUSY") || code.startsWith("SQLITE_LOCKED"))) return true;
  // node:sqlite reports the numeric (extended) result code; 5 = BUSY, 6 = LOCKED.
  return typeof errcode === "number" && ((errcode & 0xff) === 5 || (errcode & 0xff) === 6);
}

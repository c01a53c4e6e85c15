/**
 * SQLite through `better-sqlite3` 12 (imported lazily): one connection per backend, in WAL
 * mode with a busy timeout, so several processes on one host can share the file. Kysely
 * serializes the statements of this connection; there is no pool to exhaust.
 *
 * URL: `sqlite:relative/path.db`, `sqlite:/abs/path.db`, `sqlite:///abs/path.db` or
 * `sqlite::memory:` (default `sqlite:chicory.db`, or `CHICORY_BACKEND_SQLITE_FILE_PATH`).
 * @module
 */

import { parseSqliteUrl, WAL_SIZE_LIMIT_BYTES } from "../../../brokers/sqlite/sqlite-options.js";
import type { EnvMap } from "../../../core/env.js";
import { loadKysely } from "../kysely.js";
import { importDriver } from "../sql-driver.js";
import { urlFromEnv } from "../sql-options.js";
import type { SqlConnection, SqlDatabase, SqlDialect } from "../sql-types.js";

/** The little of a better-sqlite3 `Database` the backend uses directly. */
export interface SqliteDatabaseLike {
  /** Runs a PRAGMA (`busy_timeout`; `data_version` with `simple: true`, the first column only). */
  pragma(source: string, options?: { simple?: boolean }): unknown;
  /** Closes the database (when the backend opened it). */
  close(): unknown;
  /** Compiles a statement (memoized by SQL text for kysely). */
  prepare(sql: string): unknown;
}

const STATEMENT_CACHE_SIZE = 200;

/**
 * The database as kysely sees it, with `prepare` memoized by SQL text: kysely prepares each
 * statement anew, and preparing costs more than running these small statements.
 */
function withStatementCache(database: SqliteDatabaseLike): SqliteDatabaseLike {
  const cache = new Map<string, unknown>();
  return new Proxy(database, {
    get(target, key) {
      if (key === "prepare") {
        return (sql: string) => {
          let statement = cache.get(sql);
          if (statement === undefined) {
            statement = target.prepare(sql);
            if (cache.size >= STATEMENT_CACHE_SIZE) cache.delete(cache.keys().next().value as string);
            cache.set(sql, statement);
          }
          return statement;
        };
      }
      const value = Reflect.get(target, key, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

type BetterSqlite3 = new (path: string, options?: { timeout?: number }) => SqliteDatabaseLike;

/** Options of {@link sqliteDialect}. */
export interface SqliteDialectOptions {
  /** `sqlite:` URL of the file; default `CHICORY_BACKEND_SQLITE_URL` / `..._FILE_PATH` / `sqlite:chicory.db`. */
  url?: string | undefined;
  /** File path (wins over `url`); `":memory:"` for a private in-memory database. */
  path?: string | undefined;
  /** A ready better-sqlite3 `Database` (the caller owns and closes it). */
  database?: SqliteDatabaseLike | undefined;
  /** Milliseconds a statement waits for another process's lock (default 5000). */
  busyTimeoutMs?: number | undefined;
  /** Environment to read `CHICORY_BACKEND_SQLITE_*` from (default `process.env`). */
  env?: EnvMap | undefined;
}

/** A SQLite database file for {@link SqlBackend}. */
export function sqliteDialect(options: SqliteDialectOptions = {}): SqlDialect {
  const injected = options.database;
  const url = options.url ?? urlFromEnv("sqlite", options.env ?? process.env);
  const path = options.path ?? parseSqliteUrl(url);
  const busyTimeoutMs = options.busyTimeoutMs ?? 5000;
  return {
    flavor: "sqlite",
    displayUrl: injected ? "sqlite (injected database)" : `sqlite:${path}`,
    multiProcess: injected !== undefined || path !== ":memory:",
    async connect(): Promise<SqlConnection> {
      let database = injected;
      if (database === undefined) {
        const Database = await importDriver<BetterSqlite3>(
          "better-sqlite3@12",
          "the SQLite result backend",
          () => import("better-sqlite3"),
        );
        database = new Database(path, { timeout: busyTimeoutMs });
        if (path !== ":memory:") database.pragma("journal_mode = WAL");
        database.pragma("synchronous = NORMAL");
        database.pragma(`journal_size_limit = ${WAL_SIZE_LIMIT_BYTES}`); // see the broker's schema setup
      }
      database.pragma(`busy_timeout = ${Math.max(0, Math.floor(busyTimeoutMs))}`);
      const { Kysely, SqliteDialect } = await loadKysely();
      const db = new Kysely<SqlDatabase>({
        dialect: new SqliteDialect({
          database: withStatementCache(database) as unknown as ConstructorParameters<
            typeof SqliteDialect
          >[0]["database"],
        }),
      });
      return {
        db,
        close: async () => {
          if (injected) return;
          await db.destroy();
        },
        isPoolTimeout: () => false,
        dataVersion: () => Number(database.pragma("data_version", { simple: true })),
      };
    },
  };
}

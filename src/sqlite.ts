/**
 * `chicory/sqlite`: the embedded SQLite broker (and, alongside, the SQLite result backend).
 * Needs the optional peer dependency `better-sqlite3@12`, imported lazily on `connect()`.
 * @module
 */

export {
  SqliteBackend,
  type SqliteBackendOptions,
  type SqliteDatabaseLike,
  type SqliteDialectOptions,
  sqliteDialect,
} from "./backends/sql/index.js";
export {
  SqliteBroker,
  type SqliteBrokerOptions,
  type SqliteDatabase,
  type SqliteOpener,
  type SqliteOpenOptions,
  type SqliteRunResult,
  type SqliteStatement,
  type SqliteValue,
  sqliteBrokerOptionsFromEnv,
} from "./brokers/sqlite/index.js";

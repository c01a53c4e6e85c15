/**
 * The SQLite broker (embedded default): public surface of this folder.
 * @module
 */
export { SqliteBroker } from "./sqlite-broker.js";
export type {
  SqliteDatabase,
  SqliteOpener,
  SqliteOpenOptions,
  SqliteRunResult,
  SqliteStatement,
  SqliteValue,
} from "./sqlite-database.js";
export { isBusyError, openBetterSqlite3 } from "./sqlite-database.js";
export type { SqliteBrokerOptions } from "./sqlite-options.js";
export { DEFAULT_SQLITE_PATH, parseSqliteUrl, sqliteBrokerOptionsFromEnv } from "./sqlite-options.js";
export { SQLITE_BROKER_SCHEMA_VERSION } from "./sqlite-schema.js";

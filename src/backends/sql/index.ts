/**
 * SQL result backends (PostgreSQL, MySQL/MariaDB, SQLite, SQL Server): the public surface.
 * @module
 */
export { type MssqlDialectOptions, mssqlDialect } from "./dialects/mssql.js";
export { type MysqlDialectOptions, type MysqlPoolLike, mysqlDialect } from "./dialects/mysql.js";
export { type PgPoolLike, type PostgresDialectOptions, postgresDialect } from "./dialects/postgres.js";
export { type SqliteDatabaseLike, type SqliteDialectOptions, sqliteDialect } from "./dialects/sqlite.js";
export { SqlBackend, type SqlBackendOptions } from "./sql-backend.js";
export {
  createSqlBackend,
  MssqlBackend,
  type MssqlBackendOptions,
  MysqlBackend,
  type MysqlBackendOptions,
  PostgresBackend,
  type PostgresBackendOptions,
  SqliteBackend,
  type SqliteBackendOptions,
} from "./sql-backends.js";
export type { SqlPoolOptions, SqlTableOptions } from "./sql-options.js";
export type { PgListenSource, SqlConnection, SqlDialect, SqlFlavor } from "./sql-types.js";

/**
 * One class per database over {@link SqlBackend}, and the factories behind the `postgres`,
 * `mysql`, `sqlite` and `mssql` backend kinds and URL schemes.
 * @module
 */
import type { EnvMap } from "../../core/env.js";
import { type MssqlDialectOptions, mssqlDialect } from "./dialects/mssql.js";
import { type MysqlDialectOptions, mysqlDialect } from "./dialects/mysql.js";
import { type PostgresDialectOptions, postgresDialect } from "./dialects/postgres.js";
import { type SqliteDialectOptions, sqliteDialect } from "./dialects/sqlite.js";
import { SqlBackend, type SqlBackendOptions } from "./sql-backend.js";
import type { SqlTableOptions } from "./sql-options.js";

type Common = SqlTableOptions & Pick<SqlBackendOptions, "logger">;

/** Options of {@link PostgresBackend}. */
export type PostgresBackendOptions = PostgresDialectOptions & Common;
/** Options of {@link MysqlBackend}. */
export type MysqlBackendOptions = MysqlDialectOptions & Common;
/** Options of {@link SqliteBackend}. */
export type SqliteBackendOptions = SqliteDialectOptions & Common;
/** Options of {@link MssqlBackend}. */
export type MssqlBackendOptions = MssqlDialectOptions & Common;

/**
 * Results in PostgreSQL (LISTEN/NOTIFY wake-up of waiters).
 * @example
 * ```ts
 * const backend = new PostgresBackend({ url: "postgres://app:secret@db:5432/app", resultTtl: "1d" });
 * ```
 */
export class PostgresBackend extends SqlBackend {
  constructor(options: PostgresBackendOptions = {}) {
    super({ ...options, dialect: postgresDialect(options) });
  }
}

/** Results in MySQL or MariaDB. */
export class MysqlBackend extends SqlBackend {
  constructor(options: MysqlBackendOptions = {}) {
    super({ ...options, dialect: mysqlDialect(options) });
  }
}

/** Results in a SQLite file (the embedded default). */
export class SqliteBackend extends SqlBackend {
  constructor(options: SqliteBackendOptions = {}) {
    super({ ...options, dialect: sqliteDialect(options) });
  }
}

/** Results in Microsoft SQL Server (not yet verified against a live server). */
export class MssqlBackend extends SqlBackend {
  constructor(options: MssqlBackendOptions = {}) {
    super({ ...options, dialect: mssqlDialect(options) });
  }
}

/** Builds a backend for `drivers.ts`: from `url`, or from `CHICORY_BACKEND_<DB>_*` when undefined. */
export function createSqlBackend(
  kind: "postgres" | "mysql" | "sqlite" | "mssql",
  url: string | undefined,
  env: EnvMap,
): SqlBackend {
  const options = { url, env };
  switch (kind) {
    case "postgres":
      return new PostgresBackend(options);
    case "mysql":
      return new MysqlBackend(options);
    case "sqlite":
      return new SqliteBackend(options);
    case "mssql":
      return new MssqlBackend(options);
  }
}

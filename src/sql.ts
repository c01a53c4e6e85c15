/**
 * `chicory/sql`: result backends on PostgreSQL, MySQL/MariaDB, SQLite and SQL Server.
 * Each needs its driver as an optional peer dependency (`pg`, `mysql2`, `better-sqlite3@12`,
 * `tedious` + `tarn`), imported lazily on `connect()`.
 * @example
 * ```ts
 * import { PostgresBackend } from "chicory/sql";
 * const app = new Chicory({ broker: "redis://localhost", backend: new PostgresBackend({ url }) });
 * ```
 * @module
 */
export * from "./backends/sql/index.js";

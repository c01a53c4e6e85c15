/**
 * CREATE statements of the backend's tables, per dialect, all idempotent
 * (`IF NOT EXISTS`, or an `OBJECT_ID` check on SQL Server). Columns:
 * - results: task_id (PK), state, result (JSON text), error (JSON text), retries, task_name,
 *   updated_at and expires_at (epoch ms by the database clock; expires_at NULL = never).
 * - workers: worker_id (PK), stats (JSON text), last_heartbeat, expires_at (epoch ms).
 * - schema_version: one row (id 1) with the schema version, for later migrations.
 * JSON is stored as text, not jsonb/JSON types: it is opaque to the backend, portable, and
 * keeps NUL escaped (`\u0000`) where jsonb would refuse it.
 * @module
 */
import type { RawBuilder } from "kysely";
import { sql } from "./kysely.js";
import { type SqlTableNames, tableRef } from "./sql-names.js";
import type { SqlFlavor } from "./sql-types.js";

/** The schema version this release writes. */
export const SCHEMA_VERSION = 1;

/** Per-dialect column types. */
interface ColumnTypes {
  key: string;
  state: string;
  json: string;
  int: string;
  name: string;
  millis: string;
}

function columnTypes(flavor: SqlFlavor, keyCollation: string | undefined): ColumnTypes {
  switch (flavor) {
    case "postgres":
      return {
        key: "varchar(255)",
        state: "varchar(16)",
        json: "text",
        int: "integer",
        name: "varchar(255)",
        millis: "bigint",
      };
    case "mysql":
      return {
        key: `varchar(255) character set utf8mb4 collate ${keyCollation ?? "utf8mb4_bin"}`,
        state: "varchar(16)",
        json: "longtext",
        int: "int",
        name: "varchar(255)",
        millis: "bigint",
      };
    case "sqlite":
      return { key: "text", state: "text", json: "text", int: "integer", name: "text", millis: "integer" };
    case "mssql":
      return {
        key: "nvarchar(255) collate Latin1_General_BIN2",
        state: "nvarchar(16)",
        json: "nvarchar(max)",
        int: "int",
        name: "nvarchar(255)",
        millis: "bigint",
      };
  }
}

/**
 * The statements creating all tables and indexes.
 * @param keyCollation MySQL only: a binary, NO PAD collation for key columns when the server has one
 */
export function createStatements(
  flavor: SqlFlavor,
  names: SqlTableNames,
  keyCollation?: string,
): RawBuilder<unknown>[] {
  const t = columnTypes(flavor, keyCollation);
  const raw = sql.raw;
  const results = tableRef(names, names.results);
  const workers = tableRef(names, names.workers);
  const version = tableRef(names, names.schemaVersion);
  const tableSuffix = flavor === "mysql" ? raw(" engine=InnoDB default charset=utf8mb4 collate=utf8mb4_bin") : raw("");
  const resultsColumns = sql`(
    task_id ${raw(t.key)} not null primary key,
    state ${raw(t.state)} not null,
    result ${raw(t.json)} null,
    error ${raw(t.json)} null,
    retries ${raw(t.int)} null,
    task_name ${raw(t.name)} null,
    updated_at ${raw(t.millis)} not null,
    expires_at ${raw(t.millis)} null
  )`;
  const workersColumns = sql`(
    worker_id ${raw(t.key)} not null primary key,
    stats ${raw(t.json)} not null,
    last_heartbeat ${raw(t.millis)} not null,
    expires_at ${raw(t.millis)} not null
  )`;
  const versionColumns = sql`(id ${raw(t.int)} not null primary key, version ${raw(t.int)} not null)`;
  const resultsIndex = `${names.results}_expires_idx`;
  const workersIndex = `${names.workers}_expires_idx`;

  if (flavor === "mssql") {
    // Unqualified names resolve against the login's default schema, as CREATE TABLE does.
    const ifNoTable = (name: string) => sql`if object_id(${name}, N'U') is null`;
    const ifNoIndex = (table: string, index: string) =>
      sql`if not exists (select 1 from sys.indexes where name = ${index} and object_id = object_id(${table}))`;
    return [
      sql`${ifNoTable(names.results)} create table ${results} ${resultsColumns}`,
      sql`${ifNoIndex(names.results, resultsIndex)} create index ${sql.id(resultsIndex)} on ${results} (expires_at)`,
      sql`${ifNoTable(names.workers)} create table ${workers} ${workersColumns}`,
      sql`${ifNoIndex(names.workers, workersIndex)} create index ${sql.id(workersIndex)} on ${workers} (expires_at)`,
      sql`${ifNoTable(names.schemaVersion)} create table ${version} ${versionColumns}`,
    ];
  }
  const statements = [
    sql`create table if not exists ${results} ${resultsColumns}${tableSuffix}`,
    sql`create table if not exists ${workers} ${workersColumns}${tableSuffix}`,
    sql`create table if not exists ${version} ${versionColumns}${tableSuffix}`,
  ];
  if (flavor === "mysql") {
    // MySQL/MariaDB have no CREATE INDEX IF NOT EXISTS in every version; the caller adds
    // missing indexes after checking information_schema.
    return statements;
  }
  const index = (name: string, table: RawBuilder<unknown>) =>
    sql`create index if not exists ${sql.id(name)} on ${table} (expires_at)`;
  return [...statements, index(resultsIndex, results), index(workersIndex, workers)];
}

/** Names of the expiry indexes (MySQL creates them after an information_schema check). */
export function indexNames(names: SqlTableNames): { table: string; index: string }[] {
  return [
    { table: names.results, index: `${names.results}_expires_idx` },
    { table: names.workers, index: `${names.workers}_expires_idx` },
  ];
}

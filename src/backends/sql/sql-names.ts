/**
 * Real table names under the configured prefix (and PostgreSQL schema), and the text codec
 * for key columns. Prefix and schema are validated identifiers (see `sql-options.ts`); they
 * are still quoted by Kysely wherever they appear.
 * @module
 */
import { createHash } from "node:crypto";
import type { RawBuilder } from "kysely";
import { sql } from "./kysely.js";
import type { SqlFlavor } from "./sql-types.js";

/** Names of the backend's tables. */
export interface SqlTableNames {
  /** Unqualified names, e.g. `chicory_results`. */
  readonly results: string;
  readonly workers: string;
  readonly schemaVersion: string;
  /** PostgreSQL schema, when configured. */
  readonly schema: string | undefined;
  /** `schema.name` or `name`, typed as Kysely's logical table so the builder accepts it. */
  readonly qualified: {
    readonly results: "results";
    readonly workers: "workers";
    readonly schemaVersion: "schema_version";
  };
  /** NOTIFY channel of terminal results (PostgreSQL). */
  readonly channel: string;
}

/** Builds the table names for a prefix and optional schema. */
export function tableNames(prefix: string, schema: string | undefined): SqlTableNames {
  const q = (name: string) => (schema === undefined ? name : `${schema}.${name}`);
  const results = `${prefix}results`;
  const workers = `${prefix}workers`;
  const schemaVersion = `${prefix}schema_version`;
  return {
    results,
    workers,
    schemaVersion,
    schema,
    qualified: {
      results: q(results) as "results",
      workers: q(workers) as "workers",
      schemaVersion: q(schemaVersion) as "schema_version",
    },
    channel: channelName(`${schema === undefined ? "" : `${schema}_`}${prefix}results`),
  };
}

/** Longest PostgreSQL identifier, in bytes (NAMEDATALEN - 1); names are ASCII here. */
const MAX_PG_IDENTIFIER = 63;

/**
 * The NOTIFY channel: `name` when PostgreSQL takes it, else its first characters and a hash of
 * the whole (a long schema and prefix together, each valid alone, would make every terminal
 * write fail with "channel name too long"). The same settings give the same channel everywhere.
 */
function channelName(name: string): string {
  if (name.length <= MAX_PG_IDENTIFIER) return name;
  const hash = createHash("sha256").update(name).digest("hex").slice(0, 16);
  return `${name.slice(0, MAX_PG_IDENTIFIER - hash.length - 1)}_${hash}`;
}

/** A quoted, schema-qualified table reference for hand-written SQL. */
export function tableRef(names: SqlTableNames, name: string): RawBuilder<unknown> {
  return sql.table(names.schema === undefined ? name : `${names.schema}.${name}`);
}

/**
 * Key columns (task id, task name, worker id) as stored. PostgreSQL text cannot hold NUL, so
 * there a backslash is doubled and NUL becomes `\0` (a reversible escape); other databases
 * store the string as is.
 */
export interface TextCodec {
  encode(value: string): string;
  decode(value: string): string;
}

const IDENTITY: TextCodec = { encode: (v) => v, decode: (v) => v };

const PG_TEXT: TextCodec = {
  encode: (v) => (/[\\\0]/.test(v) ? v.replace(/[\\\0]/g, (c) => (c === "\\" ? "\\\\" : "\\0")) : v),
  decode: (v) => (v.includes("\\") ? v.replace(/\\([\\0])/g, (_m, c: string) => (c === "0" ? "\0" : "\\")) : v),
};

/** The key codec of a dialect. */
export function textCodec(flavor: SqlFlavor): TextCodec {
  return flavor === "postgres" ? PG_TEXT : IDENTITY;
}

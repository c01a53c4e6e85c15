/**
 * Options of the SQL backend and their resolution from `CHICORY_BACKEND_{POSTGRES,MYSQL,
 * MSSQL,SQLITE}_*` variables (option over variable over default), validated once here.
 * @module
 */
import { type Duration, toMs } from "../../core/duration.js";
import { checkInt, type EnvMap, envDurationMs, envInt, envString } from "../../core/env.js";
import { unencodedUserinfo } from "../../core/url.js";
import { ConfigurationError } from "../../errors.js";
import type { SqlFlavor } from "./sql-types.js";

/** Pool settings shared by the server databases (names follow the Python library). */
export interface SqlPoolOptions {
  /** Connection URL; default from `CHICORY_BACKEND_<DB>_URL` or HOST/PORT/DATABASE/USERNAME/PASSWORD. */
  url?: string | undefined;
  /** Connections kept open (default 5, `..._POOL_SIZE`). */
  poolSize?: number | undefined;
  /** Extra connections opened under load and closed when idle (default 10, `..._MAX_OVERFLOW`). */
  maxOverflow?: number | undefined;
  /** Seconds to wait for a free connection before `DbPoolExhaustedError` (default 30, `..._POOL_TIMEOUT`). */
  poolTimeout?: Duration | undefined;
  /** Seconds after which a connection is replaced (default 3600, `..._POOL_RECYCLE`; 0 = never). */
  poolRecycle?: Duration | undefined;
  /**
   * Seconds one operation (a store, a read, a heartbeat; taking a connection from the pool
   * included) may wait for the database before it fails with `BackendConnectionError` (default
   * 60, `..._QUERY_TIMEOUT`; 0 = no limit): a database that stops answering on an open
   * connection would otherwise hold it for ever.
   */
  queryTimeout?: Duration | undefined;
}

/** Resolved pool settings; durations in milliseconds. */
export interface SqlPoolSettings {
  readonly url: string;
  readonly poolSize: number;
  readonly maxOverflow: number;
  readonly poolTimeoutMs: number;
  readonly poolRecycleMs: number;
  /** 0: no limit. */
  readonly queryTimeoutMs: number;
}

/** Options of where and how long results are kept. */
export interface SqlTableOptions {
  /** Prefix of the table names (default `chicory_`, `..._TABLE_PREFIX`). */
  tablePrefix?: string | undefined;
  /** PostgreSQL schema holding the tables (default: the search path, `CHICORY_BACKEND_POSTGRES_SCHEMA`). */
  schema?: string | undefined;
  /** Seconds a stored result lives (default 86400, `..._RESULT_TTL`; 0 = forever). */
  resultTtl?: Duration | undefined;
  /** Seconds between batched polls of waiting results (default `CHICORY_RESULT_POLL_INTERVAL` or 0.5). */
  pollInterval?: Duration | undefined;
}

/** Resolved table settings; durations in milliseconds. */
export interface SqlTableSettings {
  readonly tablePrefix: string;
  readonly schema: string | undefined;
  readonly resultTtlMs: number;
  readonly pollIntervalMs: number;
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,39}$/;
const DEFAULT_PORTS: Record<SqlFlavor, number> = { postgres: 5432, mysql: 3306, mssql: 1433, sqlite: 0 };

/** `CHICORY_BACKEND_POSTGRES_` etc. */
export function envPrefix(flavor: SqlFlavor): string {
  return `CHICORY_BACKEND_${flavor.toUpperCase()}_`;
}

/** Resolves pool settings: options over environment over defaults. */
export function resolvePoolSettings(flavor: SqlFlavor, options: SqlPoolOptions, env: EnvMap): SqlPoolSettings {
  const p = envPrefix(flavor);
  const url = options.url ?? urlFromEnv(flavor, env);
  const unencoded = unencodedUserinfo(url);
  if (unencoded !== undefined) throw new ConfigurationError(`invalid ${flavor} URL ${unencoded}`);
  return {
    url,
    poolSize:
      options.poolSize === undefined
        ? envInt(env, `${p}POOL_SIZE`, 5, 1, 1000)
        : checkInt(options.poolSize, "poolSize", 1, 1000),
    maxOverflow:
      options.maxOverflow === undefined
        ? envInt(env, `${p}MAX_OVERFLOW`, 10, 0, 1000)
        : checkInt(options.maxOverflow, "maxOverflow", 0, 1000),
    poolTimeoutMs: positive(
      options.poolTimeout === undefined
        ? envDurationMs(env, `${p}POOL_TIMEOUT`, 30_000)
        : toMs(options.poolTimeout, "poolTimeout"),
      options.poolTimeout === undefined ? `${p}POOL_TIMEOUT` : "poolTimeout",
    ),
    poolRecycleMs:
      options.poolRecycle === undefined
        ? envDurationMs(env, `${p}POOL_RECYCLE`, 3_600_000)
        : toMs(options.poolRecycle, "poolRecycle"),
    queryTimeoutMs:
      options.queryTimeout === undefined
        ? envDurationMs(env, `${p}QUERY_TIMEOUT`, 60_000)
        : toMs(options.queryTimeout, "queryTimeout"),
  };
}

/** Resolves table settings: options over environment over defaults. */
export function resolveTableSettings(flavor: SqlFlavor, options: SqlTableOptions, env: EnvMap): SqlTableSettings {
  const p = envPrefix(flavor);
  const tablePrefix = options.tablePrefix ?? envString(env, `${p}TABLE_PREFIX`, "chicory_");
  if (!IDENTIFIER.test(tablePrefix)) {
    throw new ConfigurationError(
      `tablePrefix (${p}TABLE_PREFIX): "${tablePrefix.slice(0, 50)}" is invalid: use 1-40 of [A-Za-z0-9_], not starting with a digit`,
    );
  }
  const schema = options.schema ?? (flavor === "postgres" ? envString(env, `${p}SCHEMA`) : undefined);
  if (schema !== undefined && (flavor !== "postgres" || !IDENTIFIER.test(schema))) {
    throw new ConfigurationError(
      flavor === "postgres"
        ? `schema (${p}SCHEMA): "${schema.slice(0, 50)}" is invalid: use 1-40 of [A-Za-z0-9_]`
        : `schema: only the PostgreSQL backend takes a schema (use tablePrefix for ${flavor})`,
    );
  }
  return {
    tablePrefix,
    schema,
    resultTtlMs:
      options.resultTtl === undefined
        ? envDurationMs(env, `${p}RESULT_TTL`, 86_400_000)
        : toMs(options.resultTtl, "resultTtl"),
    pollIntervalMs: positive(
      options.pollInterval === undefined
        ? envDurationMs(env, "CHICORY_RESULT_POLL_INTERVAL", 500)
        : toMs(options.pollInterval, "pollInterval"),
      options.pollInterval === undefined ? "CHICORY_RESULT_POLL_INTERVAL" : "pollInterval",
    ),
  };
}

function positive(ms: number, name: string): number {
  if (ms <= 0) throw new ConfigurationError(`${name}: must be greater than 0`);
  return ms;
}

/** The connection URL from `..._URL`, else built from HOST/PORT/DATABASE/USERNAME/PASSWORD (SQLite: FILE_PATH). */
export function urlFromEnv(flavor: SqlFlavor, env: EnvMap): string {
  const p = envPrefix(flavor);
  const url = envString(env, `${p}URL`);
  if (url !== undefined) return url;
  if (flavor === "sqlite") return `sqlite:${envString(env, `${p}FILE_PATH`, "chicory.db")}`;
  const host = envString(env, `${p}HOST`, "localhost");
  const port = envInt(env, `${p}PORT`, DEFAULT_PORTS[flavor], 1, 65535);
  const database = envString(env, `${p}DATABASE`, "chicory");
  const user = envString(env, `${p}USERNAME`);
  const password = envString(env, `${p}PASSWORD`);
  const auth =
    user === undefined
      ? ""
      : `${encodeURIComponent(user)}${password === undefined ? "" : `:${encodeURIComponent(password)}`}@`;
  return `${flavor}://${auth}${host}:${port}/${encodeURIComponent(database)}`;
}

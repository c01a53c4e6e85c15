/**
 * Options of the SQLite broker: URL forms, environment variables and defaults.
 *
 * | option | env | default |
 * |---|---|---|
 * | `path` / `url` | `CHICORY_BROKER_SQLITE_PATH` | `chicory.db` (relative to the working directory) |
 * | `claimMinIdleMs` (lease) | `CHICORY_BROKER_SQLITE_CLAIM_MIN_IDLE_MS` | 30000 |
 * | `busyTimeoutMs` | `CHICORY_BROKER_SQLITE_BUSY_TIMEOUT_MS` | 5000 |
 * | `synchronous` | `CHICORY_BROKER_SQLITE_SYNCHRONOUS` | `NORMAL` |
 * | `pollMinMs` / `pollMaxMs` | `CHICORY_BROKER_SQLITE_POLL_MIN_MS` / `_POLL_MAX_MS` | 5 / 25 |
 * @module
 */
import { checkInt, type EnvMap, envChoice, envMillis, envString } from "../../core/env.js";
import { type Logger, silentLogger } from "../../core/logger.js";
import { ConfigurationError } from "../../errors.js";
import { openBetterSqlite3, type SqliteDatabase, type SqliteOpener } from "./sqlite-database.js";

/** Options of {@link SqliteBroker}. */
export interface SqliteBrokerOptions {
  /** Database file (relative to the working directory, or absolute), or `":memory:"` (one process). */
  readonly path?: string | undefined;
  /**
   * URL form of the location: `sqlite:relative/path.db`, `sqlite:/abs/path.db`,
   * `sqlite:///abs/path.db` or `sqlite::memory:`. Ignored when `path` is set.
   */
  readonly url?: string | undefined;
  /**
   * A ready connection; the caller owns it (the broker never closes it). The broker still sets
   * its pragmas (WAL, busy timeout, synchronous) and creates its tables.
   */
  readonly database?: SqliteDatabase | undefined;
  /** Opens connections (default: better-sqlite3 12, imported lazily). The seam for `node:sqlite`. */
  readonly open?: SqliteOpener | undefined;
  /**
   * Lease of a claimed job in milliseconds: a job whose consumer stopped renewing it for this
   * long is handed to another consumer with `deliveryCount + 1`. Live consumers renew their
   * leases every third of it. Default 30000.
   */
  readonly claimMinIdleMs?: number | undefined;
  /** How long a statement waits for another process's write lock, in milliseconds. Default 5000. */
  readonly busyTimeoutMs?: number | undefined;
  /**
   * `PRAGMA synchronous`. `NORMAL` (default) with WAL never corrupts the file and keeps every
   * commit across a process crash (`kill -9`); an OS crash or power loss may lose the last
   * commits. `FULL` syncs every commit to disk (slower publishes and acks).
   */
  readonly synchronous?: "NORMAL" | "FULL" | undefined;
  /** Shortest pause between two checks for new jobs while polling, in milliseconds. Default 5. */
  readonly pollMinMs?: number | undefined;
  /**
   * Longest pause between two checks while idle, in milliseconds (the pause doubles from
   * `pollMinMs` up to this). Bounds the pickup latency of a job published by another process.
   * Default 25.
   */
  readonly pollMaxMs?: number | undefined;
  /** Longest a `fetch` waits before returning `[]`, in milliseconds. Default 5000. */
  readonly fetchMaxWaitMs?: number | undefined;
  /** Where warnings go (fenced settlements, lost leases). Default: silent. */
  readonly logger?: Logger | undefined;
}

/** {@link SqliteBrokerOptions} with defaults applied. */
export interface ResolvedSqliteBrokerOptions {
  readonly path: string;
  readonly database: SqliteDatabase | undefined;
  readonly open: SqliteOpener;
  readonly claimMinIdleMs: number;
  readonly busyTimeoutMs: number;
  readonly synchronous: "NORMAL" | "FULL";
  readonly pollMinMs: number;
  readonly pollMaxMs: number;
  readonly fetchMaxWaitMs: number;
  readonly logger: Logger;
}

/** Default database file of the embedded broker. */
export const DEFAULT_SQLITE_PATH = "chicory.db";

/**
 * The file path of a `sqlite:` URL.
 * @throws ConfigurationError when the URL is not a `sqlite:` URL or names no file
 */
export function parseSqliteUrl(url: string): string {
  const match = /^sqlite:(.*)$/is.exec(url.trim());
  if (!match) throw new ConfigurationError(`SQLite URL "${url.slice(0, 200)}" must start with "sqlite:"`);
  let rest = match[1] ?? "";
  // sqlite:///abs/path.db -> /abs/path.db ; sqlite://rel.db -> rel.db
  if (rest.startsWith("//")) rest = rest.slice(2);
  if (rest === "") {
    throw new ConfigurationError(
      `SQLite URL "${url.slice(0, 200)}" names no file: use sqlite:path/to/file.db, sqlite:/abs/file.db or sqlite::memory:`,
    );
  }
  return rest;
}

/** Options read from the environment (the factory behind `broker: "sqlite"` and `sqlite:` URLs). */
export function sqliteBrokerOptionsFromEnv(url: string | undefined, env: EnvMap): SqliteBrokerOptions {
  return {
    path: url === undefined ? envString(env, "CHICORY_BROKER_SQLITE_PATH", DEFAULT_SQLITE_PATH) : parseSqliteUrl(url),
    claimMinIdleMs: envMillis(env, "CHICORY_BROKER_SQLITE_CLAIM_MIN_IDLE_MS", 30_000, 100),
    busyTimeoutMs: envMillis(env, "CHICORY_BROKER_SQLITE_BUSY_TIMEOUT_MS", 5000, 0),
    synchronous: envChoice<"NORMAL" | "FULL">(env, "CHICORY_BROKER_SQLITE_SYNCHRONOUS", ["NORMAL", "FULL"], "NORMAL"),
    pollMinMs: envMillis(env, "CHICORY_BROKER_SQLITE_POLL_MIN_MS", 5, 1, 10_000),
    pollMaxMs: envMillis(env, "CHICORY_BROKER_SQLITE_POLL_MAX_MS", 25, 1, 60_000),
  };
}

/** Applies defaults and checks ranges. */
export function resolveSqliteBrokerOptions(options: SqliteBrokerOptions): ResolvedSqliteBrokerOptions {
  const path = options.path ?? (options.url === undefined ? DEFAULT_SQLITE_PATH : parseSqliteUrl(options.url));
  const pollMinMs = checkInt(options.pollMinMs ?? 5, "pollMinMs", 1, 10_000);
  const synchronous = options.synchronous ?? "NORMAL";
  if (synchronous !== "NORMAL" && synchronous !== "FULL") {
    throw new ConfigurationError(`synchronous: expected NORMAL or FULL, got ${JSON.stringify(synchronous)}`);
  }
  return {
    path,
    database: options.database,
    open: options.open ?? openBetterSqlite3,
    claimMinIdleMs: checkInt(options.claimMinIdleMs ?? 30_000, "claimMinIdleMs", 100),
    busyTimeoutMs: checkInt(options.busyTimeoutMs ?? 5000, "busyTimeoutMs", 0),
    synchronous,
    pollMinMs,
    pollMaxMs: Math.max(pollMinMs, checkInt(options.pollMaxMs ?? 25, "pollMaxMs", 1, 60_000)),
    fetchMaxWaitMs: checkInt(options.fetchMaxWaitMs ?? 5000, "fetchMaxWaitMs", 1),
    logger: options.logger ?? silentLogger,
  };
}

/**
 * The size a checkpointed WAL file is cut back to (`journal_size_limit`, broker and backend
 * connections): 16 MiB. Without it, the file keeps the size a burst grew it to until the last
 * connection closes.
 */
export const WAL_SIZE_LIMIT_BYTES = 16 * 1024 * 1024;

/**
 * Schema of the SQLite broker and its idempotent, versioned creation.
 *
 * One database file holds the queue (`chicory_jobs`, ready and delayed jobs), the dead
 * letters (`chicory_dlq`) and the registered consumers (`chicory_consumers`); the result
 * backend keeps its own tables in the same file. `chicory_meta` records the schema version
 * under the key `broker_schema_version`, and the consumers' stall window under `stall_window`
 * (see `sqlite-consumer.ts`).
 *
 * `chicory_jobs.available_at` is the time (epoch ms) a row can next be claimed: the ETA of a
 * waiting job, or the lease end of a claimed one (then equal to `locked_until`). Keeping that
 * invariant lets one indexed `MIN(available_at)` tell a consumer when to look again.
 *
 * Creation runs in one `BEGIN IMMEDIATE` transaction with `CREATE ... IF NOT EXISTS`, so
 * several processes starting at once on a new file are safe: they serialize on the write
 * lock and the later ones find the schema in place.
 * @module
 */
import { ConfigurationError } from "../../errors.js";
import { isBusyError, type SqliteDatabase } from "./sqlite-database.js";
import { WAL_SIZE_LIMIT_BYTES } from "./sqlite-options.js";

/** Version of the schema below; bump it with a migration step in {@link migrateSqliteSchema}. */
export const SQLITE_BROKER_SCHEMA_VERSION = 2;

const VERSION_KEY = "broker_schema_version";

/** Schema version 1 (every statement idempotent). */
const SCHEMA_V1 = `
CREATE TABLE IF NOT EXISTS chicory_meta (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chicory_jobs (
  id             INTEGER PRIMARY KEY AUTOINCREMENT,  -- the deliveryId; never reused
  queue          TEXT    NOT NULL,
  task_id        TEXT    NOT NULL,
  body           TEXT    NOT NULL,
  priority       INTEGER NOT NULL DEFAULT 0,         -- 0-255, higher first
  available_at   INTEGER NOT NULL,                   -- epoch ms: ETA, or lease end while claimed
  locked_by      TEXT,                               -- consumer id of the lease holder
  locked_until   INTEGER,                            -- epoch ms: lease end
  delivery_count INTEGER NOT NULL DEFAULT 0,
  created_at     INTEGER NOT NULL,
  unique_key     TEXT                                -- task id of a unique (idempotent) publish
);
-- Claim order: best priority, then oldest, per queue; available_at makes the claim's filter
-- index-only (rows not yet due are skipped without reading the table).
CREATE INDEX IF NOT EXISTS chicory_jobs_claim ON chicory_jobs (queue, priority DESC, id, available_at);
-- Next due time per queue (delayed jobs, lease ends), waiting/pending counts, and the claim of a
-- queue whose rows share one priority (due rows in the order they became available).
CREATE INDEX IF NOT EXISTS chicory_jobs_due ON chicory_jobs (queue, available_at);
-- Idempotent enqueue: one live job per (queue, task id) among unique publishes.
CREATE UNIQUE INDEX IF NOT EXISTS chicory_jobs_unique ON chicory_jobs (queue, unique_key)
  WHERE unique_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS chicory_dlq (
  id          INTEGER PRIMARY KEY AUTOINCREMENT,
  queue       TEXT    NOT NULL,
  task_id     TEXT    NOT NULL,
  body        TEXT    NOT NULL,
  priority    INTEGER NOT NULL DEFAULT 0,
  error       TEXT    NOT NULL,
  failed_at   INTEGER NOT NULL,                      -- epoch ms
  retry_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS chicory_dlq_queue ON chicory_dlq (queue, id);
CREATE TABLE IF NOT EXISTS chicory_consumers (
  consumer_id TEXT    NOT NULL,
  queue       TEXT    NOT NULL,
  last_seen   INTEGER NOT NULL,                      -- epoch ms
  PRIMARY KEY (consumer_id, queue)
) WITHOUT ROWID;
-- (version 2 adds lease_ms INTEGER: the consumer's lease, see migrateToV2)
`;

/**
 * Version 2: each registration also says its consumer's lease (ms), so that the stall window
 * (see `sqlite-consumer.ts`) follows the shortest and longest lease of the consumers on the file.
 * A version 1 file gets the column; processes of version 1 refuse the file from then on.
 */
function migrateToV2(db: SqliteDatabase): void {
  const columns = db.prepare("PRAGMA table_info(chicory_consumers)").all() as Array<{ name: string }>;
  if (!columns.some((column) => column.name === "lease_ms")) {
    db.exec("ALTER TABLE chicory_consumers ADD COLUMN lease_ms INTEGER");
  }
}

/** Connection settings applied on every connect. */
export interface SqliteConnectionSettings {
  /** Busy timeout in milliseconds. */
  readonly busyTimeoutMs: number;
  /** `NORMAL` (default with WAL: durable across process crashes) or `FULL` (also across power loss). */
  readonly synchronous: "NORMAL" | "FULL";
}

/**
 * Applies the connection pragmas (WAL, busy timeout, synchronous) and creates or checks the
 * schema. Returns the journal mode in effect (`"wal"`, or `"memory"` for `:memory:`).
 * @throws ConfigurationError when the file's schema is newer than this version of Chicory
 */
export async function migrateSqliteSchema(db: SqliteDatabase, settings: SqliteConnectionSettings): Promise<string> {
  // While setting up, wait for locks with timers rather than SQLite's busy handler: the handler
  // sleeps inside the (synchronous) driver and blocks the event loop, which would stall a
  // second connection of this same process (e.g. the result backend creating its tables)
  // that holds the lock and needs the event loop to commit.
  db.exec("PRAGMA busy_timeout = 0");
  try {
    const deadline = Date.now() + Math.max(1000, settings.busyTimeoutMs);
    // Switching to WAL needs an exclusive lock for a moment; concurrent openers may see BUSY.
    const mode = await withBusyRetry(deadline, () => {
      const row = db.prepare("PRAGMA journal_mode = WAL").get() as { journal_mode?: string } | undefined;
      return String(row?.journal_mode ?? "").toLowerCase();
    });
    db.exec(`PRAGMA synchronous = ${settings.synchronous}`);
    // Once checkpointed, a WAL that a burst grew is cut back to this size when it restarts
    // (without it the file keeps its largest size until the last connection closes).
    db.exec(`PRAGMA journal_size_limit = ${WAL_SIZE_LIMIT_BYTES}`);
    if (!(await withBusyRetry(deadline, () => hasCurrentSchema(db)))) {
      await withBusyRetry(deadline, () => createSchema(db));
    }
    return mode;
  } finally {
    db.exec(`PRAGMA busy_timeout = ${Math.trunc(settings.busyTimeoutMs)}`);
  }
}

/** True when the schema is already at this version (no write lock needed then). */
function hasCurrentSchema(db: SqliteDatabase): boolean {
  const exists = db.prepare("SELECT 1 AS ok FROM sqlite_master WHERE type = 'table' AND name = 'chicory_meta'").get();
  if (exists === undefined) return false;
  const row = db.prepare("SELECT value FROM chicory_meta WHERE key = ?").get(VERSION_KEY) as
    | { value: string }
    | undefined;
  return row !== undefined && Number(row.value) === SQLITE_BROKER_SCHEMA_VERSION;
}

function createSchema(db: SqliteDatabase): void {
  db.exec("BEGIN IMMEDIATE");
  try {
    db.exec(SCHEMA_V1);
    const row = db.prepare("SELECT value FROM chicory_meta WHERE key = ?").get(VERSION_KEY) as
      | { value: string }
      | undefined;
    const found = row === undefined ? 0 : Number(row.value);
    if (found > SQLITE_BROKER_SCHEMA_VERSION) {
      throw new ConfigurationError(
        `SQLite broker schema version ${found} is newer than this version of Chicory supports (${SQLITE_BROKER_SCHEMA_VERSION}): upgrade chicory`,
      );
    }
    if (found < SQLITE_BROKER_SCHEMA_VERSION) {
      migrateToV2(db);
      db.prepare(
        "INSERT INTO chicory_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
      ).run(VERSION_KEY, String(SQLITE_BROKER_SCHEMA_VERSION));
    }
    db.exec("COMMIT");
  } catch (error) {
    try {
      db.exec("ROLLBACK");
    } catch {
      // no transaction left to roll back (BEGIN failed or SQLite already rolled back)
    }
    throw error;
  }
}

async function withBusyRetry<T>(deadline: number, fn: () => T): Promise<T> {
  for (;;) {
    try {
      return fn();
    } catch (error) {
      if (!isBusyError(error) || Date.now() >= deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 5 + Math.random() * 20));
    }
  }
}

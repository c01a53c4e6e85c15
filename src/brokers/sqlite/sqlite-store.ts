/**
 * The data-plane SQL of the SQLite broker, prepared once per connection.
 *
 * Atomicity: SQLite serializes writers, and a single INSERT/UPDATE/DELETE takes the write lock
 * before it reads, so each statement below is atomic on its own. Operations of several
 * statements (claim over several queues, retry, dead-letter) run in one `BEGIN IMMEDIATE`
 * transaction, which takes the write lock up front (no lock upgrade, hence no
 * `SQLITE_BUSY_SNAPSHOT` in WAL mode).
 *
 * Fencing: every settlement matches `locked_by = consumer AND delivery_count = n`, the
 * delivery's identity. A consumer whose lease expired and was taken over changes nothing.
 *
 * Times are epoch milliseconds from the caller's clock (all processes share one host).
 * @module
 */
import type { SqliteDatabase, SqliteStatement } from "./sqlite-database.js";

/** A job row handed out by {@link SqliteStore.claim}. */
export interface ClaimedJob {
  readonly id: number;
  readonly queue: string;
  readonly body: string;
  readonly priority: number;
  readonly delivery_count: number;
}

/** The identity of one delivery: settlements match it exactly. */
export interface DeliveryFence {
  readonly id: number;
  readonly consumerId: string;
  readonly deliveryCount: number;
}

/**
 * A time in which expired leases are reclaimed only when they ran out `quietMs` earlier: no
 * consumer could write to the file for that long (another connection held the write lock, or
 * every worker was stalled or stopped), so no owner could renew its leases meanwhile.
 */
export interface StallWindow {
  /** Epoch ms when the window ends (the longest lease registered, after the quiet time was found). */
  readonly until: number;
  /** The longest quiet time found (ms): how long no consumer wrote its registration. */
  readonly quietMs: number;
  /** True when this call opened the window (none was open). */
  readonly isNew: boolean;
}

/** A job to insert. */
export interface NewJob {
  readonly queue: string;
  readonly taskId: string;
  readonly body: string;
  readonly priority: number;
  readonly availableAt: number;
  /** Task id when the publish is unique (idempotent), else null. */
  readonly uniqueKey: string | null;
}

const SQL = {
  begin: "BEGIN IMMEDIATE",
  commit: "COMMIT",
  rollback: "ROLLBACK",
  // Changes whenever another connection commits; read before looking for work.
  dataVersion: "PRAGMA data_version",
  // Params: queue, task_id, body, priority, available_at, created_at, unique_key.
  // A conflict can only come from the partial unique index (unique publishes).
  insert: `INSERT INTO chicory_jobs (queue, task_id, body, priority, available_at, created_at, unique_key)
           VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
  // Params: queue. When the queue next has a claimable row (ready, delayed or lease end).
  nextAvailable: "SELECT MIN(available_at) AS at FROM chicory_jobs WHERE queue = ?",
  // Params: queue, queue. The highest and lowest priority of the queue's rows (two index seeks).
  prioritySpan: `SELECT (SELECT MAX(priority) FROM chicory_jobs WHERE queue = ?) AS hi,
                        (SELECT MIN(priority) FROM chicory_jobs WHERE queue = ?) AS lo`,
  // Params: consumer, lease end, lease end, queue, now, reclaim cutoff, max. Returns the claimed
  // rows, for a queue whose rows share one priority: the due index's range of rows available by
  // now, in the order they became available (published, came due, given back), so rows not yet
  // due (delayed jobs, live leases) are never walked. `available_at <= now` also means "no live
  // lease" (a leased row's available_at is its lease end); a row whose lease ran out is taken
  // only when it ran out by the cutoff (see `stallWindow`).
  claimByDue: `UPDATE chicory_jobs
             SET locked_by = ?, locked_until = ?, available_at = ?, delivery_count = delivery_count + 1
           WHERE id IN (SELECT id FROM chicory_jobs INDEXED BY chicory_jobs_due
                         WHERE queue = ? AND available_at <= ? AND (locked_until IS NULL OR locked_until <= ?)
                         ORDER BY available_at, id LIMIT ?)
          RETURNING id, queue, body, priority, delivery_count`,
  // The same for a queue of several priorities: the claim index walks rows in hand-out order
  // (priority, then publish order) and stops after `max` due ones, past every row not yet due
  // ahead of them; without INDEXED BY and table statistics, SQLite would sort every ready row.
  claim: `UPDATE chicory_jobs
             SET locked_by = ?, locked_until = ?, available_at = ?, delivery_count = delivery_count + 1
           WHERE id IN (SELECT id FROM chicory_jobs INDEXED BY chicory_jobs_claim
                         WHERE queue = ? AND available_at <= ? AND (locked_until IS NULL OR locked_until <= ?)
                         ORDER BY priority DESC, id LIMIT ?)
          RETURNING id, queue, body, priority, delivery_count`,
  // Params: id, consumer, delivery count.
  ack: "DELETE FROM chicory_jobs WHERE id = ? AND locked_by = ? AND delivery_count = ?",
  // Params: id, consumer, delivery count. The row as an ack would find it (the lease's fence).
  holds: "SELECT 1 AS held FROM chicory_jobs WHERE id = ? AND locked_by = ? AND delivery_count = ?",
  // Params: id, consumer, delivery count. Used inside retry/dead-letter transactions.
  take: `DELETE FROM chicory_jobs WHERE id = ? AND locked_by = ? AND delivery_count = ?
         RETURNING queue, task_id, body, priority, unique_key`,
  // Params: queue, task_id, body, priority, error, failed_at, retry_count.
  insertDlq: `INSERT INTO chicory_dlq (queue, task_id, body, priority, error, failed_at, retry_count)
              VALUES (?, ?, ?, ?, ?, ?, ?)`,
  // Params: now, 1 (not counting the delivery) or 0 (counting it), id, consumer, delivery count.
  release: `UPDATE chicory_jobs
               SET locked_by = NULL, locked_until = NULL, available_at = ?, delivery_count = delivery_count - ?
             WHERE id = ? AND locked_by = ? AND delivery_count = ?`,
  // Params: lease end, lease end, consumer, JSON array of ids.
  renew: `UPDATE chicory_jobs SET locked_until = ?, available_at = ?
           WHERE locked_by = ? AND id IN (SELECT value FROM json_each(?))
          RETURNING id`,
  // Params: consumer, now, lease ms, JSON array of queues.
  touchConsumer: `INSERT INTO chicory_consumers (consumer_id, queue, last_seen, lease_ms)
                  SELECT ?, value, ?, ? FROM json_each(?) WHERE true
                  ON CONFLICT (consumer_id, queue) DO UPDATE
                    SET last_seen = excluded.last_seen, lease_ms = excluded.lease_ms`,
  // Params: consumer.
  removeConsumer: "DELETE FROM chicory_consumers WHERE consumer_id = ?",
  // The file's pulse: the last time any consumer wrote its registration (every renewal does),
  // and the shortest and longest lease of the registered consumers.
  pulse: "SELECT MAX(last_seen) AS at, MIN(lease_ms) AS lo, MAX(lease_ms) AS hi FROM chicory_consumers",
  // Params: queue, cutoff, now. A row whose lease ran out after the cutoff (held back by a window).
  heldBack: `SELECT 1 AS held FROM chicory_jobs INDEXED BY chicory_jobs_due
              WHERE queue = ? AND available_at > ? AND available_at <= ? AND locked_until IS NOT NULL LIMIT 1`,
  // Params: key.
  readMeta: "SELECT value FROM chicory_meta WHERE key = ?",
  // Params: key, value.
  writeMeta: `INSERT INTO chicory_meta (key, value) VALUES (?, ?)
              ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
} as const;

/** `chicory_meta` key of the file's stall window (JSON: {@link StallWindow} without `isNew`). */
const STALL_WINDOW_KEY = "stall_window";

type StatementName = keyof typeof SQL;

/** The broker's data-plane operations over one connection. */
export class SqliteStore {
  readonly #statements: Record<StatementName, SqliteStatement>;

  constructor(db: SqliteDatabase) {
    const prepared: Partial<Record<StatementName, SqliteStatement>> = {};
    for (const name of Object.keys(SQL) as StatementName[]) prepared[name] = db.prepare(SQL[name]);
    this.#statements = prepared as Record<StatementName, SqliteStatement>;
  }

  /** Runs `fn` in one `BEGIN IMMEDIATE` transaction (rolled back when it throws). */
  transaction<T>(fn: () => T): T {
    const s = this.#statements;
    s.begin.run();
    try {
      const result = fn();
      s.commit.run();
      return result;
    } catch (error) {
      try {
        s.rollback.run();
      } catch {
        // SQLite already rolled back (e.g. after SQLITE_FULL); nothing left to undo
      }
      throw error;
    }
  }

  /** `PRAGMA data_version`: changes when another connection commits to the file. */
  dataVersion(): number {
    const row = this.#statements.dataVersion.get() as Record<string, number> | undefined;
    return row ? Number(Object.values(row)[0]) : 0;
  }

  /** Inserts a job; false when a unique publish found a live job with the same task id. */
  insert(job: NewJob, now: number): boolean {
    const result = this.#statements.insert.run(
      job.queue,
      job.taskId,
      job.body,
      job.priority,
      job.availableAt,
      now,
      job.uniqueKey,
    );
    return Number(result.changes) === 1;
  }

  /** When `queue` next has a claimable row (may be in the past), or null when it is empty. */
  nextAvailableAt(queue: string): number | null {
    const row = this.#statements.nextAvailable.get(queue) as { at: number | null } | undefined;
    return row?.at ?? null;
  }

  /**
   * Leases up to `max` claimable rows of `queue` to `consumerId` until `leaseEnd`, taking a row
   * whose lease ran out only when it ran out by `reclaimCutoff` (`now` outside a stall window).
   * Call in a transaction.
   */
  claim(
    queue: string,
    consumerId: string,
    max: number,
    now: number,
    reclaimCutoff: number,
    leaseEnd: number,
  ): ClaimedJob[] {
    const span = this.#statements.prioritySpan.get(queue, queue) as { hi: number | null; lo: number | null };
    const statement = span.hi === span.lo ? this.#statements.claimByDue : this.#statements.claim;
    const rows = statement.all(consumerId, leaseEnd, leaseEnd, queue, now, reclaimCutoff, max) as ClaimedJob[];
    // RETURNING does not keep the subquery's order.
    return rows.sort((a, b) => b.priority - a.priority || a.id - b.id);
  }

  /** True while the delivered row is still this delivery's (what an ack's fence checks). */
  holds(fence: DeliveryFence): boolean {
    return this.#statements.holds.get(fence.id, fence.consumerId, fence.deliveryCount) !== undefined;
  }

  /** Deletes the delivered row; false when the lease was lost (fenced). */
  ack(fence: DeliveryFence): boolean {
    const result = this.#statements.ack.run(fence.id, fence.consumerId, fence.deliveryCount);
    return Number(result.changes) === 1;
  }

  /** Replaces the delivered row by `body`, claimable at `availableAt`; false when fenced. */
  retry(fence: DeliveryFence, body: string, availableAt: number, now: number): boolean {
    return this.transaction(() => {
      const old = this.#take(fence);
      if (old === undefined) return false;
      this.insert(
        { queue: old.queue, taskId: old.task_id, body, priority: old.priority, availableAt, uniqueKey: old.unique_key },
        now,
      );
      return true;
    });
  }

  /** Moves the delivered row to the DLQ; false when fenced. */
  deadLetter(fence: DeliveryFence, error: string, retryCount: number, now: number): boolean {
    return this.transaction(() => {
      const old = this.#take(fence);
      if (old === undefined) return false;
      this.#statements.insertDlq.run(old.queue, old.task_id, old.body, old.priority, error, now, retryCount);
      return true;
    });
  }

  /** Writes an already acknowledged message into `queue`'s DLQ. */
  writeDeadLetter(queue: string, taskId: string, body: string, error: string, retryCount: number, now: number): void {
    this.#statements.insertDlq.run(queue, taskId, body, 0, error, now, retryCount);
  }

  /** Unlocks the delivered row at once, counting the delivery or not; false when fenced. */
  release(fence: DeliveryFence, now: number, countDelivery = false): boolean {
    const result = this.#statements.release.run(
      now,
      countDelivery ? 0 : 1,
      fence.id,
      fence.consumerId,
      fence.deliveryCount,
    );
    return Number(result.changes) === 1;
  }

  /** Extends the leases of `ids` still held by `consumerId`; returns the ids extended. */
  renew(consumerId: string, ids: readonly number[], leaseEnd: number): Set<number> {
    if (ids.length === 0) return new Set();
    const rows = this.#statements.renew.all(leaseEnd, leaseEnd, consumerId, JSON.stringify(ids)) as Array<{
      id: number;
    }>;
    return new Set(rows.map((row) => row.id));
  }

  /** Registers `consumerId` on `queues` (or refreshes its `last_seen`). */
  touchConsumer(consumerId: string, queues: readonly string[], now: number, leaseMs: number): void {
    this.#statements.touchConsumer.run(consumerId, now, leaseMs, JSON.stringify(queues));
  }

  /** True when a row of one of `queues` had its lease run out after `cutoff` (by `now`). */
  heldBack(queues: readonly string[], cutoff: number, now: number): boolean {
    return queues.some((queue) => this.#statements.heldBack.get(queue, cutoff, now) !== undefined);
  }

  /**
   * The file's open stall window, if any, after noting a new quiet time: when no consumer wrote
   * its registration for longer than half the shortest lease registered (and `leaseMs`, this
   * consumer's) before `now`, the window is opened (or widened) until `now` plus the longest
   * lease registered, with that quiet time. Call in a transaction, before this consumer writes
   * its own registration.
   */
  stallWindow(now: number, leaseMs: number): StallWindow | null {
    const s = this.#statements;
    const stored = parseStallWindow((s.readMeta.get(STALL_WINDOW_KEY) as { value: string } | undefined)?.value);
    const open = stored === null || stored.until <= now ? null : { ...stored, isNew: false };
    const pulse = s.pulse.get() as { at: number | null; lo: number | null; hi: number | null } | undefined;
    const quietMs = pulse?.at == null ? 0 : now - pulse.at;
    if (quietMs <= Math.min(leaseMs, pulse?.lo ?? leaseMs) / 2) return open;
    const until = Math.max(open?.until ?? 0, now + Math.max(leaseMs, pulse?.hi ?? leaseMs));
    const widest = Math.max(open?.quietMs ?? 0, quietMs);
    s.writeMeta.run(STALL_WINDOW_KEY, JSON.stringify({ until, quietMs: widest }));
    return { until, quietMs: widest, isNew: open === null };
  }

  /** Unregisters `consumerId` from every queue. */
  removeConsumer(consumerId: string): void {
    this.#statements.removeConsumer.run(consumerId);
  }

  #take(
    fence: DeliveryFence,
  ): { queue: string; task_id: string; body: string; priority: number; unique_key: string | null } | undefined {
    return this.#statements.take.get(fence.id, fence.consumerId, fence.deliveryCount) as
      | { queue: string; task_id: string; body: string; priority: number; unique_key: string | null }
      | undefined;
  }
}

/** A stored stall window, or null when absent or not one (a hand-edited value is ignored). */
function parseStallWindow(value: string | undefined): { until: number; quietMs: number } | null {
  if (value === undefined) return null;
  try {
    const parsed: unknown = JSON.parse(value);
    if (typeof parsed !== "object" || parsed === null) return null;
    const { until, quietMs } = parsed as Record<string, unknown>;
    return Number.isFinite(until) && Number.isFinite(quietMs)
      ? { until: Number(until), quietMs: Number(quietMs) }
      : null;
  } catch {
    return null;
  }
}

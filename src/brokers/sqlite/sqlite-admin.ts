/**
 * Inspection and administration SQL of the SQLite broker (DLQ, counts, purge, stale
 * consumers), prepared once per connection.
 *
 * - Pending = rows whose lease has not expired; queue size = every other row (ready, delayed,
 *   or with an expired lease waiting to be reclaimed).
 * - DLQ replay deletes the DLQ row and inserts the job in one transaction, the insert only
 *   when the delete removed a row: replaying one entry twice, even from two processes,
 *   enqueues it once.
 * - Stale-consumer cleanup is one DELETE whose condition checks that the consumer holds no
 *   live lease, so a consumer that claims between check and delete cannot be removed.
 * @module
 */
import type { SqliteDatabase, SqliteStatement } from "./sqlite-database.js";
import type { SqliteStore } from "./sqlite-store.js";

/** A stored DLQ row. */
export interface DlqRow {
  readonly id: number;
  readonly queue: string;
  readonly task_id: string;
  readonly body: string;
  readonly priority: number;
  readonly error: string;
  readonly failed_at: number;
  readonly retry_count: number;
}

/** Thrown inside a replay's transaction to roll it back when the insert was refused. */
const REFUSED = Symbol("replay refused");

const SQL = {
  // Params: queue, count.
  dlqList: "SELECT * FROM chicory_dlq WHERE queue = ? ORDER BY id LIMIT ?",
  // Params: queue, after id, count.
  dlqListAfter: "SELECT * FROM chicory_dlq WHERE queue = ? AND id > ? ORDER BY id LIMIT ?",
  // Params: id.
  dlqGet: "SELECT * FROM chicory_dlq WHERE id = ?",
  // Params: id, queue (null: any queue).
  dlqDelete: "DELETE FROM chicory_dlq WHERE id = ? AND (? IS NULL OR queue = ?)",
  // Params: queue.
  dlqPurge: "DELETE FROM chicory_dlq WHERE queue = ?",
  dlqCount: "SELECT COUNT(*) AS n FROM chicory_dlq WHERE queue = ?",
  // Params: queue, now.
  pending: "SELECT COUNT(*) AS n FROM chicory_jobs WHERE queue = ? AND locked_until > ?",
  waiting: "SELECT COUNT(*) AS n FROM chicory_jobs WHERE queue = ? AND (locked_until IS NULL OR locked_until <= ?)",
  purge: "DELETE FROM chicory_jobs WHERE queue = ? AND (locked_until IS NULL OR locked_until <= ?)",
  // Params: queue.
  consumers: "SELECT COUNT(*) AS n FROM chicory_consumers WHERE queue = ?",
  // Params: queue, last seen before, now.
  cleanup: `DELETE FROM chicory_consumers
             WHERE queue = ? AND last_seen < ?
               AND NOT EXISTS (SELECT 1 FROM chicory_jobs
                                WHERE locked_by = chicory_consumers.consumer_id AND locked_until > ?)`,
  ping: "SELECT 1 AS ok",
} as const;

type StatementName = keyof typeof SQL;

/** The broker's administrative operations over one connection. */
export class SqliteAdmin {
  readonly #s: Record<StatementName, SqliteStatement>;
  readonly #store: SqliteStore;

  constructor(db: SqliteDatabase, store: SqliteStore) {
    const prepared: Partial<Record<StatementName, SqliteStatement>> = {};
    for (const name of Object.keys(SQL) as StatementName[]) prepared[name] = db.prepare(SQL[name]);
    this.#s = prepared as Record<StatementName, SqliteStatement>;
    this.#store = store;
  }

  /** Oldest `count` DLQ rows of `queue`. */
  dlqList(queue: string, count: number): DlqRow[] {
    return this.#s.dlqList.all(queue, count) as DlqRow[];
  }

  /** Up to `count` DLQ rows of `queue` after row `afterId`, oldest first. */
  dlqListAfter(queue: string, afterId: number, count: number): DlqRow[] {
    return this.#s.dlqListAfter.all(queue, afterId, count) as DlqRow[];
  }

  /** One DLQ row, or undefined. */
  dlqGet(id: number): DlqRow | undefined {
    return this.#s.dlqGet.get(id) as DlqRow | undefined;
  }

  /**
   * Deletes DLQ row `id` and, only if it was there, enqueues `body` on `queue`, in one
   * transaction: `gone` when the row was gone (already replayed or deleted), `refused` (nothing
   * changed) when a job of the same task id is live on `queue` under its unique key. The
   * replayed job holds that key, as a unique publish does (none when `taskId` is unknown).
   */
  dlqReplay(
    row: DlqRow,
    queue: string,
    body: string,
    taskId: string | undefined,
    now: number,
  ): "replayed" | "gone" | "refused" {
    try {
      return this.#store.transaction(() => {
        if (Number(this.#s.dlqDelete.run(row.id, null, null).changes) !== 1) return "gone";
        const job = {
          queue,
          taskId: taskId ?? row.task_id,
          body,
          priority: row.priority,
          availableAt: now,
          uniqueKey: taskId ?? null,
        };
        if (!this.#store.insert(job, now)) throw REFUSED; // rolls the delete back
        return "replayed";
      });
    } catch (error) {
      if (error === REFUSED) return "refused";
      throw error;
    }
  }

  /** Deletes DLQ row `id` (of `queue` when given); false when it did not exist. */
  dlqDelete(id: number, queue: string | null): boolean {
    return Number(this.#s.dlqDelete.run(id, queue, queue).changes) === 1;
  }

  /** Deletes every DLQ row of `queue`; returns how many. */
  dlqPurge(queue: string): number {
    return Number(this.#s.dlqPurge.run(queue).changes);
  }

  /** Number of DLQ rows of `queue`. */
  dlqCount(queue: string): number {
    return this.#count(this.#s.dlqCount, queue);
  }

  /** Rows of `queue` under a live lease. */
  pendingCount(queue: string, now: number): number {
    return this.#count(this.#s.pending, queue, now);
  }

  /** Rows of `queue` not under a live lease (ready, delayed, expired lease). */
  waitingCount(queue: string, now: number): number {
    return this.#count(this.#s.waiting, queue, now);
  }

  /** Deletes the rows of `queue` not under a live lease; returns how many. */
  purgeQueue(queue: string, now: number): number {
    return Number(this.#s.purge.run(queue, now).changes);
  }

  /** Consumers registered on `queue`. */
  consumerCount(queue: string): number {
    return this.#count(this.#s.consumers, queue);
  }

  /** Removes consumers of `queue` unseen since `before` that hold no live lease; returns how many. */
  cleanupConsumers(queue: string, before: number, now: number): number {
    return Number(this.#s.cleanup.run(queue, before, now).changes);
  }

  /** A trivial round trip. */
  ping(): void {
    this.#s.ping.get();
  }

  #count(statement: SqliteStatement, ...params: Array<string | number>): number {
    const row = statement.get(...params) as { n: number } | undefined;
    return Number(row?.n ?? 0);
  }
}

/**
 * The two writes whose SQL differs per dialect: the result upsert with state precedence, and
 * the heartbeat upsert. Both are single statements, so concurrent duplicate writes never fail
 * on the primary key (hazard C11) and need no SELECT-then-INSERT.
 *
 * Precedence (one condition, evaluated against the stored row inside the statement):
 * the row is replaced when its state is not terminal, or the new state is terminal, or the
 * stored row has expired. A late STARTED/RETRY therefore never overwrites SUCCESS, FAILURE
 * or DEAD_LETTERED.
 *
 * Parameters: task id, state, result JSON, error JSON, retries, task name, TTL in ms; all
 * bound, never spliced. Terminal state names are constants of this module.
 * @module
 */
import type { RawBuilder } from "kysely";
import { sql } from "./kysely.js";
import { expiresAt, nowMs } from "./sql-clock.js";
import { type SqlTableNames, tableRef } from "./sql-names.js";
import type { SqlFlavor } from "./sql-types.js";

let terminalList: RawBuilder<unknown> | undefined;
/** `'SUCCESS', 'FAILURE', 'DEAD_LETTERED'` (built on first use: Kysely loads with the backend). */
function terminal(): RawBuilder<unknown> {
  terminalList ??= sql.join(["SUCCESS", "FAILURE", "DEAD_LETTERED"].map((s) => sql.lit(s)));
  return terminalList;
}

/** A result row to write (key columns already encoded). */
export interface ResultRowInput {
  readonly taskId: string;
  readonly state: string;
  readonly result: string | null;
  readonly error: string | null;
  readonly retries: number | null;
  readonly taskName: string | null;
  /** Result TTL in ms (0 = never expires). */
  readonly ttlMs: number;
  /** Whether `state` is terminal (PostgreSQL then notifies waiters in the same statement). */
  readonly isTerminal: boolean;
  /** `setState`: keep the stored result/error when the write brings none. */
  readonly keepPrevious: boolean;
}

/** The precedence upsert of one result row. */
export function upsertResult(flavor: SqlFlavor, names: SqlTableNames, row: ResultRowInput): RawBuilder<unknown> {
  const table = tableRef(names, names.results);
  const now = nowMs(flavor);
  const expires = expiresAt(flavor, row.ttlMs);
  const values = sql`${row.taskId}, ${row.state}, ${row.result}, ${row.error}, ${row.retries}, ${row.taskName}, ${now}, ${expires}`;
  const columns = sql`(task_id, state, result, error, retries, task_name, updated_at, expires_at)`;
  const keep = (next: RawBuilder<unknown>, stored: RawBuilder<unknown>) =>
    row.keepPrevious
      ? sql`result = coalesce(${next}.result, ${stored}.result), error = coalesce(${next}.error, ${stored}.error)`
      : sql`result = ${next}.result, error = ${next}.error`;
  switch (flavor) {
    case "postgres":
    case "sqlite": {
      const insert = sql`insert into ${table} as t ${columns} values (${values})
        on conflict (task_id) do update set
          state = excluded.state, ${keep(sql`excluded`, sql`t`)},
          retries = coalesce(excluded.retries, t.retries), task_name = coalesce(excluded.task_name, t.task_name),
          updated_at = excluded.updated_at, expires_at = excluded.expires_at
        where t.state not in (${terminal()}) or excluded.state in (${terminal()}) or t.expires_at <= ${now}`;
      if (flavor === "sqlite" || !row.isTerminal) return insert;
      // NOTIFY in the same statement: delivered on commit, only when the row was written.
      return sql`with up as (${insert} returning task_id)
        select pg_notify(${names.channel}, up.task_id) from up`;
    }
    case "mysql": {
      // Assignments run left to right and see earlier ones, so `state` is assigned after the
      // columns whose condition reads it, and `expires_at` last; the condition stays true
      // once `state` took the new value (see module doc).
      const may = sql`(state not in (${terminal()}) or values(state) in (${terminal()}) or expires_at <= ${now})`;
      return sql`insert into ${table} ${columns} values (${values})
        on duplicate key update
          result = if(${may}, ${row.keepPrevious ? sql`coalesce(values(result), result)` : sql`values(result)`}, result),
          error = if(${may}, ${row.keepPrevious ? sql`coalesce(values(error), error)` : sql`values(error)`}, error),
          retries = if(${may}, coalesce(values(retries), retries), retries),
          task_name = if(${may}, coalesce(values(task_name), task_name), task_name),
          updated_at = if(${may}, values(updated_at), updated_at),
          state = if(${may}, values(state), state),
          expires_at = if(${may}, values(expires_at), expires_at)`;
    }
    case "mssql":
      return sql`merge into ${table} with (holdlock) as t
        using (select ${row.taskId} as task_id, ${row.state} as state, ${row.result} as result, ${row.error} as error,
          ${row.retries} as retries, ${row.taskName} as task_name, ${now} as updated_at, ${expires} as expires_at) as s
        on t.task_id = s.task_id
        when matched and (t.state not in (${terminal()}) or s.state in (${terminal()}) or t.expires_at <= s.updated_at) then
          update set state = s.state, ${keep(sql`s`, sql`t`)},
            retries = coalesce(s.retries, t.retries), task_name = coalesce(s.task_name, t.task_name),
            updated_at = s.updated_at, expires_at = s.expires_at
        when not matched then
          insert (task_id, state, result, error, retries, task_name, updated_at, expires_at)
          values (s.task_id, s.state, s.result, s.error, s.retries, s.task_name, s.updated_at, s.expires_at);`;
  }
}

/** The heartbeat upsert of one worker row (last write wins). */
export function upsertHeartbeat(
  flavor: SqlFlavor,
  names: SqlTableNames,
  workerId: string,
  stats: string,
  ttlMs: number,
): RawBuilder<unknown> {
  const table = tableRef(names, names.workers);
  const now = nowMs(flavor);
  const expires = sql`(${now} + ${Math.max(1, Math.round(ttlMs))})`;
  switch (flavor) {
    case "postgres":
    case "sqlite":
      return sql`insert into ${table} (worker_id, stats, last_heartbeat, expires_at) values (${workerId}, ${stats}, ${now}, ${expires})
        on conflict (worker_id) do update set
          stats = excluded.stats, last_heartbeat = excluded.last_heartbeat, expires_at = excluded.expires_at`;
    case "mysql":
      return sql`insert into ${table} (worker_id, stats, last_heartbeat, expires_at) values (${workerId}, ${stats}, ${now}, ${expires})
        on duplicate key update
          stats = values(stats), last_heartbeat = values(last_heartbeat), expires_at = values(expires_at)`;
    case "mssql":
      return sql`merge into ${table} with (holdlock) as t
        using (select ${workerId} as worker_id, ${stats} as stats, ${now} as last_heartbeat, ${expires} as expires_at) as s
        on t.worker_id = s.worker_id
        when matched then update set stats = s.stats, last_heartbeat = s.last_heartbeat, expires_at = s.expires_at
        when not matched then insert (worker_id, stats, last_heartbeat, expires_at)
          values (s.worker_id, s.stats, s.last_heartbeat, s.expires_at);`;
  }
}

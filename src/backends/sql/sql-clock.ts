/**
 * The database's clock as epoch milliseconds (BIGINT), per dialect. Heartbeats, TTLs and
 * `updated_at` use it so workers with skewed clocks agree (hazard C17).
 * @module
 */
import type { RawBuilder } from "kysely";
import { sql } from "./kysely.js";
import type { SqlFlavor } from "./sql-types.js";

/** An SQL expression giving the database's current time in epoch milliseconds. */
export function nowMs(flavor: SqlFlavor): RawBuilder<number> {
  switch (flavor) {
    case "postgres":
      return sql<number>`(extract(epoch from clock_timestamp()) * 1000)::bigint`;
    case "mysql":
      // The session time zone is UTC (set per connection), so no DST-ambiguous hour.
      return sql<number>`cast(unix_timestamp(current_timestamp(3)) * 1000 as signed)`;
    case "sqlite":
      return sql<number>`cast((julianday('now') - 2440587.5) * 86400000 as integer)`;
    case "mssql":
      return sql<number>`datediff_big(millisecond, '1970-01-01', sysutcdatetime())`;
  }
}

/** `now + ms`, or SQL NULL when `ms` is 0 (never expires). */
export function expiresAt(flavor: SqlFlavor, ms: number): RawBuilder<number | null> {
  return ms > 0 ? sql<number>`(${nowMs(flavor)} + ${Math.round(ms)})` : sql<null>`null`;
}

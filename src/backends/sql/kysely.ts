/**
 * Kysely, loaded on first use. Importing it costs about 20 MB of RSS, so the SQL backends load
 * it when a backend connects ({@link loadKysely}), not when `chicory` is imported: an app on
 * Redis or RabbitMQ never pays for it. {@link sql} is the `sql` tag of Kysely, usable once a
 * backend is connecting (every query runs after `connect()`).
 * @module
 */
import type { Sql } from "kysely";

type KyselyModule = typeof import("kysely");

let loaded: KyselyModule | undefined;

/** Imports Kysely once (idempotent). */
export async function loadKysely(): Promise<KyselyModule> {
  loaded ??= await import("kysely");
  return loaded;
}

function kysely(): KyselyModule {
  if (!loaded) throw new Error("internal error: a SQL statement was built before the backend loaded Kysely");
  return loaded;
}

/** Kysely's `sql` template tag and helpers (`sql.join`, `sql.lit`, `sql.table`, …), resolved lazily. */
export const sql: Sql = new Proxy(() => undefined, {
  apply: (_target, _this, args: unknown[]) => (kysely().sql as (...a: unknown[]) => unknown)(...args),
  get: (_target, property) => {
    const value = Reflect.get(kysely().sql, property) as unknown;
    return typeof value === "function" ? value.bind(kysely().sql) : value;
  },
}) as unknown as Sql;

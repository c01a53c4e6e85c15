/**
 * Creates (or checks) the backend's tables on connect. Idempotent, and safe when many
 * workers start at once: the whole creation runs under a database lock
 * (PostgreSQL `pg_advisory_xact_lock`, MySQL `GET_LOCK`, SQLite `BEGIN IMMEDIATE`, SQL Server
 * `sp_getapplock`), so concurrent `CREATE TABLE IF NOT EXISTS` never race on catalogs.
 * The schema is versioned (`<prefix>schema_version`): a database written by a newer release
 * is refused rather than misread.
 * @module
 */
import type { Kysely, Transaction } from "kysely";
import { ConfigurationError } from "../../errors.js";
import { sql } from "./kysely.js";
import { createStatements, indexNames, SCHEMA_VERSION } from "./sql-ddl.js";
import { type SqlTableNames, tableRef } from "./sql-names.js";
import type { SqlDatabase, SqlFlavor } from "./sql-types.js";

type Executor = Kysely<SqlDatabase> | Transaction<SqlDatabase>;

/** Creates the tables when missing and records the schema version. */
export async function ensureSchema(flavor: SqlFlavor, db: Kysely<SqlDatabase>, names: SqlTableNames): Promise<void> {
  const lockKey = `chicory_schema:${names.schema ?? ""}:${names.results}`;
  switch (flavor) {
    case "postgres":
      await db.transaction().execute(async (trx) => {
        await sql`select pg_advisory_xact_lock(hashtext(${lockKey}))`.execute(trx);
        // (created only when missing: `create schema if not exists` needs CREATE on the database
        // even when the schema is there, which a user given a schema of its own lacks)
        if (names.schema !== undefined) {
          const found = await sql`select 1 from pg_namespace where nspname = ${names.schema}`.execute(trx);
          if (found.rows.length === 0) await sql`create schema if not exists ${sql.id(names.schema)}`.execute(trx);
        }
        // Tables and indexes all there: no DDL (`create table if not exists` needs CREATE on the
        // schema and `create index if not exists` ownership of the table, even when they exist;
        // a user with rights on the tables only can then connect)
        if (await pgSchemaPresent(trx, names)) await checkVersion(trx, names);
        else await createAll(flavor, trx, names);
      });
      return;
    case "mysql":
      await db.connection().execute(async (conn) => {
        const got = await sql<{ ok: number | null }>`select get_lock(${lockKey}, 60) as ok`.execute(conn);
        if (Number(got.rows[0]?.ok) !== 1) throw new Error(`could not take the schema lock ${lockKey} within 60 s`);
        try {
          const collation = await mysqlKeyCollation(conn);
          await createAll(flavor, conn, names, collation);
          await createMysqlIndexes(conn, names);
        } finally {
          await sql`select release_lock(${lockKey})`.execute(conn);
        }
      });
      return;
    case "sqlite":
      await db.connection().execute(async (conn) => {
        await beginImmediate(conn);
        try {
          await createAll(flavor, conn, names);
          await sql`commit`.execute(conn);
        } catch (error) {
          await sql`rollback`.execute(conn).catch(() => undefined);
          throw error;
        }
      });
      return;
    case "mssql":
      await db.transaction().execute(async (trx) => {
        await sql`exec sp_getapplock @Resource = ${lockKey}, @LockMode = 'Exclusive', @LockOwner = 'Transaction', @LockTimeout = 60000`.execute(
          trx,
        );
        await createAll(flavor, trx, names);
      });
      return;
  }
}

/**
 * `BEGIN IMMEDIATE` without the driver's busy wait: better-sqlite3 waits synchronously, which
 * would block the event loop (and so another connection of this process that holds the lock
 * across an await). Waits asynchronously instead, up to 60 s.
 */
async function beginImmediate(conn: Executor): Promise<void> {
  const current = await sql<{ timeout: number }>`pragma busy_timeout`.execute(conn);
  const timeout = Number(current.rows[0]?.timeout ?? 5000);
  await sql`pragma busy_timeout = 0`.execute(conn);
  const deadline = Date.now() + 60_000;
  try {
    for (;;) {
      try {
        await sql`begin immediate`.execute(conn);
        return;
      } catch (error) {
        const code = (error as { code?: unknown }).code;
        if (typeof code !== "string" || !code.startsWith("SQLITE_BUSY") || Date.now() > deadline) throw error;
        await new Promise((resolve) => setTimeout(resolve, 5 + Math.random() * 20));
      }
    }
  } finally {
    await sql.raw(`pragma busy_timeout = ${Math.max(0, Math.floor(timeout))}`).execute(conn);
  }
}

async function createAll(flavor: SqlFlavor, db: Executor, names: SqlTableNames, keyCollation?: string): Promise<void> {
  for (const statement of createStatements(flavor, names, keyCollation)) await statement.execute(db);
  await checkVersion(db, names);
}

/** Whether the three tables and the two expiry indexes exist (PostgreSQL, where the queries will look). */
async function pgSchemaPresent(db: Executor, names: SqlTableNames): Promise<boolean> {
  const quote = (name: string) => `"${name.replaceAll('"', '""')}"`;
  const relations = [names.results, names.workers, names.schemaVersion, ...indexNames(names).map((i) => i.index)];
  const refs = relations.map((name) =>
    names.schema === undefined ? quote(name) : `${quote(names.schema)}.${quote(name)}`,
  );
  const found = await sql<{ missing: number }>`select count(*)::int as missing from unnest(${refs}::text[]) as r(ref)
    where to_regclass(r.ref) is null`.execute(db);
  return Number(found.rows[0]?.missing ?? 1) === 0;
}

/** Records the schema version in a new database; refuses one written by a newer release. */
async function checkVersion(db: Executor, names: SqlTableNames): Promise<void> {
  const table = names.qualified.schemaVersion;
  const row = await db.selectFrom(table).select("version").where("id", "=", 1).executeTakeFirst();
  if (row === undefined) {
    await db.insertInto(table).values({ id: 1, version: SCHEMA_VERSION }).execute();
    return;
  }
  const found = Number(row.version);
  if (found > SCHEMA_VERSION) {
    throw new ConfigurationError(
      `the tables ${names.results}/${names.workers} use schema version ${found}, newer than this release supports (${SCHEMA_VERSION}): upgrade chicory or use another tablePrefix`,
    );
  }
  // Migrations from older versions go here when SCHEMA_VERSION grows.
}

/** A binary NO PAD collation for keys, so ids differing in case or trailing spaces stay distinct. */
async function mysqlKeyCollation(db: Executor): Promise<string> {
  const result = await sql<{ v: string }>`select version() as v`.execute(db);
  const version = String(result.rows[0]?.v ?? "");
  if (/mariadb/i.test(version)) return "utf8mb4_nopad_bin";
  const major = Number(/^(\d+)/.exec(version)?.[1] ?? 0);
  return major >= 8 ? "utf8mb4_0900_bin" : "utf8mb4_bin";
}

async function createMysqlIndexes(db: Executor, names: SqlTableNames): Promise<void> {
  for (const { table, index } of indexNames(names)) {
    const found = await sql<{ n: number }>`select count(*) as n from information_schema.statistics
      where table_schema = database() and table_name = ${table} and index_name = ${index}`.execute(db);
    if (Number(found.rows[0]?.n ?? 0) === 0) {
      await sql`create index ${sql.id(index)} on ${tableRef(names, table)} (expires_at)`.execute(db);
    }
  }
}

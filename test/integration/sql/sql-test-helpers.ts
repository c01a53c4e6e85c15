/**
 * Helpers of the SQL backend tests: fresh table prefixes, dropping what a test created,
 * raw driver access for fault injection, and temp SQLite files.
 */
import { rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import mysql from "mysql2/promise";
import pg from "pg";
import { SERVICES, uniqueName } from "../../helpers/services.js";

/** A fresh table prefix (lower case, so PostgreSQL's unquoted names match). */
export function freshPrefix(): string {
  return `${uniqueName("t_")}_`;
}

/** Runs `fn` with a one-off pg client. */
export async function withPg<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: SERVICES.postgres });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** Runs `fn` with a one-off mysql2 connection. */
export async function withMysql<T>(fn: (conn: mysql.Connection) => Promise<T>): Promise<T> {
  const conn = await mysql.createConnection({ uri: SERVICES.mysql, charset: "UTF8MB4_UNICODE_CI" });
  try {
    return await fn(conn);
  } finally {
    await conn.end();
  }
}

const TABLES = ["results", "workers", "schema_version"];

/** Drops the PostgreSQL tables (and schema, when given) of `prefix`. */
export async function dropPgTables(prefix: string, schema?: string): Promise<void> {
  await withPg(async (client) => {
    if (schema) {
      await client.query(`drop schema if exists "${schema}" cascade`);
      return;
    }
    for (const t of TABLES) await client.query(`drop table if exists "${prefix}${t}"`);
  });
}

/** Drops the MySQL tables of `prefix`. */
export async function dropMysqlTables(prefix: string): Promise<void> {
  await withMysql(async (conn) => {
    for (const t of TABLES) await conn.query(`drop table if exists \`${prefix}${t}\``);
  });
}

/** A temp SQLite file path and its cleanup. */
export function tempSqliteFile(): { path: string; remove(): void } {
  const path = join(tmpdir(), `${uniqueName("chicory-sql-")}.db`);
  return {
    path,
    remove: () => {
      for (const suffix of ["", "-wal", "-shm", "-journal"]) rmSync(`${path}${suffix}`, { force: true });
    },
  };
}

/** Polls `fn` until it returns true or `timeoutMs` passes. */
export async function until(fn: () => Promise<boolean> | boolean, timeoutMs = 5000, intervalMs = 25): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

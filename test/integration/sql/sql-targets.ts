/**
 * The real databases the SQL backend tests run on, each with a factory of fresh,
 * isolated backends and their cleanup.
 */
import { MysqlBackend, PostgresBackend, type SqlBackend, SqliteBackend } from "../../../src/sql.js";
import { SERVICES, skipUnless } from "../../helpers/services.js";
import { dropMysqlTables, dropPgTables, freshPrefix, tempSqliteFile } from "./sql-test-helpers.js";

/** A backend under test and how to remove what it created. */
export interface SqlTarget {
  readonly name: "postgres" | "mysql" | "sqlite";
  readonly skip: boolean;
  /** A fresh backend (not connected); `shared` reuses the same tables/file as `of`. */
  create(options?: { of?: SqlBackend; pollInterval?: number; resultTtl?: number }): SqlBackend;
  /** Drops the tables / file of every backend created. */
  cleanup(): Promise<void>;
}

function target(name: SqlTarget["name"], skip: boolean): SqlTarget {
  const prefixes = new Map<SqlBackend, string>();
  const files = new Map<SqlBackend, { path: string; remove(): void }>();
  return {
    name,
    skip,
    create(options = {}) {
      const tablePrefix = options.of ? (prefixes.get(options.of) ?? freshPrefix()) : freshPrefix();
      const file = options.of ? files.get(options.of) : undefined;
      const common = { tablePrefix, env: {}, pollInterval: options.pollInterval ?? 0.1, resultTtl: options.resultTtl };
      let backend: SqlBackend;
      if (name === "postgres") backend = new PostgresBackend({ url: SERVICES.postgres, poolSize: 2, ...common });
      else if (name === "mysql") backend = new MysqlBackend({ url: SERVICES.mysql, poolSize: 2, ...common });
      else {
        const f = file ?? tempSqliteFile();
        backend = new SqliteBackend({ path: f.path, ...common });
        files.set(backend, f);
      }
      prefixes.set(backend, tablePrefix);
      return backend;
    },
    async cleanup() {
      for (const prefix of new Set(prefixes.values())) {
        if (name === "postgres") await dropPgTables(prefix);
        if (name === "mysql") await dropMysqlTables(prefix);
      }
      for (const f of new Set(files.values())) f.remove();
      prefixes.clear();
      files.clear();
    },
  };
}

/** Every database reachable here (SQLite always). */
export async function sqlTargets(): Promise<SqlTarget[]> {
  return [
    target("postgres", await skipUnless("postgres")),
    target("mysql", await skipUnless("mysql")),
    target("sqlite", false),
  ];
}

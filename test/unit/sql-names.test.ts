/**
 * SQL names and keys without a server: the PostgreSQL NOTIFY channel at the 63-byte identifier
 * limit, and which task ids a backend can store (PostgreSQL doubles a backslash or NUL).
 */
import { describe, expect, it } from "vitest";
import { tableNames } from "../../src/backends/sql/sql-names.js";
import { MysqlBackend, PostgresBackend } from "../../src/sql.js";

describe("NOTIFY channel name", () => {
  it("is the schema and prefix joined while they fit in 63 bytes", () => {
    const prefix = `${"p".repeat(63 - "results".length)}`;
    expect(prefix.length + "results".length).toBe(63);
    expect(tableNames(prefix, undefined).channel).toBe(`${prefix}results`);
    expect(tableNames("chicory_", "app").channel).toBe("app_chicory_results");
  });

  it("is cut to 63 bytes with a hash of the whole from 64 on: the same for the same settings, distinct for others", () => {
    const prefix = `${"p".repeat(64 - "results".length)}`;
    const channel = tableNames(prefix, undefined).channel;
    expect(channel).toHaveLength(63);
    expect(channel).toMatch(/^p+_[0-9a-f]{16}$/);
    expect(tableNames(prefix, undefined).channel).toBe(channel);
    // two settings that share the first 46 characters still get different channels
    expect(tableNames(`${prefix}x`, undefined).channel).not.toBe(channel);
    expect(tableNames("chicory_", "s".repeat(60)).channel).not.toBe(
      tableNames("chicory_", `${"s".repeat(59)}t`).channel,
    );
  });
});

describe("task ids a backend cannot store", () => {
  const postgres = new PostgresBackend({ url: "postgres://u@127.0.0.1:1/db", env: {} });
  const mysql = new MysqlBackend({ url: "mysql://u@127.0.0.1:1/db", env: {} });

  it("PostgreSQL: 255 characters as stored fit, 256 do not (a backslash or NUL counts two)", () => {
    expect(postgres.taskIdProblem("a".repeat(255))).toBeUndefined();
    expect(postgres.taskIdProblem(`${"\\".repeat(127)}a`)).toBeUndefined(); // 254 + 1
    expect(postgres.taskIdProblem("\\".repeat(128))).toMatch(/stores it as 256 characters .* over its 255/);
    expect(postgres.taskIdProblem("\0".repeat(128))).toMatch(/stores it as 256 characters/);
    expect(postgres.taskIdProblem(`${"\\".repeat(127)}ab`)).toMatch(/stores it as 256 characters/);
  });

  it("MySQL stores ids as they are", () => {
    expect(mysql.taskIdProblem("\\".repeat(255))).toBeUndefined();
  });
});

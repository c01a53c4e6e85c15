/**
 * SQL Server has no server here: the backend runs its real code paths against a recording
 * Kysely driver (MSSQL adapter and compiler), and the tests check the generated statements.
 */
import {
  type CompiledQuery,
  type DatabaseConnection,
  type Driver,
  Kysely,
  MssqlAdapter,
  MssqlIntrospector,
  MssqlQueryCompiler,
  type QueryResult,
} from "kysely";
import { describe, expect, it } from "vitest";
import { tediousConfig } from "../../src/backends/sql/dialects/mssql.js";
import type { SqlDatabase } from "../../src/backends/sql/sql-types.js";
import { ValidationError } from "../../src/errors.js";
import { mssqlDialect, SqlBackend, type SqlDialect } from "../../src/sql.js";

type Responder = (query: CompiledQuery) => Record<string, unknown>[];

function recordingDialect(respond: Responder = () => []): { dialect: SqlDialect; queries: CompiledQuery[] } {
  const queries: CompiledQuery[] = [];
  const connection: DatabaseConnection = {
    async executeQuery<R>(query: CompiledQuery): Promise<QueryResult<R>> {
      queries.push(query);
      return { rows: respond(query) as R[], numAffectedRows: 0n };
    },
    // biome-ignore lint/correctness/useYield: never streamed
    async *streamQuery() {
      throw new Error("not used");
    },
  };
  const driver: Driver = {
    init: async () => undefined,
    acquireConnection: async () => connection,
    beginTransaction: async () => undefined,
    commitTransaction: async () => undefined,
    rollbackTransaction: async () => undefined,
    releaseConnection: async () => undefined,
    destroy: async () => undefined,
  };
  const db = new Kysely<SqlDatabase>({
    dialect: {
      createAdapter: () => new MssqlAdapter(),
      createDriver: () => driver,
      createIntrospector: (k) => new MssqlIntrospector(k),
      createQueryCompiler: () => new MssqlQueryCompiler(),
    },
  });
  return {
    queries,
    dialect: {
      flavor: "mssql",
      displayUrl: "mssql://recording",
      connect: async () => ({ db, close: () => db.destroy(), isPoolTimeout: () => false }),
    },
  };
}

const HOSTILE = "'; DROP TABLE x;-- \u0000 🎉";

describe("mssql compiled SQL", () => {
  it("creates the schema under an application lock, idempotently", async () => {
    const { dialect, queries } = recordingDialect();
    const backend = new SqlBackend({ dialect, tablePrefix: "cq_", env: {} });
    await backend.connect();
    const text = queries.map((q) => q.sql).join("\n");
    expect(text).toContain("exec sp_getapplock @Resource = @1, @LockMode = 'Exclusive', @LockOwner = 'Transaction'");
    expect(text).toContain(`if object_id(@1, N'U') is null create table "cq_results"`);
    expect(text).toContain("nvarchar(255) collate Latin1_General_BIN2 not null primary key");
    expect(text).toContain("nvarchar(max)");
    expect(text).toMatch(/select "version" from "cq_schema_version" where "id" = @1/);
    expect(text).not.toMatch(/\blimit\b/i);
    expect(text).toContain('insert into "cq_schema_version" ("id", "version") values (@1, @2)');
    await backend.disconnect();
  });

  it("stores results with a MERGE ... WITH (HOLDLOCK) upsert carrying state precedence", async () => {
    const { dialect, queries } = recordingDialect();
    const backend = new SqlBackend({ dialect, env: {} });
    await backend.connect();
    queries.length = 0;
    await backend.storeResult({
      taskId: HOSTILE,
      state: "SUCCESS",
      result: { v: HOSTILE },
      taskName: HOSTILE,
      updatedAt: "",
    });
    await backend.setState(HOSTILE, "STARTED");
    const [store, started] = queries;
    expect(store?.sql).toMatch(/^merge into "chicory_results" with \(holdlock\) as t/);
    expect(store?.sql).toContain(
      "when matched and (t.state not in ('SUCCESS', 'FAILURE', 'DEAD_LETTERED') or s.state in ('SUCCESS', 'FAILURE', 'DEAD_LETTERED') or t.expires_at <= s.updated_at)",
    );
    expect(store?.sql).toContain("datediff_big(millisecond, '1970-01-01', sysutcdatetime())");
    expect(store?.sql).toContain("result = s.result, error = s.error");
    expect(started?.sql).toContain("result = coalesce(s.result, t.result), error = coalesce(s.error, t.error)");
    // values travel only as parameters
    expect(store?.sql).not.toContain("DROP TABLE");
    expect(store?.parameters).toContain(HOSTILE);
    expect(store?.parameters).toContain(JSON.stringify({ v: HOSTILE }));
    expect(store?.parameters).toContain(86_400_000);
    await backend.disconnect();
  });

  it("reads with quoted identifiers, @n parameters and no LIMIT", async () => {
    const { dialect, queries } = recordingDialect((q) =>
      q.sql.startsWith('select "task_id"')
        ? [
            {
              task_id: "a",
              state: "SUCCESS",
              result: "1",
              error: null,
              retries: 2,
              task_name: "t",
              updated_at: "1700000000000",
            },
          ]
        : q.sql.startsWith('select "stats"')
          ? [{ stats: JSON.stringify({ workerId: "w" }), last_heartbeat: "1700000000000" }]
          : [],
    );
    const backend = new SqlBackend({ dialect, env: {} });
    await backend.connect();
    queries.length = 0;
    expect(await backend.getResult("a")).toEqual({
      taskId: "a",
      state: "SUCCESS",
      result: 1,
      retries: 2,
      taskName: "t",
      updatedAt: new Date(1_700_000_000_000).toISOString(),
    });
    expect((await backend.getActiveWorkers())[0]?.lastHeartbeat).toBe(new Date(1_700_000_000_000).toISOString());
    await backend.storeHeartbeat({ workerId: "w" } as never, 30);
    await backend.cleanupStaleClients(300);
    await backend.deleteResult("a");
    const [get, active, heartbeat, cleanupWorkers, cleanupResults, del] = queries.map((q) => q.sql);
    expect(get).toContain('from "chicory_results" where "task_id" in (@1) and ("expires_at" is null or "expires_at" >');
    expect(active).toContain('from "chicory_workers" where "expires_at" > datediff_big');
    expect(heartbeat).toMatch(/^merge into "chicory_workers" with \(holdlock\) as t/);
    expect(cleanupWorkers).toContain('delete from "chicory_workers" where "last_heartbeat" <');
    expect(cleanupResults).toContain('delete from "chicory_results" where "expires_at" <=');
    expect(del).toBe('delete from "chicory_results" where "task_id" = @1');
    for (const q of queries) expect(q.sql).not.toMatch(/\blimit\b|\$\d|`|\?/i);
    await backend.disconnect();
  });

  it("rejects keys longer than 255 characters before any SQL", async () => {
    const { dialect } = recordingDialect();
    const backend = new SqlBackend({ dialect, env: {} });
    await backend.connect();
    await expect(backend.setState("x".repeat(256), "STARTED")).rejects.toBeInstanceOf(ValidationError);
    expect(await backend.getResult("x".repeat(256))).toBeNull();
    await backend.disconnect();
  });

  it("tedious's request and connect timeouts are the backend's queryTimeout and poolTimeout, not tedious's 15 s", () => {
    const url = "mssql://sa:secret@127.0.0.1:1/db";
    const options = (config: Record<string, unknown>) => config.options as Record<string, unknown>;
    expect(options(tediousConfig(url))).toMatchObject({ requestTimeout: 60_000, connectTimeout: 30_000 });
    expect(options(tediousConfig(url, { queryTimeoutMs: 0, connectTimeoutMs: 5_000 }))).toMatchObject({
      requestTimeout: 0,
      connectTimeout: 5_000,
    });
  });

  it("the real dialect imports tedious and tarn lazily and compiles without a server", async () => {
    const dialect = mssqlDialect({ url: "mssql://sa:secret@127.0.0.1:1/db?encrypt=false", env: {} });
    expect(dialect.displayUrl).toBe("mssql://sa:***@127.0.0.1:1/db?encrypt=false");
    const connection = await dialect.connect();
    const compiled = connection.db.selectFrom("results").selectAll().top(1).compile();
    expect(compiled.sql).toBe('select top(1) * from "results"');
    await connection.close();
  });
});

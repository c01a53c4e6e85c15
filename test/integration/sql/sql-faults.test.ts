/**
 * Faults on the real servers: pool exhaustion raises DbPoolExhaustedError; killed
 * connections (pg_terminate_backend, MariaDB KILL CONNECTION) never lose an acknowledged
 * write and the backend recovers on its own; PostgreSQL LISTEN wakes waiters and recovers.
 */
import mysql from "mysql2";
import type pg from "pg";
import { afterEach, describe, expect, it } from "vitest";
import { BackendConnectionError, DbPoolExhaustedError } from "../../../src/errors.js";
import { MysqlBackend, type MysqlPoolLike, PostgresBackend, type SqlBackend } from "../../../src/sql.js";
import { SERVICES, skipUnless, uniqueName } from "../../helpers/services.js";
import { dropMysqlTables, dropPgTables, freshPrefix, until, withMysql, withPg } from "./sql-test-helpers.js";

const skipPg = await skipUnless("postgres");
const skipMysql = await skipUnless("mysql");

/** Runs `count` writes, 5 at a time, calling `midway` once after a third; returns ids written and errors. */
async function writeWhile(backend: SqlBackend, count: number, midway: () => Promise<void>) {
  const written: string[] = [];
  const errors: unknown[] = [];
  let next = 0;
  let fired = false;
  const lane = async () => {
    while (next < count) {
      const i = next++;
      if (i >= count / 3 && !fired) {
        fired = true;
        await midway();
      }
      const id = `kill-${i}`;
      try {
        await backend.storeResult({ taskId: id, state: "SUCCESS", result: i, updatedAt: "" });
        written.push(id);
      } catch (error) {
        errors.push(error);
      }
    }
  };
  await Promise.all(Array.from({ length: 5 }, lane));
  return { written, errors };
}

async function expectDurable(backend: SqlBackend, written: string[], errors: unknown[]): Promise<void> {
  for (const error of errors) expect(error).toBeInstanceOf(BackendConnectionError);
  for (const id of written) expect((await backend.getResult(id))?.state).toBe("SUCCESS");
  await backend.storeResult({ taskId: "after-kill", state: "SUCCESS", result: 1, updatedAt: "" });
  expect((await backend.getResult("after-kill"))?.result).toBe(1);
}

describe.skipIf(skipPg)("postgres faults", () => {
  const prefix = freshPrefix();
  const app = uniqueName("chicory_test_");
  let backend: PostgresBackend | undefined;
  const make = (extra: Record<string, unknown> = {}) => {
    backend = new PostgresBackend({
      url: SERVICES.postgres,
      tablePrefix: prefix,
      applicationName: app,
      env: {},
      ...extra,
    });
    return backend;
  };
  const listening = async () =>
    withPg(async (c) => {
      const r = await c.query(
        "select count(*)::int as n from pg_stat_activity where application_name = $1 and query ilike 'listen%'",
        [app],
      );
      return (r.rows[0]?.n ?? 0) > 0;
    });
  const killMine = () =>
    withPg((c) =>
      c.query(
        "select pg_terminate_backend(pid) from pg_stat_activity where datname = 'test' and pid <> pg_backend_pid() and application_name = $1",
        [app],
      ),
    );

  afterEach(async () => {
    await backend?.disconnect();
    backend = undefined;
    await dropPgTables(prefix);
  });

  it("LISTEN/NOTIFY wakes a waiter without polling (poll interval 60 s)", async () => {
    const b = make({ pollInterval: 60 });
    await b.connect();
    const id = uniqueName("n-");
    const waiting = b.waitForResult(id, { timeoutMs: 10_000 });
    await until(listening);
    const started = Date.now();
    await b.storeResult({ taskId: id, state: "SUCCESS", result: "woken", updatedAt: "" });
    expect((await waiting)?.result).toBe("woken");
    expect(Date.now() - started).toBeLessThan(8000);
  });

  it("after pg_terminate_backend, writes succeed and the listener recovers", { timeout: 20_000 }, async () => {
    const b = make({ pollInterval: 60 });
    await b.connect();
    const first = b.waitForResult(uniqueName("n-"), { timeoutMs: 100 });
    await first;
    await until(listening);
    const { written, errors } = await writeWhile(b, 60, async () => {
      await killMine();
    });
    await expectDurable(b, written, errors);
    expect(written.length).toBeGreaterThan(40);
    // The LISTEN connection was killed too: it comes back and wakes waiters again.
    await until(listening, 10_000, 50);
    const id = uniqueName("n-");
    const waiting = b.waitForResult(id, { timeoutMs: 10_000 });
    const started = Date.now();
    await b.storeResult({ taskId: id, state: "FAILURE", error: { type: "E", message: "m" }, updatedAt: "" });
    expect((await waiting)?.state).toBe("FAILURE");
    expect(Date.now() - started).toBeLessThan(8000);
  });

  it("statements given up after queryTimeout behind a lock do not leave server sessions waiting", {
    timeout: 30_000,
  }, async () => {
    const b = make({ poolSize: 1, maxOverflow: 1, queryTimeout: 1 });
    await b.connect();
    const lockWaiters = async (c: pg.Client): Promise<number> => {
      const r = await c.query(
        "select count(*)::int as n from pg_stat_activity where application_name = $1 and wait_event_type = 'Lock'",
        [app],
      );
      return (r.rows[0] as { n: number } | undefined)?.n ?? 0;
    };
    await withPg(async (c) => {
      await c.query("begin");
      await c.query(`lock table "${prefix}results" in access exclusive mode`);
      try {
        // each read is given up after 1 s (its socket closed), and the pool opens another
        for (let i = 0; i < 3; i++) await b.getResult(`locked-${i}`).catch(() => undefined);
        // before, every given-up session waited for the lock until it was released (a long lock
        // filled max_connections); now the server ends each a second after the client left
        await until(async () => (await lockWaiters(c)) === 0, 10_000, 100);
      } finally {
        await c.query("commit");
      }
    });
    expect(await b.getResult("after-lock")).toBeNull();
  });

  it("a lower statement_timeout set for the session (URL options) is kept, not raised to queryTimeout + 1 s", {
    timeout: 30_000,
  }, async () => {
    const url = new URL(SERVICES.postgres);
    url.searchParams.set("options", "-c statement_timeout=1500");
    const b = make({ url: url.toString(), poolSize: 1, maxOverflow: 0, queryTimeout: 20 });
    await b.connect();
    await withPg(async (c) => {
      await c.query("begin");
      await c.query(`lock table "${prefix}results" in access exclusive mode`);
      try {
        // the server ends the read at 1.5 s (before, the connection's own 21 s replaced it and
        // the read waited for the client's 20 s)
        const failure = await b.getResult("locked").catch((error: unknown) => error);
        expect(failure).toBeInstanceOf(BackendConnectionError);
        expect(String((failure as Error).message)).toMatch(/canceling statement due to statement timeout/);
      } finally {
        await c.query("commit");
      }
    });
    expect(await b.getResult("after-lock")).toBeNull();
  });

  it("pool exhaustion raises DbPoolExhaustedError (pool size 1, connection held)", async () => {
    const b = make({ poolSize: 1, maxOverflow: 0, poolTimeout: 0.3 });
    await b.connect();
    await withPg(async (c) => {
      await c.query("begin");
      await c.query(`lock table "${prefix}results" in access exclusive mode`);
      const held = b.storeResult({ taskId: "held", state: "SUCCESS", result: 1, updatedAt: "" });
      await until(async () => {
        const r = await c.query(
          "select count(*)::int as n from pg_stat_activity where application_name = $1 and wait_event_type = 'Lock'",
          [app],
        );
        return (r.rows[0]?.n ?? 0) > 0;
      });
      await expect(b.getResult("other")).rejects.toBeInstanceOf(DbPoolExhaustedError);
      await c.query("commit");
      await held;
    });
    expect((await b.getResult("held"))?.state).toBe("SUCCESS");
  });
});

describe.skipIf(skipMysql)("mariadb faults", () => {
  const prefix = freshPrefix();
  let backend: MysqlBackend | undefined;
  let pool: mysql.Pool | undefined;

  afterEach(async () => {
    await backend?.disconnect();
    backend = undefined;
    await new Promise((resolve) => (pool ? pool.end(resolve) : resolve(undefined)));
    pool = undefined;
    await dropMysqlTables(prefix);
  });

  it("after KILL CONNECTION of the pool's connections, writes succeed on new ones", { timeout: 20_000 }, async () => {
    pool = mysql.createPool({ uri: SERVICES.mysql, connectionLimit: 3, charset: "UTF8MB4_UNICODE_CI" });
    const threads = new Set<number>();
    pool.on("connection", (c) => {
      if (c.threadId !== null) threads.add(c.threadId);
    });
    backend = new MysqlBackend({ pool: pool as unknown as MysqlPoolLike, tablePrefix: prefix, env: {} });
    await backend.connect();
    const b = backend;
    const { written, errors } = await writeWhile(b, 60, async () => {
      await withMysql(async (c) => {
        for (const id of threads) await c.query(`kill connection ${Number(id)}`).catch(() => undefined);
      });
    });
    await expectDurable(b, written, errors);
    expect(written.length).toBeGreaterThan(40);
  });

  it("pool exhaustion raises DbPoolExhaustedError (pool size 1, connection held)", async () => {
    backend = new MysqlBackend({
      url: SERVICES.mysql,
      tablePrefix: prefix,
      poolSize: 1,
      maxOverflow: 0,
      poolTimeout: 0.3,
      env: {},
    });
    await backend.connect();
    const b = backend;
    await withMysql(async (c) => {
      await c.query(`lock tables \`${prefix}results\` write`);
      const held = b.storeResult({ taskId: "held", state: "SUCCESS", result: 1, updatedAt: "" });
      await until(async () => {
        const [rows] = await c.query(
          "select count(*) as n from information_schema.processlist where state like 'Waiting for table%'",
        );
        return Number((rows as Array<{ n: number }>)[0]?.n ?? 0) > 0;
      });
      await expect(b.getResult("other")).rejects.toBeInstanceOf(DbPoolExhaustedError);
      await c.query("unlock tables");
      await held;
    });
    expect((await b.getResult("held"))?.state).toBe("SUCCESS");
  });
});

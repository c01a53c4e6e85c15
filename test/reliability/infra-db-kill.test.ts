/**
 * Infrastructure fault (RELIABILITY §3.4 D1, issue 5): while ~500 at-least-once jobs run
 * (Redis broker), a loop kills the result backend's database connections every ~200 ms
 * (PostgreSQL `pg_terminate_backend` by application_name; MariaDB `KILL CONNECTION` of the
 * connections of a database created for the test). Pass: every confirmed job ends SUCCESS
 * with its result stored; no delivery is acknowledged before its SUCCESS write returned
 * (audited at each ack); the backend reconnects on its own (new jobs complete and their
 * results are read back through the same app after the kills stop).
 */

import mysql from "mysql2/promise";
import pg from "pg";
import { describe, expect, it } from "vitest";
import type { Backend } from "../../src/backends/backend.js";
import { MysqlBackend, PostgresBackend } from "../../src/backends/sql/index.js";
import { RedisBroker } from "../../src/brokers/redis/index.js";
import { Chicory, silentLogger, Worker } from "../../src/index.js";
import { SERVICES, skipUnless, uniqueName } from "../helpers/services.js";
import { dropPgTables } from "../integration/sql/sql-test-helpers.js";
import { auditAcks } from "./infra/audit.js";
import { JobLedger, produce, report, sleepMs, waitFor } from "./infra/ledger.js";
import { deleteRedisKeys } from "./infra/redis-keys.js";

const skipRedis = await skipUnless("redis");
const skipPg = await skipUnless("postgres");
const skipMysql = await skipUnless("mysql");
const JOBS = 500;
const KILL_EVERY_MS = 200;

/** A database under test: its backend, a connection killer and cleanup. */
interface DbUnderTest {
  readonly backend: Backend;
  /** A second backend on the same tables (for the final read-back). */
  reader(): Backend;
  /** Kills the backend's connections; returns how many. */
  kill(): Promise<number>;
  cleanup(): Promise<void>;
}

async function postgres(name: string): Promise<DbUnderTest> {
  const tablePrefix = `${name}_`;
  const killer = new pg.Client({ connectionString: SERVICES.postgres });
  await killer.connect();
  return {
    backend: new PostgresBackend({ url: SERVICES.postgres, tablePrefix, applicationName: name }),
    reader: () => new PostgresBackend({ url: SERVICES.postgres, tablePrefix, applicationName: `${name}-reader` }),
    kill: async () => {
      const { rows } = await killer.query(
        "SELECT pid, pg_terminate_backend(pid) AS killed FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()",
        [name],
      );
      return rows.filter((r: { killed: boolean }) => r.killed).length;
    },
    cleanup: async () => {
      await killer.end().catch(() => undefined);
      await dropPgTables(tablePrefix);
    },
  };
}

async function mariadb(name: string): Promise<DbUnderTest> {
  const database = name.replace(/[^a-z0-9_]/g, "_");
  const admin = await mysql.createConnection({ uri: SERVICES.mysql });
  await admin.query(`CREATE DATABASE \`${database}\``);
  const url = new URL(SERVICES.mysql);
  url.pathname = `/${database}`;
  return {
    backend: new MysqlBackend({ url: url.toString() }),
    reader: () => new MysqlBackend({ url: url.toString() }),
    kill: async () => {
      const [rows] = await admin.query(
        "SELECT id FROM information_schema.processlist WHERE db = ? AND id <> CONNECTION_ID()",
        [database],
      );
      let killed = 0;
      for (const row of rows as Array<{ id: number }>) {
        try {
          await admin.query(`KILL CONNECTION ${Number(row.id)}`);
          killed++;
        } catch {
          // already gone
        }
      }
      return killed;
    },
    cleanup: async () => {
      try {
        await admin.query(`DROP DATABASE IF EXISTS \`${database}\``);
      } finally {
        await admin.end().catch(() => undefined);
      }
    },
  };
}

async function runKillTest(label: string, open: (name: string) => Promise<DbUnderTest>): Promise<void> {
  const name = uniqueName("chicory_t_");
  const db = await open(name);
  const broker = new RedisBroker({ url: SERVICES.redis, keyPrefix: name, claimMinIdleMs: 5000 });
  const app = new Chicory({ broker, backend: db.backend });
  const audit = auditAcks(broker, db.backend);
  const ledger = new JobLedger();
  const job = app.task({ name: "rel_db_job" }, async (i: number) => {
    await sleepMs(3 + (i % 7));
    ledger.ran(i);
    return { i, text: `r-${i}` };
  });
  const taskId = (i: number) => `${name}-${i}`;
  const workers = [0, 1].map(() => new Worker(app, { logger: silentLogger, concurrency: 8, heartbeatInterval: 0.5 }));
  let killing = true;
  let kills = 0;
  let killRounds = 0;
  let killErrors = 0;
  const killLoop = (async () => {
    while (killing) {
      try {
        kills += await db.kill();
        killRounds++;
      } catch {
        killErrors++;
      }
      await sleepMs(KILL_EVERY_MS);
    }
  })();
  let reader: Backend | null = null;
  try {
    await app.connect();
    for (const w of workers) await w.start();
    const started = Date.now();
    await produce({
      count: JOBS,
      ratePerSec: 100,
      parallel: 8,
      publish: (i) => job.applyAsync([i], { taskId: taskId(i) }),
      ledger,
      deadline: Date.now() + 60_000,
    });
    const allDurable = await waitFor(
      () => [...ledger.confirmed.keys()].every((i) => audit.durable.has(taskId(i))),
      90_000,
      100,
    );
    killing = false;
    await killLoop;
    const drainedMs = Date.now() - started;

    // The backend reconnects on its own: new jobs complete and are read back through the app.
    const recoverStart = Date.now();
    const after = await Promise.all(Array.from({ length: 20 }, (_, k) => job.applyAsync([JOBS + k])));
    const values = await Promise.all(after.map((r) => r.get({ timeout: 30 })));
    const recoveryMs = Date.now() - recoverStart;
    const health = await db.backend.healthcheck();

    reader = db.reader();
    await reader.connect();
    const missing: number[] = [];
    for (const i of ledger.confirmed.keys()) {
      const record = await reader.getResult(taskId(i));
      const result = record?.result as { i?: number; text?: string } | undefined;
      if (record?.state !== "SUCCESS" || result?.i !== i || result.text !== `r-${i}`) missing.push(i);
    }
    report(`db-kill ${label}`, {
      jobs: JOBS,
      confirmed: ledger.confirmed.size,
      killRounds,
      connectionsKilled: kills,
      killErrors,
      storeFailures: audit.storeFailures,
      firstStoreError: audit.firstStoreError?.slice(0, 120),
      acked: audit.acked.size,
      ackedBeforeDurable: audit.ackedBeforeDurable.length,
      missing: missing.length,
      duplicates: ledger.duplicates(),
      drainedMs,
      postKillRoundTripMs: recoveryMs,
    });
    expect(allDurable).toBe(true);
    expect(ledger.confirmed.size).toBe(JOBS);
    expect(killRounds).toBeGreaterThanOrEqual(10);
    expect(kills).toBeGreaterThan(0);
    expect(audit.ackedBeforeDurable).toEqual([]);
    expect(missing).toEqual([]);
    expect(values).toEqual(Array.from({ length: 20 }, (_, k) => ({ i: JOBS + k, text: `r-${JOBS + k}` })));
    expect(health.connected).toBe(true);
    expect(await broker.getPendingCount("default")).toBe(0);
  } finally {
    killing = false;
    await killLoop;
    for (const w of workers) await w.stop(5).catch(() => undefined);
    await app.disconnect().catch(() => undefined);
    await reader?.disconnect().catch(() => undefined);
    await db.cleanup().catch(() => undefined);
    await deleteRedisKeys(name).catch(() => undefined);
  }
}

describe("infra: database connections killed during a run", () => {
  it.skipIf(skipRedis || skipPg)("PostgreSQL backend: pg_terminate_backend every 200 ms", async () => {
    await runKillTest("postgres", postgres);
  });

  it.skipIf(skipRedis || skipMysql)("MariaDB backend: KILL CONNECTION every 200 ms", async () => {
    await runKillTest("mariadb", mariadb);
  });
});

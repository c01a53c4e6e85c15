/**
 * Schema creation on connect: 5 concurrent connects on fresh tables, idempotent reconnects,
 * refusal of a newer schema version, and heartbeats stamped by the database clock.
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import { ConfigurationError } from "../../../src/errors.js";
import { PostgresBackend } from "../../../src/sql.js";
import { SERVICES, uniqueName } from "../../helpers/services.js";
import { sqlTargets } from "./sql-targets.js";
import { dropPgTables, withMysql, withPg } from "./sql-test-helpers.js";

/** The password of the roles the tests create (ignored where the server trusts loopback). */
const ROLE_PASSWORD = "chicory-test-pw";

function stats(workerId: string) {
  return {
    workerId,
    hostname: "h",
    pid: 1,
    queue: "q",
    concurrency: 1,
    tasksProcessed: 0,
    tasksFailed: 0,
    activeTasks: 0,
    startedAt: new Date().toISOString(),
    lastHeartbeat: null,
    isRunning: true,
    uptimeSeconds: 0,
  };
}

for (const t of await sqlTargets()) {
  describe.skipIf(t.skip)(`sql backend schema: ${t.name}`, () => {
    afterEach(() => t.cleanup());

    it("5 concurrent connects on fresh tables all succeed and share one schema", async () => {
      const first = t.create();
      const others = Array.from({ length: 4 }, () => t.create({ of: first }));
      const all = [first, ...others];
      try {
        await Promise.all(all.map((b) => b.connect()));
        const id = uniqueName("s-");
        await first.storeResult({ taskId: id, state: "SUCCESS", result: 7, updatedAt: "" });
        for (const b of all) expect((await b.getResult(id))?.result).toBe(7);
        // a reconnect of an existing schema is a no-op
        await first.disconnect();
        await first.connect();
        expect((await first.getResult(id))?.result).toBe(7);
      } finally {
        await Promise.all(all.map((b) => b.disconnect()));
      }
    });

    it("refuses tables written by a newer schema version", async () => {
      const backend = t.create();
      await backend.connect();
      await backend.disconnect();
      const table = backend.tables.schemaVersion;
      if (t.name === "postgres") await withPg((c) => c.query(`update "${table}" set version = 99`));
      else if (t.name === "mysql") await withMysql((c) => c.query(`update \`${table}\` set version = 99`));
      else {
        const { default: Database } = await import("better-sqlite3");
        const path = (backend.displayUrl ?? "").replace(/^sqlite:/, "");
        const db = new Database(path);
        db.prepare(`update "${table}" set version = 99`).run();
        db.close();
      }
      const again = t.create({ of: backend });
      await expect(again.connect()).rejects.toBeInstanceOf(ConfigurationError);
    });

    it("stamps heartbeats with the database clock, not the worker's", async () => {
      const backend = t.create();
      await backend.connect();
      try {
        // This worker's clock runs two hours fast; timers keep real time.
        vi.useFakeTimers({ toFake: ["Date"], now: Date.now() + 2 * 3600_000 });
        const id = uniqueName("w-");
        await backend.storeHeartbeat(stats(id), 30);
        const got = await backend.getHeartbeat(id);
        vi.useRealTimers();
        expect(got).not.toBeNull();
        const skew = Math.abs(Date.parse(got?.lastHeartbeat ?? "") - Date.now());
        expect(skew).toBeLessThan(60_000);
        expect((await backend.getActiveWorkers()).map((w) => w.workerId)).toContain(id);
      } finally {
        vi.useRealTimers();
        await backend.disconnect();
      }
    });
  });
}

describe.skipIf((await sqlTargets())[0]?.skip)("postgres schema option", () => {
  it("creates the tables in the configured schema", async () => {
    const schema = uniqueName("s_");
    const backend = new PostgresBackend({ url: SERVICES.postgres, schema, env: {} });
    const second = new PostgresBackend({ url: SERVICES.postgres, schema, env: {} });
    try {
      await Promise.all([backend.connect(), second.connect()]);
      await backend.storeResult({ taskId: "a", state: "SUCCESS", result: 1, updatedAt: "" });
      const rows = await withPg((c) => c.query(`select count(*)::int as n from "${schema}".chicory_results`));
      expect(rows.rows[0]?.n).toBe(1);
    } finally {
      await backend.disconnect();
      await second.disconnect();
      await dropPgTables("chicory_", schema);
    }
  });

  it("connects as a user with rights on the existing tables only (no CREATE, not their owner), and stores, reads and cleans up", async () => {
    const role = uniqueName("chicory_role_").replace(/-/g, "_");
    const prefix = `${uniqueName("c").replace(/-/g, "_")}_`;
    const owner = new PostgresBackend({ url: SERVICES.postgres, tablePrefix: prefix, env: {} });
    await owner.connect(); // the tables, as a migration would create them
    await owner.disconnect();
    await withPg(async (c) => {
      await c.query(`create role "${role}" login password '${ROLE_PASSWORD}'`);
      const tables = ["results", "workers", "schema_version"].map((t) => `"${prefix}${t}"`).join(", ");
      await c.query(`grant select, insert, update, delete on ${tables} to "${role}"`);
    });
    const url = new URL(SERVICES.postgres);
    url.username = role;
    url.password = ROLE_PASSWORD;
    const backend = new PostgresBackend({ url: url.toString(), tablePrefix: prefix, env: {} });
    try {
      // before: "create schema failed …: permission denied for schema public"
      await backend.connect();
      await backend.storeResult({ taskId: "dml-only", state: "SUCCESS", result: 1, updatedAt: "" });
      expect((await backend.getResult("dml-only"))?.result).toBe(1);
      await backend.storeHeartbeat(stats("w-dml"), 60);
      expect((await backend.getActiveWorkers()).map((w) => w.workerId)).toContain("w-dml");
      expect(await backend.cleanupExpiredResults()).toBe(0);
    } finally {
      await backend.disconnect();
      await dropPgTables(prefix);
      await withPg((c) => c.query(`drop role if exists "${role}"`));
    }
  });

  it("connects as a user that owns its schema but may not create schemas in the database", async () => {
    const role = uniqueName("chicory_role_").replace(/-/g, "_");
    const schema = uniqueName("s_");
    await withPg(async (c) => {
      await c.query(`create role "${role}" login password '${ROLE_PASSWORD}'`);
      await c.query(`create schema "${schema}" authorization "${role}"`);
    });
    const url = new URL(SERVICES.postgres);
    url.username = role;
    url.password = ROLE_PASSWORD;
    const backend = new PostgresBackend({ url: url.toString(), schema, env: {} });
    try {
      // before: "create schema failed …: permission denied for database"
      await backend.connect();
      await backend.storeResult({ taskId: "owned", state: "SUCCESS", result: 1, updatedAt: "" });
      expect((await backend.getResult("owned"))?.result).toBe(1);
    } finally {
      await backend.disconnect();
      await withPg(async (c) => {
        await c.query(`drop schema if exists "${schema}" cascade`);
        await c.query(`drop role if exists "${role}"`);
      });
    }
  });

  it("a long schema and prefix together (each valid alone) still store and announce terminal results", async () => {
    // their NOTIFY channel would be over PostgreSQL's 63-byte identifiers: shortened with a hash
    const schema = uniqueName("s_").padEnd(40, "s");
    const tablePrefix = `${"p".repeat(38)}_`;
    const backend = new PostgresBackend({ url: SERVICES.postgres, schema, tablePrefix, env: {} });
    try {
      await backend.connect();
      const waiting = backend.waitForResult("long-1", { timeoutMs: 10_000, pollIntervalMs: 60_000 });
      await backend.storeResult({ taskId: "long-1", state: "SUCCESS", result: 1, updatedAt: "" });
      // a poll every 60 s: only the notification ends this wait in time
      expect((await waiting)?.result).toBe(1);
    } finally {
      await backend.disconnect();
      await dropPgTables(tablePrefix, schema);
    }
  });
});

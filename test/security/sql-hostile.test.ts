/**
 * SQL-hostile text through a real worker into PostgreSQL and MariaDB result backends
 * (RELIABILITY §2.10 A8): task ids, arguments, results and error messages containing quotes,
 * `'; DROP TABLE results;--`, backslashes, NUL, a lone surrogate, 4-byte emoji and a 1 MB error.
 * Each is stored and returned intact, or stored as a clear FAILURE; the tables stay intact and
 * the worker stays alive. (Task names cannot carry such text: the name rule refuses it.)
 */
import { afterEach, describe, expect, it } from "vitest";
import type { SqlBackend } from "../../src/backends/sql/index.js";
import { Chicory, MemoryBroker, TaskFailedError, ValidationError, Worker } from "../../src/index.js";
import { uniqueName } from "../helpers/services.js";
import { sqlTargets } from "../integration/sql/sql-targets.js";
import { withMysql, withPg } from "../integration/sql/sql-test-helpers.js";
import { recordingLogger } from "./security-helpers.js";

const HOSTILE: Record<string, string> = {
  dropTable: "'; DROP TABLE results;--",
  quoteEscape: "\\'; DROP TABLE workers; --",
  backslashes: "back\\slash \\0 \\\\ \\x00 \\u0000",
  nul: "nul\u0000byte",
  loneSurrogate: "lone \ud800 surrogate",
  emoji: "emoji 🎉🦀 𠜎 \u{1F600}",
  rtl: "\u202eevil\u202c",
  percent: "100% _ %s %d ?",
};
const BIG = "E".repeat(1024 * 1024 - 1024); // a 1 MB error that still fits in a message

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()?.();
});

async function tableCount(name: "postgres" | "mysql" | "sqlite", backend: SqlBackend, prefix: string): Promise<number> {
  if (name === "postgres") {
    return withPg(async (c) => Number((await c.query(`select count(*) as n from "${prefix}results"`)).rows[0].n));
  }
  if (name === "mysql") {
    return withMysql(async (c) => {
      const [rows] = await c.query(`select count(*) as n from \`${prefix}results\``);
      return Number((rows as Array<{ n: number }>)[0]?.n);
    });
  }
  return (await backend.healthcheck()).connected ? 1 : 0;
}

for (const t of (await sqlTargets()).filter((x) => x.name !== "sqlite")) {
  describe.skipIf(t.skip)(`A8 SQL-hostile text through a worker: ${t.name}`, () => {
    afterEach(() => t.cleanup());

    it("ids, args, results and errors are stored intact or as a clear FAILURE; tables intact; worker alive", async () => {
      const backend = t.create();
      const prefix = (backend as unknown as { settings?: { tablePrefix?: string } }).settings?.tablePrefix;
      const app = new Chicory({ broker: new MemoryBroker(), backend, config: { env: {} } });
      cleanups.push(() => app.disconnect());
      const echo = app.task({ name: "echo" }, async (value: unknown) => value);
      const fail = app.task({ name: "fail" }, async (text: string) => {
        throw new Error(text);
      });
      const logger = recordingLogger();
      const worker = new Worker(app, { concurrency: 4, logger });
      await worker.start();
      cleanups.push(() => worker.stop(2));

      expect(() => app.task({ name: HOSTILE.dropTable as string }, async () => 1)).toThrow(ValidationError);

      const outcomes: Record<string, string> = {};
      for (const [label, text] of Object.entries(HOSTILE)) {
        // as the task id, inside the arguments and as the result
        const wellFormed = !/\p{Cs}/u.test(text);
        const id = wellFormed ? `${text}-${uniqueName()}` : `${label}-${uniqueName()}`;
        if (!wellFormed) {
          // an id that cannot survive UTF-8 storage unchanged is refused before sending
          await expect(echo.applyAsync(["x"], { taskId: `${text}-x` })).rejects.toBeInstanceOf(ValidationError);
        }
        const r = await echo.applyAsync([{ text, [text]: [text] }], { taskId: id });
        try {
          expect(await r.get({ timeout: 10 })).toEqual({ text, [text]: [text] });
          outcomes[`${label}:result`] = "intact";
        } catch (error) {
          // a value the database cannot hold must become a clear stored FAILURE
          expect(error).toBeInstanceOf(TaskFailedError);
          expect(await r.state()).toBe("FAILURE");
          outcomes[`${label}:result`] = `FAILURE ${(error as TaskFailedError).errorType}`;
        }
        // as an error message
        const f = await fail.applyAsync([text], { taskId: `f-${id}` });
        const error = await f.get({ timeout: 10 }).catch((e: unknown) => e);
        expect(error).toBeInstanceOf(TaskFailedError);
        const remote = (error as TaskFailedError).remoteMessage;
        outcomes[`${label}:error`] = remote === text ? "intact" : `changed to ${JSON.stringify(remote.slice(0, 40))}`;
        if (remote !== text) expect(remote.length).toBeGreaterThan(0);
      }
      // a 1 MB error message is stored (truncated to the documented 8 KiB), never crashing the write
      const big = await fail.delay(BIG);
      const bigError = (await big.get({ timeout: 10 }).catch((e: unknown) => e)) as TaskFailedError;
      expect(bigError).toBeInstanceOf(TaskFailedError);
      expect(bigError.remoteMessage.length).toBeLessThanOrEqual(8192);
      expect(BIG.startsWith(bigError.remoteMessage.replace(/…$/, ""))).toBe(true);

      console.info(`A8 ${t.name}: ${JSON.stringify(outcomes)}`);
      // measured on PostgreSQL 15 and MariaDB 10.11: every value comes back intact (NUL and lone
      // surrogates included, as JSON escapes); a regression to "sanitized" must be a decision
      for (const [key, value] of Object.entries(outcomes)) expect(value, key).toBe("intact");
      if (prefix) expect(await tableCount(t.name, backend, prefix)).toBeGreaterThan(2 * Object.keys(HOSTILE).length);
      const ok = await echo.delay("still alive");
      expect(await ok.get({ timeout: 10 })).toBe("still alive");
      expect(worker.isRunning).toBe(true);
    }, 30_000);
  });
}

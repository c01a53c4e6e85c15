/**
 * A result MySQL/MariaDB refuses for its size (over the server's `max_allowed_packet`, with
 * `maxResultBytes` set above it): its task fails at once with a `ValidationError` and runs
 * once, instead of its record being sent again for half a minute, the message released and run
 * again until it is poison. The next job's result is stored as usual.
 */
import { createPool } from "mysql2/promise";
import { describe, expect, it } from "vitest";
import { Chicory, MemoryBroker, silentLogger, TaskFailedError, Worker } from "../../../src/index.js";
import { useCleanups } from "../../helpers/cleanups.js";
import { SERVICES } from "../../helpers/services.js";
import { sqlTargets } from "./sql-targets.js";

const mysql = (await sqlTargets()).find((t) => t.name === "mysql");

describe.skipIf(mysql === undefined || mysql.skip)("mysql backend: a result over max_allowed_packet", () => {
  const cleanups = useCleanups();

  it("fails its task after one run, not stored again nor run again", { timeout: 60_000 }, async () => {
    const target = mysql as NonNullable<typeof mysql>;
    cleanups.push(() => target.cleanup());
    const pool = createPool({ uri: SERVICES.mysql, connectionLimit: 1 });
    const [rows] = await pool.query("select @@global.max_allowed_packet as max");
    await pool.end();
    const serverMax = Number((rows as Array<{ max: unknown }>)[0]?.max);
    const maxResultBytes = 256 * 1024 * 1024;
    // the server must refuse what Chicory lets through (its default: 16 MiB on MariaDB)
    expect(serverMax + 1024 * 1024).toBeLessThan(maxResultBytes);

    const app = new Chicory({ broker: new MemoryBroker(), backend: target.create(), config: { maxResultBytes } });
    cleanups.push(() => app.disconnect());
    let runs = 0;
    const big = app.task({ name: "big", retryPolicy: { maxRetries: 2, retryDelay: 0 } }, async () => {
      runs++;
      return "x".repeat(serverMax + 1024 * 1024);
    });
    const small = app.task(async function small(n: number) {
      return n + 1;
    });
    const worker = new Worker(app, { concurrency: 2, logger: silentLogger, heartbeatInterval: 0.2 });
    await worker.start();
    cleanups.push(() => worker.stop(5));

    const refused = await (await big.delay()).get({ timeout: 30 }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(TaskFailedError);
    expect(refused).toMatchObject({
      errorType: "ValidationError",
      remoteMessage: expect.stringMatching(
        /task "big": the result backend refused to store its result \(.*max_allowed_packet.*\): .*maxResultBytes/,
      ),
    });
    expect(runs).toBe(1);
    expect(await (await small.delay(1)).get({ timeout: 20 })).toBe(2);
    expect(await app.broker.getQueueSize()).toBe(0);
  });
});

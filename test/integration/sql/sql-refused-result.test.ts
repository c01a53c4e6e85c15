/**
 * Results against what MySQL/MariaDB takes (its `max_allowed_packet`, read as the worker starts,
 * counting quotes and backslashes twice as the driver sends them; `maxResultBytes` set above
 * it): one over it fails its task at once with a `ValidationError` naming the server's limit,
 * runs once, and is never sent (before, the record was sent again for half a minute, the
 * message released and run again until it was poison); one under it is stored, however close.
 * A `max_allowed_packet` lowered with `SET GLOBAL` while the worker runs is followed within a
 * heartbeat, though the worker's pooled connections keep the value they were made with.
 */
import { createPool } from "mysql2/promise";
import { describe, expect, it } from "vitest";
import { Chicory, MemoryBroker, silentLogger, TaskFailedError, Worker } from "../../../src/index.js";
import { eventually } from "../../contract/contract-helpers.js";
import { capturingLogger } from "../../helpers/capturing-logger.js";
import { useCleanups } from "../../helpers/cleanups.js";
import { SERVICES } from "../../helpers/services.js";
import { sqlTargets } from "./sql-targets.js";

const mysql = (await sqlTargets()).find((t) => t.name === "mysql");

describe.skipIf(mysql === undefined || mysql.skip)("mysql backend: a result over max_allowed_packet", () => {
  const cleanups = useCleanups();

  it("fails its task after one run, at once, without sending it", { timeout: 60_000 }, async (test) => {
    const target = mysql as NonNullable<typeof mysql>;
    cleanups.push(() => target.cleanup());
    const pool = createPool({ uri: SERVICES.mysql, connectionLimit: 1 });
    const [rows] = await pool.query("select @@global.max_allowed_packet as max");
    await pool.end();
    const serverMax = Number((rows as Array<{ max: unknown }>)[0]?.max);
    const limit = serverMax - 64 * 1024;
    const maxResultBytes = 256 * 1024 * 1024;
    // the server's limit is below what Chicory would let through (16 MiB on MariaDB by default)
    if (serverMax + 1024 * 1024 > maxResultBytes) test.skip(); // a server configured for 255 MiB or more

    const app = new Chicory({ broker: new MemoryBroker(), backend: target.create(), config: { maxResultBytes } });
    cleanups.push(() => app.disconnect());
    let runs = 0;
    const big = app.task(
      { name: "big", retryPolicy: { maxRetries: 2, retryDelay: 0 } },
      async (char: string, size: number) => {
        runs++;
        return char.repeat(size);
      },
    );
    const small = app.task(async function small(n: number) {
      return n + 1;
    });
    const worker = new Worker(app, { concurrency: 2, logger: silentLogger, heartbeatInterval: 0.2 });
    await worker.start();
    cleanups.push(() => worker.stop(5));

    const over = (size: number) =>
      new RegExp(
        `^task "big": its result is ${size} bytes as sent \\(quotes and backslashes escaped\\), over the limit of ${limit} bytes \\(the result backend's max_allowed_packet of ${serverMax} bytes`,
      );
    // over the packet in plain bytes (as sent: the JSON's own two quotes escaped too)
    const refused = await (await big.delay("x", serverMax + 1024 * 1024)).get({ timeout: 30 }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(TaskFailedError);
    expect(refused).toMatchObject({
      errorType: "ValidationError",
      remoteMessage: expect.stringMatching(over(serverMax + 1024 * 1024 + 4)),
    });
    expect(runs).toBe(1);
    // over it only as sent: some 8.5 MiB of quotes (on MariaDB's default) take twice that
    const quotes = Math.ceil((limit + 1024 * 1024) / 2);
    const escaped = await (await big.delay("'", quotes)).get({ timeout: 30 }).catch((e: unknown) => e);
    expect(escaped).toMatchObject({ remoteMessage: expect.stringMatching(over(2 * quotes + 4)) });
    expect(runs).toBe(2);
    expect(await (await small.delay(1)).get({ timeout: 20 })).toBe(2);
    // under it, though over half of it: stored
    const plain = Math.floor((limit * 3) / 4);
    expect(await (await big.delay("x", plain)).get({ timeout: 30 })).toHaveLength(plain);
    expect(await app.broker.getQueueSize()).toBe(0);
  });

  it("a max_allowed_packet lowered with SET GLOBAL while the worker runs: followed within a heartbeat", {
    timeout: 60_000,
  }, async (test) => {
    const target = mysql as NonNullable<typeof mysql>;
    cleanups.push(() => target.cleanup());
    const admin = createPool({ uri: SERVICES.mysql, connectionLimit: 1 });
    cleanups.push(() => admin.end());
    const [rows] = await admin.query("select @@global.max_allowed_packet as max");
    const serverMax = Number((rows as Array<{ max: unknown }>)[0]?.max);
    // lowered by 4 MiB, no lower than 12 MiB: other tests' workers (4 MiB maxResultBytes, quotes
    // counted twice) started meanwhile still hold results to their maxResultBytes
    const lowered = serverMax - 4 * 1024 * 1024;
    if (lowered < 12 * 1024 * 1024 || serverMax > 200 * 1024 * 1024) test.skip();
    const size = serverMax - 2 * 1024 * 1024; // under the server's value, over the lowered one

    const { logger, lines } = capturingLogger();
    const app = new Chicory({
      broker: new MemoryBroker(),
      backend: target.create(),
      config: { maxResultBytes: 256 * 1024 * 1024 },
    });
    cleanups.push(() => app.disconnect());
    const make = app.task({ name: "make", retryPolicy: { maxRetries: 2, retryDelay: 0 } }, async (n: number) =>
      "x".repeat(n),
    );
    const worker = new Worker(app, { concurrency: 2, logger, heartbeatInterval: 0.2 });
    await worker.start();
    cleanups.push(() => worker.stop(5));
    expect(await (await make.delay(size)).get({ timeout: 30 })).toHaveLength(size);

    cleanups.push(async () => {
      await admin.query(`set global max_allowed_packet = ${serverMax}`);
    });
    await admin.query(`set global max_allowed_packet = ${lowered}`);
    await eventually(() => lines.some((l) => /server changed its size limit/.test(l.message)), 10_000);
    const refused = await (await make.delay(size)).get({ timeout: 30 }).catch((e: unknown) => e);
    expect(refused).toMatchObject({
      errorType: "ValidationError",
      remoteMessage: expect.stringMatching(
        new RegExp(
          `over the limit of ${lowered - 64 * 1024} bytes \\(the result backend's max_allowed_packet of ${lowered} bytes`,
        ),
      ),
    });
  });
});

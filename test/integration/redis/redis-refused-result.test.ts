/**
 * A result too large for the Redis server (a string over `proto-max-bulk-len`, set here below
 * `maxResultBytes` on a redis-server of the test's own):
 * - the limit read as the worker starts (`CONFIG GET proto-max-bulk-len`): a larger result fails
 *   its task at once with a `ValidationError` naming the server's limit, and is never sent;
 * - a `client-query-buffer-limit` under a result does not stop it: records over 512 KiB are
 *   written in pieces;
 * - a user without `CONFIG`: `proto-max-bulk-len` found with `GETBIT`, and held to the same way
 *   (the `default` user refused `CONFIG` is refused it once, not after each heartbeat);
 * - the limit not readable (a user without `CONFIG` and `GETBIT`): Redis's refusal of the record,
 *   written in pieces, is read at once (sent in one argument, a record many times over the limit
 *   made Redis close the connection before its refusal could be read, again after each
 *   reconnect), and the task fails the same way after its one run. The jobs that finished with
 *   it succeed, each run once: with the broker's acks carrying their records, and with the
 *   backend's own batch of terminal records (another broker).
 */
import { Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import { RedisBackend } from "../../../src/backends/redis/index.js";
import { RedisBroker } from "../../../src/brokers/redis/index.js";
import { Chicory, type Logger, MemoryBroker, silentLogger, TaskFailedError, Worker } from "../../../src/index.js";
import { eventually } from "../../contract/contract-helpers.js";
import { capturingLogger } from "../../helpers/capturing-logger.js";
import { useCleanups } from "../../helpers/cleanups.js";
import { skipUnless } from "../../helpers/services.js";
import { useOwnRedis } from "./own-redis.js";
import { monitorCommands } from "./redis-test-keys.js";

const skip = await skipUnless("redis");

/** The server's bulk limit set here (its lowest allowed value). */
const BULK_LIMIT = 1024 * 1024;
/** Bigger than the server's bulk limit, smaller than the default `maxResultBytes` (4 MiB). */
const BIG = 1536 * 1024;

describe.skipIf(skip)("redis: a result the server refuses for its size", () => {
  const cleanups = useCleanups();
  const own = useOwnRedis("refused-result");

  async function adminWithLowLimit(limit = "proto-max-bulk-len"): Promise<Redis> {
    const admin = new Redis(own.server.url);
    cleanups.push(() => admin.disconnect());
    await admin.config("SET", "proto-max-bulk-len", "512mb");
    await admin.config("SET", "client-query-buffer-limit", "1gb");
    await admin.config("SET", limit, String(BULK_LIMIT));
    return admin;
  }

  /** A worker on the own server (default user) with a task returning `size` bytes of "x". */
  async function startMaker(prefix: string, maxResultBytes?: number, logger: Logger = silentLogger) {
    const url = own.server.url;
    const app = new Chicory({
      broker: new RedisBroker({ url, keyPrefix: prefix, env: {} }),
      backend: new RedisBackend({ url, keyPrefix: prefix, env: {} }),
      ...(maxResultBytes === undefined ? {} : { config: { maxResultBytes } }),
    });
    cleanups.push(() => app.disconnect());
    let runs = 0;
    const make = app.task({ name: "make", retryPolicy: { maxRetries: 2, retryDelay: 0 } }, async (size: number) => {
      runs++;
      return "x".repeat(size);
    });
    const worker = new Worker(app, { concurrency: 4, logger, heartbeatInterval: 0.2 });
    await worker.start();
    cleanups.push(() => worker.stop(5));
    return { make, runs: () => runs };
  }

  it("the server's limit read as the worker starts: a larger result fails its task at once, never sent", {
    timeout: 60_000,
  }, async () => {
    const admin = await adminWithLowLimit();
    const { make, runs } = await startMaker("limit", 256 * 1024 * 1024);
    const inputBytes = async () =>
      Number(/total_net_input_bytes:(\d+)/.exec(String(await admin.call("INFO", "stats")))?.[1]);
    const before = await inputBytes();
    // 64 MiB: over the limit, not sent at all
    const refused = await (await make.delay(64 * 1024 * 1024)).get({ timeout: 20 }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(TaskFailedError);
    expect(refused).toMatchObject({
      errorType: "ValidationError",
      remoteMessage: expect.stringMatching(
        /^task "make": its result is 67108866 bytes of JSON, over the limit of 983040 bytes \(the result backend's Redis server stores strings of at most 1048576 bytes \(its proto-max-bulk-len\)/,
      ),
    });
    expect(runs()).toBe(1);
    expect((await inputBytes()) - before).toBeLessThan(BULK_LIMIT); // the result never went out
    // under the server's limit: stored
    expect(await (await make.delay(900 * 1024)).get({ timeout: 20 })).toHaveLength(900 * 1024);
  });

  it("a client-query-buffer-limit under the result (over it, Redis closes the connection without a reply): stored in pieces", {
    timeout: 60_000,
  }, async () => {
    await adminWithLowLimit("client-query-buffer-limit");
    const url = own.server.url;
    const app = new Chicory({
      broker: new RedisBroker({ url, keyPrefix: "buffer", env: {} }),
      backend: new RedisBackend({ url, keyPrefix: "buffer", env: {} }),
    });
    cleanups.push(() => app.disconnect());
    let runs = 0;
    // about 3 MiB of JSON; characters of 1 to 4 bytes, so pieces end inside characters
    const text = "aé€😀\n".repeat(300_000);
    const write = app.task({ name: "write", retryPolicy: { maxRetries: 0 } }, async () => {
      runs++;
      return { text };
    });
    const worker = new Worker(app, { concurrency: 4, logger: silentLogger });
    await worker.start();
    cleanups.push(() => worker.stop(5));
    const handle = await write.delay();
    expect(await handle.get({ timeout: 20 })).toEqual({ text });
    expect(runs).toBe(1);
    expect(await app.backend?.getResult(handle.taskId)).toMatchObject({ state: "SUCCESS", result: { text } });
    // no staging key left behind
    const admin = new Redis(url);
    cleanups.push(() => admin.disconnect());
    expect(await admin.keys("buffer:pieces:*")).toEqual([]);
  });

  it("a limit changed on the server after the worker started is followed within a heartbeat", {
    timeout: 60_000,
  }, async () => {
    const admin = await adminWithLowLimit();
    const { logger, lines } = capturingLogger();
    const { make, runs } = await startMaker("changed", undefined, logger);
    // the worker's line for the count-th change it saw
    const changed = (count: number) =>
      eventually(() => lines.filter((l) => /server changed its size limit/.test(l.message)).length >= count, 10_000);
    const attempt = async () => (await make.delay(BIG)).get({ timeout: 20 }).catch((e: unknown) => e);
    expect(await attempt()).toMatchObject({ errorType: "ValidationError" }); // over 1 MiB at the start
    // raised: the same result is stored
    await admin.config("SET", "proto-max-bulk-len", "512mb");
    await changed(1);
    expect(await attempt()).toHaveLength(BIG);
    // lowered again: it fails at once again, naming the new limit
    await admin.config("SET", "proto-max-bulk-len", String(BULK_LIMIT));
    await changed(2);
    expect(await attempt()).toMatchObject({
      errorType: "ValidationError",
      remoteMessage: expect.stringMatching(/over the limit of 983040 bytes \(the result backend's Redis server/),
    });
    expect(runs()).toBe(3);
  });

  it("a user without CONFIG: proto-max-bulk-len is found with GETBIT, and a result many times over it fails at once", {
    timeout: 60_000,
  }, async () => {
    const admin = await adminWithLowLimit();
    await admin.call("ACL", "SETUSER", "probing", "on", ">pw", "~*", "&*", "+@all", "-config");
    const url = own.server.url.replace("redis://", "redis://probing:pw@");
    const app = new Chicory({
      broker: new RedisBroker({ url, keyPrefix: "probed", env: {} }),
      backend: new RedisBackend({ url, keyPrefix: "probed", env: {} }),
      config: { maxResultBytes: 256 * 1024 * 1024 },
    });
    cleanups.push(() => app.disconnect());
    await app.connect();
    const limit = () => app.backend?.resultSizeLimit?.();
    const source = "the result backend's Redis server stores strings of at most";
    expect(await limit()).toEqual({ bytes: BULK_LIMIT - 65536, source: expect.stringContaining(source) });
    // asked again (as after each heartbeat), unchanged: two GETBITs, not another search
    const seen = await monitorCommands(cleanups, own.server.url);
    expect(await limit()).toMatchObject({ bytes: BULK_LIMIT - 65536 });
    await admin.echo("probe counted");
    await eventually(() => seen.some((c) => c.args[1] === "probe counted"), 5_000);
    expect(seen.filter((c) => c.args[0]?.toLowerCase() === "getbit")).toHaveLength(2);
    // the exact value, not a power of two; the default: not binding
    await admin.config("SET", "proto-max-bulk-len", String(3 * BULK_LIMIT + 12345));
    expect(await limit()).toMatchObject({ bytes: 3 * BULK_LIMIT + 12345 - 65536 });
    await admin.config("SET", "proto-max-bulk-len", "512mb");
    expect(await limit()).toMatchObject({
      bytes: 512 * BULK_LIMIT - 65536,
      source: expect.stringContaining("or more"),
    });
    await admin.config("SET", "proto-max-bulk-len", String(BULK_LIMIT));
    expect(await admin.call("ACL", "LOG")).toEqual([]); // the user was refused nothing

    let runs = 0;
    const make = app.task({ name: "make", retryPolicy: { maxRetries: 2, retryDelay: 0 } }, async (size: number) => {
      runs++;
      return "x".repeat(size);
    });
    const worker = new Worker(app, { concurrency: 4, logger: silentLogger, heartbeatInterval: 0.2 });
    await worker.start();
    cleanups.push(() => worker.stop(5));
    // 16 MiB: over the limit, not sent at all
    const refused = await (await make.delay(16 * BULK_LIMIT)).get({ timeout: 20 }).catch((e: unknown) => e);
    expect(refused).toMatchObject({
      errorType: "ValidationError",
      remoteMessage: expect.stringMatching(
        /over the limit of 983040 bytes \(the result backend's Redis server stores strings of at most 1048576 bytes \(its proto-max-bulk-len, probed with GETBIT\)/,
      ),
    });
    expect(runs).toBe(1);
    expect(await (await make.delay(900 * 1024)).get({ timeout: 20 })).toHaveLength(900 * 1024);
  });

  it("the default user refused CONFIG: asked once, then the limit is probed with GETBIT", async () => {
    const admin = await adminWithLowLimit();
    const backend = new RedisBackend({ url: own.server.url, keyPrefix: "noconfig-default", env: {} });
    cleanups.push(() => backend.disconnect());
    await backend.connect();
    cleanups.push(async () => {
      await admin.call("ACL", "SETUSER", "default", "+config");
    });
    await admin.call("ACL", "SETUSER", "default", "-config");
    await admin.call("ACL", "LOG", "RESET");
    for (let read = 0; read < 3; read++) {
      expect(await backend.resultSizeLimit()).toMatchObject({
        bytes: BULK_LIMIT - 65536,
        source: expect.stringContaining("(its proto-max-bulk-len, probed with GETBIT)"),
      });
    }
    // the first read's CONFIG GET, refused; none after
    const log = (await admin.call("ACL", "LOG")) as unknown[][];
    expect(log.map((entry) => [entry[entry.indexOf("object") + 1], entry[entry.indexOf("count") + 1]])).toEqual([
      ["config|get", 1],
    ]);
  });

  for (const broker of ["redis", "memory"] as const) {
    it(`the limit not readable: a result over it fails its task after one run, at once; the others succeed (${broker} broker)`, {
      timeout: 60_000,
    }, async () => {
      const admin = await adminWithLowLimit();
      // a user that may neither read the server's configuration nor probe it with GETBIT
      await admin.call("ACL", "SETUSER", "noconfig", "on", ">pw", "~*", "&*", "+@all", "-config", "-getbit");
      const url = own.server.url.replace("redis://", "redis://noconfig:pw@");
      const prefix = `refused-${broker}`;
      const app = new Chicory({
        broker: broker === "redis" ? new RedisBroker({ url, keyPrefix: prefix, env: {} }) : new MemoryBroker(),
        backend: new RedisBackend({ url, keyPrefix: prefix, env: {} }),
        config: { maxResultBytes: 256 * 1024 * 1024 },
      });
      cleanups.push(() => app.disconnect());
      await app.connect();
      expect(await app.backend?.resultSizeLimit?.()).toBeUndefined();
      const runs = new Map<number, number>();
      let release: () => void = () => undefined;
      const gate = new Promise<void>((resolve) => {
        release = resolve;
      });
      const make = app.task({ name: "make", retryPolicy: { maxRetries: 0 } }, async (n: number) => {
        runs.set(n, (runs.get(n) ?? 0) + 1);
        await gate; // every job ends in the same turn: their records share one call
        // 16 MiB: many times over the limit (sent in one argument, it stalled the connection)
        return n === 0 ? "x".repeat(16 * BULK_LIMIT) : `small ${n}`;
      });
      const results = await Promise.all(Array.from({ length: 16 }, (_, n) => make.delay(n)));
      const worker = new Worker(app, { concurrency: 16, logger: silentLogger, heartbeatInterval: 0.2 });
      await worker.start();
      cleanups.push(() => worker.stop(5));
      while (runs.size < 16) await new Promise((resolve) => setImmediate(resolve));
      release();

      const refused = await (results[0] as (typeof results)[number]).get({ timeout: 30 }).catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(TaskFailedError);
      expect(refused).toMatchObject({
        errorType: "ValidationError",
        remoteMessage: expect.stringMatching(
          /^task "make": the result backend refused to store its result \(ERR string exceeds maximum allowed size \(proto-max-bulk-len\)\): .*maxResultBytes/,
        ),
      });
      const others = await Promise.all(results.slice(1).map((r) => r.get({ timeout: 30 })));
      expect(others).toEqual(Array.from({ length: 15 }, (_, i) => `small ${i + 1}`));
      expect(await results[0]?.state()).toBe("FAILURE");
      // nothing left to run: every message acknowledged (with its record, on Redis)
      expect(await app.broker.getPendingCount()).toBe(0);
      expect(await app.broker.getQueueSize()).toBe(0);
      expect(worker.getStats().tasksFailed).toBe(1);
      await worker.stop(5);
      expect([...runs.values()]).toEqual(Array.from({ length: 16 }, () => 1));
    });
  }
});

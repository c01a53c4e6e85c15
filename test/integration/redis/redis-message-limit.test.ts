/**
 * A message longer than the broker's Redis server takes in one argument (its
 * `proto-max-bulk-len`, lowered here under `maxMessageBytes` on a redis-server of the test's
 * own). Sent, Redis would close the connection on reading its length and the client would send
 * it again after each reconnect: the connection, and every publish on it, stalled for good. The
 * broker reads the limit as it connects and after each reconnect, and refuses such a message:
 * - `delay()` (plain, delayed, unique) fails at once with a `MessageTooLargeError` naming the
 *   server's limit; nothing is sent, and the next publishes go through;
 * - the limit is found with `GETBIT` for a user without `CONFIG`;
 * - a limit raised on a restarted server is read again after the reconnect, and one lowered with
 *   `CONFIG SET` is followed (read again before a message over 1 MiB when the last read is over
 *   a second old): by a process that only publishes, and by a worker's retries;
 * - a DLQ replay over the limit is refused, and its entry stays;
 * - a retry whose `lastError` pushes its message over the limit goes without it; one that does
 *   not fit even so fails its task after one run; both delivery modes.
 */
import { Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import { RedisBackend } from "../../../src/backends/redis/index.js";
import { RedisBroker } from "../../../src/brokers/redis/index.js";
import { Chicory, MessageTooLargeError, silentLogger, TaskFailedError, Worker } from "../../../src/index.js";
import { eventually } from "../../contract/contract-helpers.js";
import { capturingLogger } from "../../helpers/capturing-logger.js";
import { useCleanups } from "../../helpers/cleanups.js";
import { skipUnless } from "../../helpers/services.js";
import { retriesOverLimit } from "../retries-over-limit.js";
import { useOwnRedis } from "./own-redis.js";

const skip = await skipUnless("redis");

/** The server's bulk limit set here (its lowest allowed value). */
const BULK_LIMIT = 1024 * 1024;
/** The apps' `maxMessageBytes`: over the server's limit. */
const MAX_MESSAGE_BYTES = 8 * BULK_LIMIT;

describe.skipIf(skip)("redis: a message longer than the broker's server takes", () => {
  const cleanups = useCleanups();
  const own = useOwnRedis("message-limit");

  async function admin(): Promise<Redis> {
    const client = new Redis(own.server.url);
    cleanups.push(() => client.disconnect());
    await client.config("SET", "proto-max-bulk-len", String(BULK_LIMIT));
    cleanups.push(async () => {
      await client.config("SET", "proto-max-bulk-len", "512mb");
    });
    return client;
  }

  function appOn(prefix: string, url = own.server.url): Chicory {
    const app = new Chicory({
      broker: new RedisBroker({ url, keyPrefix: prefix, env: {} }),
      backend: new RedisBackend({ url, keyPrefix: prefix, env: {} }),
      config: { maxMessageBytes: MAX_MESSAGE_BYTES },
    });
    cleanups.push(() => app.disconnect());
    return app;
  }

  const inputBytes = async (client: Redis) =>
    Number(/total_net_input_bytes:(\d+)/.exec(String(await client.call("INFO", "stats")))?.[1]);

  it("delay() of a longer message fails at once with MessageTooLargeError, sends nothing, and the next publishes go through", {
    timeout: 30_000,
  }, async () => {
    const server = await admin();
    const app = appOn("plain");
    const echo = app.task({ name: "echo" }, async (text: string) => text.length);
    await app.connect();
    const before = await inputBytes(server);
    const big = "x".repeat(2 * BULK_LIMIT);
    for (const options of [{}, { countdown: 60 }, { taskId: "chosen-id" }]) {
      const refused = await echo.applyAsync([big], options).catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(MessageTooLargeError);
      expect((refused as MessageTooLargeError).limit).toBe(BULK_LIMIT);
      expect((refused as Error).message).toMatch(
        /^task "echo": message is 2097\d{3} bytes, over the limit of 1048576 bytes \(the broker's Redis server stores strings of at most 1048576 bytes \(its proto-max-bulk-len\); keep CHICORY_MAX_MESSAGE_BYTES at most that\)$/,
      );
    }
    expect((await inputBytes(server)) - before).toBeLessThan(BULK_LIMIT); // never sent
    // the connection is fine: a message just under the limit is published and runs
    const worker = new Worker(app, { concurrency: 2, logger: silentLogger });
    await worker.start();
    cleanups.push(() => worker.stop(5));
    const fits = "y".repeat(BULK_LIMIT - 1024);
    expect(await (await echo.delay(fits)).get({ timeout: 10 })).toBe(fits.length);
    expect(await (await echo.delay("z")).get({ timeout: 10 })).toBe(1);
  });

  it("a user without CONFIG: the limit is found with GETBIT, and no ACL LOG entry is made", {
    timeout: 30_000,
  }, async () => {
    const server = await admin();
    await server.call("ACL", "SETUSER", "producer", "on", ">pw", "~*", "&*", "+@all", "-config");
    cleanups.push(async () => {
      await server.call("ACL", "DELUSER", "producer");
    });
    await server.call("ACL", "LOG", "RESET");
    const app = appOn("probed", own.server.url.replace("redis://", "redis://producer:pw@"));
    const echo = app.task({ name: "echo" }, async (text: string) => text.length);
    const refused = await echo.delay("x".repeat(BULK_LIMIT + 1)).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(MessageTooLargeError);
    expect((refused as Error).message).toContain(
      "the broker's Redis server stores strings of at most 1048576 bytes (its proto-max-bulk-len, probed with GETBIT)",
    );
    expect(await app.broker.getQueueSize()).toBe(0);
    expect(await server.call("ACL", "LOG")).toEqual([]);
  });

  it("a limit raised on a restarted server is read again after the reconnect", { timeout: 60_000 }, async () => {
    await admin();
    const app = appOn("restarted");
    const echo = app.task({ name: "echo" }, async (text: string) => text.length);
    await app.connect();
    const big = "x".repeat(2 * BULK_LIMIT);
    expect(await echo.delay(big).catch((e: unknown) => e)).toBeInstanceOf(MessageTooLargeError);
    // the server restarts with its default limit (512 MiB); the broker reconnects by itself
    await own.server.kill();
    await own.server.start();
    const result = await eventually(() => echo.delay(big), 20_000, 100);
    expect(await app.broker.getQueueSize()).toBe(1);
    expect(result.taskId).toEqual(expect.any(String));
    await app.broker.purgeQueue();
  });

  for (const deliveryMode of ["at_least_once", "at_most_once"] as const) {
    it(`a limit lowered under a running worker: a retry over it fails its task after one run, and the dead letter keeps the whole message (${deliveryMode})`, {
      timeout: 30_000,
    }, async () => {
      const { logger, until } = capturingLogger();
      const url = own.server.url;
      const keyPrefix = `lowered-${deliveryMode}`;
      const app = new Chicory({
        broker: new RedisBroker({ url, keyPrefix, env: {}, logger }),
        backend: new RedisBackend({ url, keyPrefix, env: {} }),
        config: { maxMessageBytes: MAX_MESSAGE_BYTES },
      });
      cleanups.push(() => app.disconnect());
      let started!: () => void;
      const running = new Promise<void>((resolve) => {
        started = resolve;
      });
      let fail!: () => void;
      const failing = new Promise<void>((resolve) => {
        fail = resolve;
      });
      let runs = 0;
      const flaky = app.task(
        { name: "flaky", deliveryMode, retryPolicy: { maxRetries: 3, retryDelay: 0 } },
        async (text: string) => {
          runs++;
          started();
          await failing;
          throw new Error(`failed on ${text.length} characters`);
        },
      );
      const worker = new Worker(app, { concurrency: 2, logger: silentLogger, useDeadLetterQueue: true });
      await worker.start();
      cleanups.push(() => worker.stop(5));
      const big = "x".repeat(2 * BULK_LIMIT);
      const handle = await flaky.delay(big); // published at the server's default limit
      await running;
      await admin(); // CONFIG SET proto-max-bulk-len 1 MiB while the task runs; the broker stays connected
      // The broker's last read of the limit must be over a second old: only time passing makes
      // it so (no event to await).
      await new Promise((resolve) => setTimeout(resolve, 1100));
      fail();
      const failed = await handle.get({ timeout: 20 }).catch((e: unknown) => e);
      expect(failed).toBeInstanceOf(TaskFailedError);
      expect(failed).toMatchObject({
        errorType: "MessageTooLarge",
        remoteMessage: expect.stringMatching(
          /^cannot retry: the next attempt's message is \d+ bytes, over the limit of 1048576 bytes \(the broker's Redis server/,
        ),
      });
      expect(runs).toBe(1);
      expect(await handle.state()).toBe("DEAD_LETTERED");
      // The dead letter, over the lowered limit, was sent in pieces: the whole message is there.
      const [entry] = await app.broker.getDlqMessages();
      expect(JSON.parse(entry?.body ?? "null")).toMatchObject({ id: handle.taskId, args: [big] });
      expect((await until(/changed its proto-max-bulk-len/)).fields).toMatchObject({
        limit: BULK_LIMIT,
        before: 512 * BULK_LIMIT,
      });
      await eventually(async () => (await app.broker.getPendingCount()) === 0);
      expect(await app.broker.getQueueSize()).toBe(0);
      await app.broker.purgeDlq();
    });
  }

  it("a process that only publishes follows a lowered limit: a message over 1 MiB has it read again first", {
    timeout: 30_000,
  }, async () => {
    const { logger, until } = capturingLogger();
    const url = own.server.url;
    const app = new Chicory({
      broker: new RedisBroker({ url, keyPrefix: "publisher", env: {}, logger }),
      config: { maxMessageBytes: MAX_MESSAGE_BYTES },
    });
    cleanups.push(() => app.disconnect());
    const echo = app.task({ name: "echo" }, async (text: string) => text.length);
    await app.connect();
    const big = "x".repeat(2 * BULK_LIMIT);
    await echo.delay(big); // the default limit, read as the broker connected
    const server = await admin(); // CONFIG SET proto-max-bulk-len 1 MiB: no worker, heartbeat or reconnect here
    // The read the next long message is checked against must be over a second old: only time
    // passing makes it so (no event to await).
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const before = await inputBytes(server);
    const refused = await echo.delay(big).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(MessageTooLargeError);
    expect((refused as MessageTooLargeError).limit).toBe(BULK_LIMIT);
    expect((await inputBytes(server)) - before).toBeLessThan(BULK_LIMIT); // never sent
    expect((await until(/changed its proto-max-bulk-len/)).fields).toMatchObject({ limit: BULK_LIMIT });
    expect(await app.broker.getQueueSize()).toBe(1);
    await app.broker.purgeQueue();
  });

  it("a DLQ replay over a limit lowered since is refused, and its entry stays in the DLQ", {
    timeout: 30_000,
  }, async () => {
    const first = appOn("replay");
    await first.connect();
    // dead-lettered while the server took it (as a worker's DLQ move does)
    const body = first.codec.encode({
      v: 1,
      id: "replayed-id",
      name: "echo",
      args: ["x".repeat(1536 * 1024)],
      retries: 3,
      eta: null,
      priority: null,
      firstFailureAt: null,
      lastError: "Error: boom",
    });
    await first.broker.writeDeadLetter("default", body, "Error: boom");
    await first.disconnect();
    await admin(); // the limit lowered to 1 MiB; a new broker reads it as it connects
    const app = appOn("replay");
    await app.connect();
    const [entry] = await app.broker.getDlqMessages();
    expect(entry?.body).toBe(body);
    const refused = await app.broker.replayFromDlq(entry?.messageId ?? "").catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(MessageTooLargeError);
    expect((refused as Error).message).toMatch(/over the limit of 1048576 bytes \(the broker's Redis server/);
    expect(await app.broker.getDlqCount()).toBe(1);
    expect(await app.broker.getQueueSize()).toBe(0);
    await app.broker.purgeDlq();
  });

  for (const deliveryMode of ["at_least_once", "at_most_once"] as const) {
    retriesOverLimit({
      deliveryMode,
      limit: BULK_LIMIT,
      source: "the broker's Redis server",
      cleanups,
      timeoutMs: 30_000,
      start: async (label) => {
        await admin();
        return appOn(label);
      },
    });
  }
});

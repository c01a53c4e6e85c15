/**
 * Redis ACL users with fewer rights than `+@all` on every key and channel: what runs, what fails
 * loudly, and that no job is settled wrongly because a command inside a script was refused.
 */
import { Redis } from "ioredis";
import { describe, expect, it, vi } from "vitest";
import { RedisBackend } from "../../../src/backends/redis/index.js";
import { RedisBroker } from "../../../src/brokers/redis/index.js";
import { MessageCodec } from "../../../src/core/message.js";
import { Chicory, ConfigurationError, silentLogger, TaskFailedError, Worker } from "../../../src/index.js";
import { encodeTask, eventually, fetchOne, successRecord } from "../../contract/contract-helpers.js";
import { capturingLogger } from "../../helpers/capturing-logger.js";
import { runCleanups, useCleanups } from "../../helpers/cleanups.js";
import { skipUnless } from "../../helpers/services.js";
import { useOwnRedis } from "./own-redis.js";
import { aclUser, deletePrefix, rawRedis, testPrefix } from "./redis-test-keys.js";

const skip = await skipUnless("redis");

describe.skipIf(skip)("redis with a limited ACL user", () => {
  const cleanups = useCleanups();

  /**
   * Runs three jobs and a failing one through a worker as the user of `url`, results found by
   * polling if need be; checks every message was acknowledged once; returns the backend's warnings.
   */
  async function runJobsAs(url: string, prefix: string): Promise<string[]> {
    const warnings: string[] = [];
    const logger = {
      ...silentLogger,
      warn: (_fields: unknown, message?: string) => void warnings.push(String(message)),
    };
    const app = new Chicory({
      broker: new RedisBroker({ url, keyPrefix: prefix, env: {}, claimMinIdleMs: 2000 }),
      backend: new RedisBackend({ url, keyPrefix: prefix, env: {}, logger }),
    });
    let runs = 0;
    const work = app.task(async function work(n: number) {
      runs++;
      return n * 2;
    });
    const broken = app.task({ name: "broken", retryPolicy: { maxRetries: 0 } }, async () => {
      throw new Error("always");
    });
    const worker = new Worker(app, { concurrency: 4, logger: silentLogger, useDeadLetterQueue: true });
    await worker.start();
    cleanups.push(() => worker.stop(5));
    const results = await Promise.all([1, 2, 3].map((n) => work.delay(n)));
    const failing = await broken.delay();
    expect(await Promise.all(results.map((r) => r.get({ timeout: 20, pollInterval: 0.05 })))).toEqual([2, 4, 6]);
    await expect(failing.get({ timeout: 20, pollInterval: 0.05 })).rejects.toBeInstanceOf(TaskFailedError);
    expect(await failing.state()).toBe("DEAD_LETTERED");
    // acknowledged and gone: nothing pending, nothing left to run again
    const raw = rawRedis();
    cleanups.push(() => raw.disconnect());
    await eventually(async () => (await raw.xlen(`${prefix}:stream:{default}`)) === 0);
    expect(await app.broker.getPendingCount("default")).toBe(0);
    expect(await app.broker.getDlqCount("default")).toBe(1);
    expect(runs).toBe(3);
    return warnings;
  }

  it("a user without channel rights (Redis 7's default for a new user): jobs finish and are acknowledged once; the backend warns", async () => {
    // Every key and command, no pub/sub channel: PUBLISH and SUBSCRIBE answer NOPERM.
    const { url } = await aclUser(cleanups, "~*", "resetchannels", "+@all");
    const prefix = testPrefix();
    cleanups.push(() => deletePrefix(prefix));
    // found by polling: no notification can be published or heard
    expect((await runJobsAs(url, prefix)).join("\n")).toContain("this Redis user may not publish on");
  });

  it("the ACL docs/brokers/redis.md gives (prefix keys, done channel, no admin commands) runs everything", async () => {
    const prefix = testPrefix();
    cleanups.push(() => deletePrefix(prefix));
    const { user, url } = await aclUser(
      cleanups,
      `~${prefix}:*`,
      `&${prefix}:done:*`,
      "+@all",
      "-@admin",
      "-@dangerous",
      "+info",
      "+client|unblock",
    );
    expect(await runJobsAs(url, prefix)).toEqual([]);
    await runCleanups(cleanups); // the worker stopped
    // nothing this user did was refused (a stopping worker's CLIENT UNBLOCK was, without its rule)
    const raw = rawRedis();
    cleanups.push(() => raw.disconnect());
    const log = (await raw.call("ACL", "LOG", "1000")) as unknown[][];
    const refusals = log.filter((entry) => entry.includes(user));
    expect(refusals).toEqual([]);
  });

  /** Starts a worker as the user of `url` on queue "jobs"; returns start()'s rejection. */
  async function startRefused(url: string, prefix: string): Promise<unknown> {
    const app = new Chicory({
      broker: new RedisBroker({ url, keyPrefix: prefix, env: {} }),
      backend: new RedisBackend({ url, keyPrefix: prefix, env: {} }),
    });
    const worker = new Worker(app, { queue: "jobs", concurrency: 2, logger: silentLogger });
    cleanups.push(() => worker.stop(5));
    const error = await worker.start().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(worker.isRunning).toBe(false);
    return error;
  }

  it("a worker whose user may not touch its queue's keys does not start, and says why", async () => {
    const prefix = testPrefix();
    cleanups.push(() => deletePrefix(prefix));
    // the backend's keys, not the queue's
    const { url } = await aclUser(
      cleanups,
      `~${prefix}:result:*`,
      `~${prefix}:heartbeat:*`,
      `~${prefix}:workers`,
      "&*",
      "+@all",
    );
    const error = await startRefused(url, prefix);
    expect(error).toBeInstanceOf(ConfigurationError);
    expect(String(error)).toMatch(
      /redis broker: the Redis user may not run its scripts on the keys of queue "jobs" \(NOPERM .*keys/,
    );
    expect(String(error)).toContain(`~${prefix}:*`);
  });

  it("a worker whose user may not run scripts does not start, and says why", async () => {
    const prefix = testPrefix();
    cleanups.push(() => deletePrefix(prefix));
    const { url } = await aclUser(cleanups, "~*", "&*", "+@all", "-@scripting");
    const error = await startRefused(url, prefix);
    expect(error).toBeInstanceOf(ConfigurationError);
    expect(String(error)).toMatch(/NOPERM .*'eval/);
  });

  it.each(["-xreadgroup", "-@blocking"])(
    "a worker whose user may not read with XREADGROUP (%s) does not start, and says why",
    async (rule) => {
      const prefix = testPrefix();
      cleanups.push(() => deletePrefix(prefix));
      const { url } = await aclUser(cleanups, "~*", "&*", "+@all", rule);
      // before, it started, then every fetch failed (jobs never ran)
      const error = await startRefused(url, prefix);
      expect(error).toBeInstanceOf(ConfigurationError);
      expect(String(error)).toMatch(/redis broker: the Redis user may not read queue "jobs" with XREADGROUP \(NOPERM/);
    },
  );

  it("a worker whose user may not write the backend's heartbeats does not start, and says why", async () => {
    const prefix = testPrefix();
    cleanups.push(() => deletePrefix(prefix));
    // every key the broker checks (its check and the backend's run at once: the first refusal wins)
    const queueKeys = ["stream", "delayed", "delayed-data", "dlq", "unique", "sent", "pulse"].map(
      (k) => `~${prefix}:${k}:*`,
    );
    const { url } = await aclUser(cleanups, ...queueKeys, `~${prefix}:result:*`, `~${prefix}:workers`, "&*", "+@all");
    const error = await startRefused(url, prefix);
    expect(error).toBeInstanceOf(ConfigurationError);
    expect(String(error)).toMatch(
      /redis backend: the Redis user may not run its scripts on the heartbeat keys \(NOPERM/,
    );
  });

  it("after the user's password changed under a running broker, its errors say why (WRONGPASS), not only 'reconnecting'", async () => {
    const { user, url } = await aclUser(cleanups, "~*", "&*", "+@all");
    const prefix = testPrefix();
    cleanups.push(() => deletePrefix(prefix));
    const broker = new RedisBroker({ url, keyPrefix: prefix, env: {}, publishTimeoutMs: 1000 });
    await broker.connect();
    cleanups.push(() => broker.disconnect());
    const admin = rawRedis();
    cleanups.push(() => admin.disconnect());
    await admin.call("ACL", "SETUSER", user, "resetpass", ">rotated-elsewhere");
    await admin.call("CLIENT", "KILL", "USER", user);
    const health = await eventually(async () => {
      const h = await broker.healthcheck();
      return h.error?.includes("WRONGPASS") ? h : false;
    });
    expect(health).toMatchObject({ connected: false, error: expect.stringContaining("WRONGPASS") });
    const task = encodeTask(new MessageCodec());
    // refused at once, or after the publish timeout: either way the reason is given
    await expect(broker.publish("default", { id: task.id, body: task.body })).rejects.toThrow(/WRONGPASS/);
    // a worker's fetch while the connection is down names it too
    const consumer = broker.consumer({ queues: ["default"], consumerId: "rotated" });
    cleanups.push(() => consumer.close());
    await expect(consumer.fetch(1, AbortSignal.timeout(2000))).rejects.toThrow(/WRONGPASS/);
  });

  it("the default backend on the broker's URL logs in as the broker does, even beside a location variable of its own (which is not used)", async () => {
    const { user, url } = await aclUser(cleanups, "~*", "&*", "+@all");
    const login = new URL(url);
    const bare = new URL(url);
    bare.username = "";
    bare.password = "";
    const emitted = vi.spyOn(process, "emitWarning").mockImplementation(() => undefined);
    cleanups.push(async () => void emitted.mockRestore());
    const admin = rawRedis();
    cleanups.push(async () => void admin.disconnect());
    for (const extra of [{}, { CHICORY_BACKEND_REDIS_DB: "3" }]) {
      const app = new Chicory({
        config: {
          env: {
            CHICORY_BROKER_URL: bare.toString(),
            CHICORY_BROKER_REDIS_USERNAME: decodeURIComponent(login.username),
            CHICORY_BROKER_REDIS_PASSWORD: decodeURIComponent(login.password),
            ...extra,
          },
        },
      });
      await app.backend?.connect();
      cleanups.push(() => app.disconnect());
      const clients = String(await admin.call("CLIENT", "LIST"));
      const backendUsers = clients
        .split("\n")
        .filter((line) => line.includes("name=chicory-backend "))
        .map((line) => / user=(\S+)/.exec(line)?.[1]);
      // before, beside CHICORY_BACKEND_REDIS_DB: no login at all (the default user here; NOAUTH
      // where the default user is off)
      expect(backendUsers, JSON.stringify(extra)).toContain(user);
      await app.disconnect();
    }
  });

  it("a refused XPENDING fails the ack instead of reading as not pending: the entry stays, pending", async () => {
    const { url } = await aclUser(cleanups, "~*", "&*", "+@all", "-xpending");
    const prefix = testPrefix();
    cleanups.push(() => deletePrefix(prefix));
    const broker = new RedisBroker({ url, keyPrefix: prefix, env: {}, claimMinIdleMs: 60_000 });
    await broker.connect();
    cleanups.push(() => broker.disconnect());
    const codec = new MessageCodec();
    const task = encodeTask(codec);
    await broker.publish("default", { id: task.id, body: task.body });
    const consumer = broker.consumer({ queues: ["default"], consumerId: "acl" });
    cleanups.push(() => consumer.close());
    const delivery = await fetchOne(consumer);
    // Redis names only the script's SHA: the error names Chicory's script and where to look
    await expect(delivery.ack({ confirm: true })).rejects.toThrow(
      /can't run this command.*\(Chicory's script chicoryAck\w* runs a command this Redis user may not run: ACL LOG/,
    );
    const raw = rawRedis();
    cleanups.push(() => raw.disconnect());
    const stream = `${prefix}:stream:{default}`;
    expect(await raw.xlen(stream)).toBe(1); // before: deleted, as if settled by someone else
    const [pending] = (await raw.xpending(stream, "chicory-workers")) as [number];
    expect(pending).toBe(1);
  });

  it("a publish to keys outside the user's patterns fails with Redis's NOPERM and where to look", async () => {
    const prefix = testPrefix();
    cleanups.push(() => deletePrefix(prefix));
    const { url } = await aclUser(cleanups, "~someone-else:*", "&*", "+@all");
    const broker = new RedisBroker({ url, keyPrefix: prefix, env: {} });
    await broker.connect();
    cleanups.push(() => broker.disconnect());
    await expect(broker.publish("default", { id: "t-1", body: "{}", unique: true })).rejects.toThrow(
      /NOPERM.*\(ACL LOG on the server names what was refused; see docs\/brokers\/redis\.md, "ACL"\)/,
    );
  });

  it("a wait on a result the user may not read fails at once naming the key, not at its timeout; the others' waits go on", async () => {
    const prefix = testPrefix();
    cleanups.push(() => deletePrefix(prefix));
    // may read results whose ids start with "ok", no other
    const { url } = await aclUser(cleanups, `~${prefix}:result:ok*`, "&*", "+@all");
    const backend = new RedisBackend({ url, keyPrefix: prefix, env: {}, logger: silentLogger });
    await backend.connect();
    cleanups.push(() => backend.disconnect());
    // in one poll: the refused id is read apart from the allowed one
    const [refused, allowed] = [
      backend.waitForResult("no-1", { timeoutMs: 8000, pollIntervalMs: 50 }),
      backend.waitForResult("ok-1", { timeoutMs: 8000, pollIntervalMs: 50 }),
    ];
    // before: resolved null after the whole timeout
    await expect(refused).rejects.toThrow(
      new RegExp(`may not read the result at ${prefix}:result:no-1: NOPERM.*ACL LOG on the server`),
    );
    await backend.storeResult(successRecord("ok-1", 7));
    expect(await allowed).toMatchObject({ state: "SUCCESS", result: 7 });
    // with a key of another type in the same poll: still named as such, the refused one too
    const raw = rawRedis();
    cleanups.push(() => raw.disconnect());
    await raw.hset(`${prefix}:result:ok-hash`, "a", "1");
    const waits = ["no-2", "ok-hash"].map((id) => backend.waitForResult(id, { timeoutMs: 8000, pollIntervalMs: 50 }));
    await expect(waits[0]).rejects.toThrow(/may not read the result at .*:result:no-2: NOPERM/);
    await expect(waits[1]).rejects.toThrow(/holds a Redis hash, not a string/);
  });

  it("a user refused MGET itself reads results one by one: waits go on, alone or together", async () => {
    const prefix = testPrefix();
    cleanups.push(() => deletePrefix(prefix));
    const { url } = await aclUser(cleanups, "~*", "&*", "+@all", "-mget");
    const backend = new RedisBackend({ url, keyPrefix: prefix, env: {}, logger: silentLogger });
    await backend.connect();
    cleanups.push(() => backend.disconnect());
    for (const ids of [["a1"], ["b1", "b2"]]) {
      const waits = ids.map((id) => backend.waitForResult(id, { timeoutMs: 8000, pollIntervalMs: 50 }));
      for (const id of ids) await backend.storeResult(successRecord(id, id));
      // before: a lone wait failed as "may not read the result"
      expect(await Promise.all(waits)).toEqual(
        ids.map((id) => expect.objectContaining({ state: "SUCCESS", result: id })),
      );
    }
  });

  it("a cleanup whose XINFO is refused fails and says so, instead of reporting 0 stale consumers", async () => {
    const prefix = testPrefix();
    cleanups.push(() => deletePrefix(prefix));
    // a consumer of the group that owns nothing, as a dead worker leaves it
    const admin = rawRedis();
    cleanups.push(() => admin.disconnect());
    const stream = `${prefix}:stream:{default}`;
    await admin.xgroup("CREATE", stream, "chicory-workers", "0", "MKSTREAM");
    await admin.xgroup("CREATECONSUMER", stream, "chicory-workers", "ghost");
    const { url } = await aclUser(cleanups, "~*", "&*", "+@all", "-xinfo");
    const broker = new RedisBroker({ url, keyPrefix: prefix, env: {} });
    await broker.connect();
    cleanups.push(() => broker.disconnect());
    await expect(broker.cleanupStaleClients("default", 0)).rejects.toThrow(/can't run this command|NOPERM/);
    const consumers = (await admin.xinfo("CONSUMERS", stream, "chicory-workers")) as unknown[];
    expect(consumers).toHaveLength(1); // still there: nothing was removed, and nothing said so before
  });
});

describe.skipIf(skip)("redis results for an ACL user without the done channel, on a server of its own", () => {
  const own = useOwnRedis("acl-results");
  const cleanups = useCleanups();

  it("waits poll on one connection (no new subscriber per get()), and a backend built from a URL says why in the running worker's log", async () => {
    const admin = new Redis(own.server.url);
    cleanups.push(async () => void admin.disconnect());
    await admin.call("ACL", "SETUSER", "nochannel", "on", ">pw", "~*", "resetchannels", "+@all");
    const url = new URL(own.server.url);
    url.username = "nochannel";
    url.password = "pw";
    const { logger, until } = capturingLogger();
    const prefix = testPrefix();
    // built from URLs, as most apps do: no logger given
    const app = new Chicory({
      broker: url.toString(),
      config: { env: { CHICORY_BROKER_REDIS_KEY_PREFIX: prefix, CHICORY_BACKEND_REDIS_KEY_PREFIX: prefix } },
    });
    const work = app.task(async function double(n: number) {
      return n * 2;
    });
    const worker = new Worker(app, { concurrency: 2, logger });
    await worker.start();
    cleanups.push(() => worker.stop(5));
    const warning = await until(/this Redis user may not publish on/);
    expect([warning.level, warning.fields.component]).toEqual(["warn", "CHICORY_REDIS_BACKEND"]);
    const connectionsBefore = await totalConnections(admin);
    for (let i = 0; i < 10; i++) {
      expect(await (await work.delay(i)).get({ timeout: 20, pollInterval: 0.05 })).toBe(i * 2);
    }
    // before: one more connection (opened, refused SUBSCRIBE, dropped) per get()
    expect((await totalConnections(admin)) - connectionsBefore).toBeLessThanOrEqual(2);
  });
});

describe.skipIf(skip)("redis result subscriber: the channel right taken away", () => {
  const own = useOwnRedis("acl-revoked");
  const cleanups = useCleanups();

  it("Redis drops the subscriber and refuses its SUBSCRIBE after the reconnect: logged, no unhandled rejection, results still found", async () => {
    const admin = new Redis(own.server.url);
    cleanups.push(async () => void admin.disconnect());
    await admin.call("ACL", "SETUSER", "revoked", "on", ">pw", "~*", "&*", "+@all");
    const url = new URL(own.server.url);
    url.username = "revoked";
    url.password = "pw";
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => void unhandled.push(reason);
    process.on("unhandledRejection", onUnhandled);
    cleanups.push(async () => void process.off("unhandledRejection", onUnhandled));
    const { logger, until } = capturingLogger();
    const backend = new RedisBackend({ url: url.toString(), keyPrefix: testPrefix(), env: {}, logger });
    await backend.connect();
    cleanups.push(() => backend.disconnect());
    expect(await backend.waitForResult("nothing-yet", { timeoutMs: 50 })).toBeNull(); // subscribes
    const channel = backend.doneChannel;
    await eventually(async () => (await admin.call("PUBSUB", "NUMSUB", channel))?.toString() === `${channel},1`);
    // Redis closes the connections subscribed to a channel the user may no longer read; the
    // subscriber reconnects and its SUBSCRIBE is refused (NOPERM)
    await admin.call("ACL", "SETUSER", "revoked", "resetchannels");
    const line = await until(/subscribing again after a reconnect failed/);
    expect(String(line.fields.err)).toMatch(/NOPERM/);
    await new Promise((resolve) => setImmediate(resolve));
    expect(unhandled).toEqual([]);
    // waiters poll meanwhile
    await backend.storeResult(successRecord("done-later", 42));
    expect((await backend.waitForResult("done-later", { timeoutMs: 5000, pollIntervalMs: 50 }))?.state).toBe("SUCCESS");
  });
});

/** Connections the server has accepted since it started (INFO stats). */
async function totalConnections(admin: Redis): Promise<number> {
  const info = String(await admin.info("stats"));
  return Number(/total_connections_received:(\d+)/.exec(info)?.[1]);
}

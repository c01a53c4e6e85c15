/**
 * Connecting to a Redis database the server does not have: ioredis reports the refused
 * `SELECT` as an event and stays on database 0, so a broker or backend that took that as
 * connected would read and write database 0. Both must refuse to start instead.
 */
import { type AddressInfo, createServer, type Socket } from "node:net";
import { Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import { RedisBackend } from "../../../src/backends/redis/index.js";
import { RedisBroker } from "../../../src/brokers/redis/index.js";
import {
  BackendConnectionError,
  BrokerConnectionError,
  Chicory,
  ChicoryError,
  ConfigurationError,
} from "../../../src/index.js";
import { deferred } from "../../helpers/deferred.js";
import { SERVICES, skipUnless, uniqueName } from "../../helpers/services.js";
import { useOwnRedis } from "./own-redis.js";
import { redisProxy } from "./redis-proxy.js";
import { rawRedis } from "./redis-test-keys.js";

const skip = await skipUnless("redis");

describe.skipIf(skip)("redis connect: what a connection sends first", () => {
  const own = useOwnRedis("connect-handshake");

  it("sends no CLIENT SETINFO (refused before Redis 7.2; over a slow link ioredis 6 failed connects on it)", async () => {
    const { server } = own;
    const raw = new Redis(server.port, "127.0.0.1");
    try {
      await raw.config("RESETSTAT");
      const broker = new RedisBroker({ url: server.url, env: {} });
      const backend = new RedisBackend({ url: server.url, env: {} });
      await broker.connect();
      await backend.connect();
      await Promise.all([broker.disconnect(), backend.disconnect()]);
      // (raw, opened before the reset, sent its own SETINFO then)
      const stats = String(await raw.info("commandstats"));
      const errors = String(await raw.info("errorstats"));
      expect(stats).toMatch(/cmdstat_client\|setname/); // the adapters did connect
      expect(stats).not.toMatch(/setinfo/i);
      expect(errors).not.toMatch(/errorstat_ERR/);
    } finally {
      raw.disconnect();
    }
  });
});

describe.skipIf(skip)("redis connect", () => {
  it("a connection the server closes during the handshake is tried again; a server that always closes fails, with the hint", async () => {
    const target = new URL(SERVICES.redis);
    let closeFirst = 2; // the first two connections are closed at once, as by CLIENT KILL or a restart
    const proxy = await redisProxy(target.hostname, Number(target.port || 6379), { refuse: () => closeFirst-- > 0 });
    const { port } = proxy;
    try {
      const broker = new RedisBroker({ url: `redis://127.0.0.1:${port}/0`, env: {} });
      await broker.connect();
      expect(await broker.healthcheck()).toMatchObject({ connected: true });
      await broker.disconnect();
      closeFirst = 1_000; // now a server that closes every connection: not Redis (or TLS only)
      const startedAt = performance.now();
      const error = await new RedisBackend({ url: `redis://127.0.0.1:${port}/0`, env: {} })
        .connect()
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(BackendConnectionError);
      expect(String(error)).toMatch(/the server closed the connection: is this a Redis port\?/);
      expect(performance.now() - startedAt).toBeLessThan(5000);
    } finally {
      await proxy.close();
    }
  });

  it("connect() called while a disconnect() is under way opens once that is done (it would otherwise stop what the new one starts)", async () => {
    const prefix = uniqueName("reopen");
    const raw = rawRedis();
    try {
      for (const open of [
        () => new RedisBroker({ url: SERVICES.redis, keyPrefix: prefix, env: {} }),
        () => new RedisBackend({ url: SERVICES.redis, keyPrefix: prefix, env: {} }),
      ]) {
        const adapter = open();
        await adapter.connect();
        const order: string[] = [];
        const closing = adapter.disconnect().then(() => order.push("disconnected"));
        const opening = adapter.connect().then(() => order.push("connected"));
        await Promise.all([closing, opening]);
        expect(order).toEqual(["disconnected", "connected"]);
        expect(await adapter.healthcheck()).toMatchObject({ connected: true });
        await adapter.disconnect();
      }
      const broker = new RedisBroker({ url: SERVICES.redis, keyPrefix: prefix, env: {} });
      await broker.connect();
      void broker.disconnect();
      await broker.connect();
      // a publish of the new connection is not ended by the old disconnect ("outcome unknown")
      expect(await broker.publish("q", { id: "t1", body: '{"v":1}' })).toEqual({ published: true });
      await broker.disconnect();
    } finally {
      const keys = await raw.keys(`${prefix}:*`);
      if (keys.length > 0) await raw.del(...keys);
      raw.disconnect();
    }
  });

  it("a connect() that a later disconnect() overtakes fails and leaves nothing open, waiting or opening", async () => {
    for (const open of [
      () => new RedisBroker({ url: SERVICES.redis, env: {} }),
      () => new RedisBackend({ url: SERVICES.redis, env: {} }),
    ]) {
      // waiting for an earlier disconnect() under way
      const adapter = open();
      await adapter.connect();
      const first = adapter.disconnect();
      const waiting = adapter.connect().catch((e: unknown) => e);
      const second = adapter.disconnect();
      await Promise.all([first, second]);
      const failure = await waiting;
      expect(failure).toBeInstanceOf(ChicoryError);
      expect(String((failure as Error).message)).toMatch(
        /^connect: the redis (broker|backend) .* was disconnected while it ran/,
      );
      // before, that connect() opened a connection once both disconnects had resolved
      expect(await adapter.healthcheck()).toMatchObject({ connected: false });
      // opening: the disconnect() waits for the connection, then closes it
      const opening = adapter.connect().catch((e: unknown) => e);
      await adapter.disconnect();
      expect(String(((await opening) as Error).message)).toMatch(/was disconnected while it ran/);
      expect(await adapter.healthcheck()).toMatchObject({ connected: false });
      // and the next connect() opens
      await adapter.connect();
      expect(await adapter.healthcheck()).toMatchObject({ connected: true });
      await adapter.disconnect();
    }
  });

  it("app.disconnect() cuts a connect to a server that accepts and never answers: the delay() rejects saying so", async () => {
    const sockets: Socket[] = [];
    const connected = deferred();
    const silent = createServer((socket) => {
      socket.on("error", () => undefined);
      sockets.push(socket);
      connected.resolve();
    });
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    try {
      const url = `redis://127.0.0.1:${(silent.address() as AddressInfo).port}/0`;
      const app = new Chicory({ broker: url, config: { env: {} } });
      const add = app.task(function add(a: number, b: number) {
        return a + b;
      });
      const sent = add.delay(1, 2).catch((e: unknown) => e);
      await connected.promise;
      await app.disconnect();
      // before: both waited out the connect timeout (10 s), the delay() failing on it
      const failure = await sent;
      expect(failure).toBeInstanceOf(BrokerConnectionError);
      expect(String((failure as Error).message)).toMatch(/app\.disconnect\(\) was called while the app connected/);
      // the adapters alone: their disconnect() cuts their connect too
      for (const adapter of [new RedisBroker({ url, env: {} }), new RedisBackend({ url, env: {} })]) {
        const opening = adapter.connect().catch((e: unknown) => e);
        await adapter.disconnect();
        expect(String(((await opening) as Error).message)).toMatch(/was disconnected while it ran/);
      }
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });

  it("a client given that cannot connect fails connect with its reason (it started, then every call failed)", async () => {
    for (const [open, type] of [
      [(client: Redis) => new RedisBroker({ client, env: {} }).connect(), BrokerConnectionError],
      [(client: Redis) => new RedisBackend({ client, env: {} }).connect(), BackendConnectionError],
    ] as const) {
      // a closed port, made with lazyConnect and no retries: it ends at once
      const client = new Redis({ port: 1, lazyConnect: true, retryStrategy: () => null });
      client.on("error", () => {});
      const error = await open(client).catch((e: unknown) => e);
      client.disconnect();
      expect(error).toBeInstanceOf(type);
      expect(String(error)).toMatch(/the client given cannot reach .* \(status end\): connect ECONNREFUSED/);
    }
  });

  it('a client given that has ended (quit) fails connect at once, said so (before: after 10 s, "not ready")', async () => {
    for (const [open, type] of [
      [(client: Redis) => new RedisBroker({ client, env: {} }).connect(), BrokerConnectionError],
      [(client: Redis) => new RedisBackend({ client, env: {} }).connect(), BackendConnectionError],
    ] as const) {
      const client = rawRedis();
      await client.quit();
      await expect.poll(() => client.status).toBe("end");
      const error = await open(client).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(type);
      expect(String(error)).toMatch(
        /the client given cannot reach .* \(status end\): it has ended \(quit or disconnected\)/,
      );
    }
  });

  it("a database number the server does not have fails connect, named, for the broker and the backend", async () => {
    const raw = rawRedis();
    const [, databases] = (await raw.config("GET", "databases")) as [string, string];
    raw.disconnect();
    const url = new URL(SERVICES.redis);
    url.pathname = `/${Number(databases) + 3}`;
    const prefix = uniqueName("nodb");
    for (const adapter of [
      new RedisBroker({ url: url.href, keyPrefix: prefix }),
      new RedisBackend({ url: url.href, keyPrefix: prefix }),
    ]) {
      const error = await adapter.connect().then(
        () => undefined,
        (e: unknown) => e as Error,
      );
      await adapter.disconnect();
      expect(error?.message).toMatch(
        /DB index is out of range \(the server has no such database: check the database number/,
      );
    }
  });
});

describe.skipIf(skip)("redis connect: the server's version", () => {
  const own = useOwnRedis("connect-version");

  it("a server older than Redis 6.2 is refused at connect, its version named; the broker's connections closed, a given client left open", async () => {
    const { server } = own;
    // In front of the real server: its INFO replies say 6.x where they said 7.x (same length,
    // so the reply's own length prefix still holds); everything else passes unchanged.
    const proxy = await redisProxy("127.0.0.1", server.port, {
      rewrite: (reply) => reply.replace("redis_version:7", "redis_version:6"),
    });
    const { port } = proxy;
    const raw = new Redis(server.port, "127.0.0.1");
    const given = new Redis(port, "127.0.0.1");
    try {
      const version = /^redis_version:(\S+)/m.exec(String(await raw.info("server")))?.[1] ?? "";
      expect(version).toMatch(/^7\./); // the server of this test; the proxy makes it 6.x
      const older = `6${version.slice(1)}`;
      const refusal = new RegExp(
        `runs Redis ${older.replaceAll(".", "\\.")}; the Redis broker needs Redis 6\\.2 or later`,
      );
      const broker = new RedisBroker({ url: `redis://127.0.0.1:${port}/0`, env: {} });
      const error = await broker.connect().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ConfigurationError);
      expect(String(error)).toMatch(refusal);
      expect(String(error)).toContain(`redis://127.0.0.1:${port}/0`);
      await broker.disconnect();
      const names = async () =>
        String(await raw.client("LIST"))
          .split("\n")
          .map((line) => /name=(\S*)/.exec(line)?.[1])
          .filter((name) => name?.startsWith("chicory-broker"));
      await expect.poll(names).toEqual([]); // the connection it opened is closed
      const fromGiven = await new RedisBroker({ client: given, env: {} }).connect().catch((e: unknown) => e);
      expect(fromGiven).toBeInstanceOf(ConfigurationError);
      expect(String(fromGiven)).toMatch(refusal);
      expect(await given.ping()).toBe("PONG"); // the caller's client stays theirs, open
      // The result backend needs no 6.2 command: it connects through the same proxy.
      const backend = new RedisBackend({ url: `redis://127.0.0.1:${port}/0`, env: {} });
      await backend.connect();
      await backend.disconnect();
      // The real server (7.x) is not refused.
      const direct = new RedisBroker({ url: server.url, env: {} });
      await direct.connect();
      await direct.disconnect();
    } finally {
      given.disconnect();
      raw.disconnect();
      await proxy.close();
    }
  });
});

describe.skipIf(skip)("redis connect: a server that runs no writes for now", () => {
  const own = useOwnRedis("connect-paused");

  it("the result backend connects while Redis runs no writes (CLIENT PAUSE WRITE, as a failover does), and disconnects at once", async () => {
    const admin = new Redis(own.server.port, "127.0.0.1");
    try {
      await admin.call("CLIENT", "PAUSE", 60_000, "WRITE");
      const backend = new RedisBackend({ url: own.server.url, env: {} });
      // before: its sharded-server check (an EVAL, a write) waited for the pause's end, and a
      // disconnect() behind it too
      await backend.connect();
      await backend.disconnect();
    } finally {
      await admin.call("CLIENT", "UNPAUSE");
      admin.disconnect();
    }
  });
});

/**
 * A Redis past its `maxclients` writes "-ERR max number of clients reached" to a new connection
 * and closes it; ioredis, writing its handshake first, sees only the closed connection. The
 * adapters ask the server (a connection that listens) and quote its words: at connect, and in
 * the last error of a connection whose reconnect is refused so. On a redis-server of the test's
 * own.
 */
import { Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import { RedisBackend } from "../../../src/backends/redis/index.js";
import { RedisBroker } from "../../../src/brokers/redis/index.js";
import { eventually } from "../../contract/contract-helpers.js";
import { useCleanups } from "../../helpers/cleanups.js";
import { skipUnless, uniqueName } from "../../helpers/services.js";
import { useOwnRedis } from "./own-redis.js";

const skip = await skipUnless("redis");

describe.skipIf(skip)("redis: a server past its maxclients", () => {
  const own = useOwnRedis("maxclients");
  const cleanups = useCleanups();

  /** An admin connection that resets maxclients after the test. */
  async function admin(): Promise<Redis> {
    const client = new Redis(own.server.url);
    cleanups.push(async () => {
      await client.config("SET", "maxclients", "10000").catch(() => undefined);
      client.disconnect();
    });
    await client.ping();
    return client;
  }

  it("a connect refused so names maxclients, not a port or TLS mistake", async () => {
    const server = await admin();
    await server.config("SET", "maxclients", "1"); // the admin connection is the one
    const broker = new RedisBroker({ url: own.server.url, keyPrefix: uniqueName("maxc"), env: {} });
    cleanups.push(() => broker.disconnect());
    const refused = await broker.connect().catch((error: unknown) => error);
    expect(String(refused)).toMatch(
      /cannot connect to .*the server refuses new connections: "ERR max number of clients reached": .*maxclients/,
    );
    expect(String(refused)).not.toMatch(/is this a Redis port/);
  });

  it("a reconnect refused so is quoted in the connection's last error (healthcheck)", async () => {
    const server = await admin();
    const backend = new RedisBackend({ url: own.server.url, keyPrefix: uniqueName("maxc"), env: {} });
    cleanups.push(() => backend.disconnect());
    await backend.connect();
    expect((await backend.healthcheck()).connected).toBe(true);
    await server.config("SET", "maxclients", "1"); // the admin connection: the backend's is past it
    await server.call("CLIENT", "KILL", "SKIPME", "yes", "TYPE", "normal"); // the backend's: its reconnect is refused
    // (before: "connection reconnecting; last error: write EPIPE", and nothing more)
    const error = await eventually(async () => {
      const status = await backend.healthcheck();
      return !status.connected && /max number of clients reached/.test(String(status.error)) && String(status.error);
    });
    expect(error).toMatch(/last error: .*the server refuses new connections: .*maxclients/);
    await server.config("SET", "maxclients", "10000");
    await eventually(async () => (await backend.healthcheck()).connected);
  });
});

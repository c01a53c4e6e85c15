/**
 * `sameRedisServer`: when the broker may write the backend's records in its ack script (one Lua
 * call touching the keys of both), judged from the two ioredis clients' options.
 */
import { describe, expect, it } from "vitest";
import type { RedisClientLike } from "../../src/redis/redis-client.js";
import { sameRedisServer } from "../../src/redis/redis-connect.js";

const client = (options: Record<string, unknown>, isCluster = false) =>
  ({ options, isCluster }) as unknown as RedisClientLike;

describe("sameRedisServer", () => {
  it("single nodes: same address, database and user only", () => {
    const a = client({ host: "10.0.0.1", port: 6379, db: 2 });
    expect(sameRedisServer(a, client({ host: "10.0.0.1", port: 6379, db: 2 }))).toBe(true);
    expect(sameRedisServer(a, client({ host: "10.0.0.1", port: 6379, db: 3 }))).toBe(false);
    expect(sameRedisServer(a, client({ host: "10.0.0.2", port: 6379, db: 2 }))).toBe(false);
    expect(sameRedisServer(a, client({ host: "10.0.0.1", port: 6379, db: 2, username: "app" }))).toBe(false);
  });

  it("Sentinel: the same primary name, set of sentinels (in any order), database and user", () => {
    const sentinels = [
      { host: "s1", port: 26379 },
      { host: "s2", port: 26379 },
    ];
    const a = client({ sentinels, name: "main", db: 1 });
    expect(sameRedisServer(a, client({ sentinels: [...sentinels].reverse(), name: "main", db: 1 }))).toBe(true);
    expect(sameRedisServer(a, client({ sentinels, name: "other", db: 1 }))).toBe(false);
    expect(sameRedisServer(a, client({ sentinels, name: "main", db: 0 }))).toBe(false);
    expect(sameRedisServer(a, client({ sentinels: sentinels.slice(0, 1), name: "main", db: 1 }))).toBe(false);
    expect(sameRedisServer(a, client({ sentinels, name: "main", db: 1, username: "app" }))).toBe(false);
    // a client of replicas, or a Sentinel client beside a direct one: unsure, so no
    expect(sameRedisServer(a, client({ sentinels, name: "main", db: 1, role: "slave" }))).toBe(false);
    expect(sameRedisServer(a, client({ host: "s1", port: 26379, db: 1 }))).toBe(false);
  });

  it("a Cluster: never (its keys live in different slots)", () => {
    const cluster = client({}, true);
    expect(sameRedisServer(cluster, cluster)).toBe(false);
  });
});

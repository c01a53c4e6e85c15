/**
 * Helpers of the Redis tests: a raw ioredis connection to the shared test Redis (and a way to
 * drop one), and deletion of every key under a test's random prefix (never FLUSHDB on the
 * shared server).
 */
import { Redis } from "ioredis";
import type { Cleanups } from "../../helpers/cleanups.js";
import { SERVICES, uniqueName } from "../../helpers/services.js";

/** A random key prefix for one test. */
export function testPrefix(): string {
  return uniqueName("chtest");
}

/** A raw client for assertions (caller disconnects it). */
export function rawRedis(url: string = SERVICES.redis): Redis {
  return new Redis(url, { maxRetriesPerRequest: null });
}

/**
 * Drops `client`'s connection (`CLIENT KILL` sent by `admin`): the commands it has no reply for,
 * and those sent before it reconnects, go out again on the new connection. `ready`: the
 * reconnect.
 */
export async function dropConnection(client: Redis, admin: Redis): Promise<{ ready: Promise<void> }> {
  const id = String(await client.call("CLIENT", "ID"));
  const ready = new Promise<void>((resolve) => client.once("ready", () => resolve()));
  await admin.call("CLIENT", "KILL", "ID", id);
  return { ready };
}

/**
 * What the ack script does to an entry, by hand: out of the group's pending list (XACK) and
 * out of the stream (XDEL). As an ack's first copy, or another consumer's ack, would leave it.
 */
export async function settleByHand(redis: Redis, stream: string, group: string, id: string): Promise<void> {
  await redis.xack(stream, group, id);
  await redis.xdel(stream, id);
}

/** Every key under `prefix:` (SCAN). */
export async function keysUnder(redis: Redis, prefix: string): Promise<string[]> {
  const found: string[] = [];
  let cursor = "0";
  do {
    const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}:*`, "COUNT", 1000);
    cursor = next;
    found.push(...keys);
  } while (cursor !== "0");
  return found;
}

/** Deletes every key under `prefix:`. */
export async function deletePrefix(prefix: string, url: string = SERVICES.redis): Promise<void> {
  const redis = rawRedis(url);
  try {
    const keys = await keysUnder(redis, prefix);
    for (let i = 0; i < keys.length; i += 500) await redis.del(...keys.slice(i, i + 500));
  } finally {
    redis.disconnect();
  }
}

/** The test server's URL with another logical database (1, or 2 when the tests use 1). */
export function otherDatabase(url: string = SERVICES.redis): string {
  const u = new URL(url);
  u.pathname = u.pathname === "/1" ? "/2" : "/1";
  return u.toString();
}

/**
 * An ACL user of the test server with `rules` (after `on >password`), deleted by `cleanups`;
 * its name and a URL that logs in as it.
 */
export async function aclUser(cleanups: Cleanups, ...rules: string[]): Promise<{ user: string; url: string }> {
  const user = uniqueName("chicory-acl-");
  const password = uniqueName("pw-");
  const admin = rawRedis();
  await admin.call("ACL", "SETUSER", user, "on", `>${password}`, ...rules);
  cleanups.push(async () => {
    await admin.call("ACL", "DELUSER", user);
    admin.disconnect();
  });
  const url = new URL(SERVICES.redis);
  url.username = user;
  url.password = password;
  return { user, url: url.toString() };
}

/**
 * Helpers of the Redis tests: a raw ioredis connection to the shared test Redis (and a way to
 * drop one), and deletion of every key under a test's random prefix (never FLUSHDB on the
 * shared server).
 */
import { connect } from "node:net";
import { Redis } from "ioredis";
import type { Cleanups } from "../../helpers/cleanups.js";
import { SERVICES, uniqueName } from "../../helpers/services.js";

/** A command Redis logged to a `MONITOR` connection: its arguments, and who sent it. */
export interface MonitoredCommand {
  readonly args: string[];
  /** `host:port` of the client, or `lua` for a command a script ran. */
  readonly source: string;
}

/**
 * A `MONITOR` connection on a plain socket, which pushes every command Redis logs onto
 * `seen` until `cleanups` run. (ioredis's `monitor()` can fail with "Command queue state
 * error" when another client's command is logged in the same read as MONITOR's `+OK`.)
 */
export async function monitorCommands(cleanups: Cleanups, url: string = SERVICES.redis): Promise<MonitoredCommand[]> {
  const { hostname, port } = new URL(url);
  const socket = connect(Number(port || 6379), hostname);
  cleanups.push(() => {
    socket.destroy();
  });
  const seen: MonitoredCommand[] = [];
  let buffered = "";
  await new Promise<void>((resolve, reject) => {
    socket.once("error", reject);
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      buffered += chunk;
      for (let end = buffered.indexOf("\r\n"); end >= 0; end = buffered.indexOf("\r\n")) {
        const line = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        if (line === "+OK") resolve();
        // +<time> [<db> <source>] "arg" "arg" ... (arguments escaped as Redis's sdscatrepr does)
        const logged = /^\+\d+\.\d+ \[\d+ ([^\]]+)\] (.*)$/.exec(line);
        if (logged === null) continue;
        const args = [...(logged[2] ?? "").matchAll(/"((?:[^"\\]|\\.)*)"/g)].map(([, arg = ""]) =>
          arg.replace(/\\(x[0-9a-f]{2}|.)/g, (_, c: string) =>
            c.length === 3
              ? String.fromCharCode(Number.parseInt(c.slice(1), 16))
              : ({ n: "\n", r: "\r", t: "\t" }[c] ?? c),
          ),
        );
        seen.push({ args, source: logged[1] ?? "" });
      }
    });
    socket.write("MONITOR\r\n");
  });
  return seen;
}

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

/**
 * A start-up check of a Redis user's ACL rights (scripting and key patterns), so a worker
 * whose user may not touch its keys fails to start with a clear error instead of running and
 * logging the same refusal on every call.
 * @module
 */
import { withinDeadline } from "../core/sleep.js";
import { ConfigurationError } from "../errors.js";
import { readLua } from "./lua.js";
import { type RedisClientLike, runScript } from "./redis-client.js";
import { isClusterClient, redactedCopy } from "./redis-connect.js";

const CHECK_ACCESS = "chicoryCheckAccess";
const CHECK_ACCESS_LUA = readLua("redis/scripts/check-access.lua");
/** How long a check waits for Redis (an outage right after connecting must not hold a start). */
const CHECK_TIMEOUT_MS = 2000;

/**
 * Registers the check's script on `client`. Call it when the client opens, with the adapter's
 * other scripts: ioredis's automatic pipelining copies a client's scripts into each pipeline it
 * starts, so a script defined while one is filling is missing from it, and calling it there
 * breaks that pipeline's other replies.
 */
export function defineAccessCheck(client: RedisClientLike): void {
  client.defineCommand(CHECK_ACCESS, { lua: CHECK_ACCESS_LUA });
}

/** True for Redis's refusal by an ACL rule. */
export function isNoPermError(error: unknown): boolean {
  return error instanceof Error && error.message.startsWith("NOPERM");
}

/** One set of keys to check (all in one Cluster slot) and what they are, for the message. */
export interface AccessGroup {
  /** The keys, as the scripts will name them. */
  readonly keys: readonly string[];
  /** What they serve, e.g. `the keys of queue "emails"`. */
  readonly what: string;
}

/**
 * Calls `check-access.lua` (registered with {@link defineAccessCheck}) once per group, naming
 * the group's keys: Redis refuses the call
 * (`NOPERM`) when the user may not run scripts or may not touch one of the keys.
 * @param describe redacts the password from Redis's message
 * @throws ConfigurationError on a refusal, naming what was refused and where to read more;
 *   other errors (Redis away, no answer within 2 s) are not thrown: the calls that follow
 *   meet them and retry as usual
 */
export async function checkRedisAccess(
  client: RedisClientLike,
  component: string,
  groups: readonly AccessGroup[],
  keyPattern: string,
  describe: (error: unknown) => string,
): Promise<void> {
  const refusals = await Promise.all(
    groups.map((group) =>
      withinDeadline(
        runScript(client, CHECK_ACCESS, [String(group.keys.length), ...group.keys], []),
        CHECK_TIMEOUT_MS,
      ).then(
        () => undefined,
        (error: unknown) => (isNoPermError(error) ? { group, error } : undefined),
      ),
    ),
  );
  const refused = refusals.find((r) => r !== undefined);
  if (refused === undefined) return;
  throw new ConfigurationError(
    `${component}: the Redis user may not run its scripts on ${refused.group.what} (${describe(refused.error)}); ` +
      `grant it the scripting commands and the keys (ACL SETUSER <user> ~${keyPattern} …; see docs/brokers/redis.md, "ACL")`,
    { cause: redactedCopy(refused.error) },
  );
}

/**
 * Refuses a server that is a replica (`role:slave` in `INFO replication`): every call of the
 * broker and backend writes, and a read-only replica refuses each write with `READONLY` (the
 * connection then reconnects, looking for a primary after a failover), so a worker pointed at
 * one would start and then fail every fetch. A Cluster client is not checked (it sends writes
 * to the primaries), nor a server that refuses `INFO` or does not answer within 2 s.
 * @throws ConfigurationError naming the server and its primary
 */
export async function refuseReplica(client: RedisClientLike, component: string, displayUrl: string): Promise<void> {
  if (isClusterClient(client)) return;
  let info: string;
  try {
    info = String(await withinDeadline(client.call("INFO", "replication"), CHECK_TIMEOUT_MS));
  } catch {
    return;
  }
  if (!/^role:slave\r?$/m.test(info)) return;
  const host = /^master_host:(\S+?)\r?$/m.exec(info)?.[1];
  const port = /^master_port:(\d+)\r?$/m.exec(info)?.[1];
  const primary = host === undefined ? "" : ` of ${host}${port === undefined ? "" : `:${port}`}`;
  throw new ConfigurationError(
    `${component}: ${displayUrl} is a replica${primary}, which refuses writes (READONLY), and every call ` +
      "of Chicory writes: point it at the primary (after a failover, at the new one)",
  );
}

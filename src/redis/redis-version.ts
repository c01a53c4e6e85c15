/**
 * The Redis version the Redis broker needs, checked when it connects. The broker's scripts use
 * `XGROUP CREATECONSUMER`, `XPENDING … IDLE` and exclusive `XRANGE` ranges (`(id`), which came in
 * Redis 6.2: on an older server a worker would start, then fail its fetches with the server's
 * errors for those commands (an unknown subcommand, a syntax error) while its queue fills. The
 * broker reads `redis_version` from `INFO server` and refuses an older server at once, naming
 * the version it found. A server that does not answer `INFO` (ACL rules, some managed services)
 * or reports no version it can read is not refused.
 * @module
 */
import { withinDeadline } from "../core/sleep.js";
import { ConfigurationError } from "../errors.js";
import type { RedisClientLike } from "./redis-client.js";

/** Longest wait for the server's `INFO` (as for the replica check). */
const CHECK_TIMEOUT_MS = 2000;

/** The oldest Redis the broker runs on, as [major, minor]. */
export const BROKER_MIN_REDIS: readonly [number, number] = [6, 2];

/** `redis_version` of an `INFO server` reply as [major, minor, patch], or undefined when absent. */
export function parseRedisVersion(info: string): [number, number, number] | undefined {
  const m = /^redis_version:(\d+)\.(\d+)(?:\.(\d+))?/m.exec(info);
  if (m === null) return undefined;
  return [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)];
}

/**
 * Why the server whose `INFO server` reply is `info` cannot run the broker, as a sentence, or
 * undefined when its version is 6.2 or later or cannot be read.
 */
export function brokerVersionProblem(info: string): string | undefined {
  const version = parseRedisVersion(info);
  if (version === undefined) return undefined;
  const [major, minor] = version;
  const [needMajor, needMinor] = BROKER_MIN_REDIS;
  if (major > needMajor || (major === needMajor && minor >= needMinor)) return undefined;
  return (
    `the server runs Redis ${version.join(".")}; the Redis broker needs Redis ${needMajor}.${needMinor} or ` +
    "later (it uses XGROUP CREATECONSUMER, XPENDING with IDLE and exclusive XRANGE ranges)"
  );
}

/**
 * Refuses a server older than Redis 6.2 ({@link brokerVersionProblem}), as `refuseReplica`
 * (`redis-access.ts`) refuses a replica: `INFO server` within 2 s; a server that refuses `INFO`
 * or does not answer in time is not checked.
 * @throws ConfigurationError naming `component`, the server and its version
 */
export async function refuseOldRedis(client: RedisClientLike, component: string, displayUrl: string): Promise<void> {
  let info: string;
  try {
    info = String(await withinDeadline(client.call("INFO", "server"), CHECK_TIMEOUT_MS));
  } catch {
    return;
  }
  const problem = brokerVersionProblem(info);
  if (problem !== undefined) throw new ConfigurationError(`${component} (${displayUrl}): ${problem}`);
}

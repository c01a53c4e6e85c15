/**
 * Reads the broker's own view of in-flight jobs, straight from its storage (not through the
 * adapter under test): which consumer holds the lease of each task id.
 * - SQLite: `chicory_jobs.locked_by` (rows whose lease is still running).
 * - Redis: the consumer group's pending entries list (XPENDING) of the work stream.
 * Plus raw Redis probes of the group: its consumers (XINFO CONSUMERS) and its PEL size.
 */
import Database from "better-sqlite3";
import type { Redis } from "ioredis";
import { rawRedis } from "../../integration/redis/redis-test-keys.js";
import type { Sandbox } from "./sandbox.js";

/** task id → consumer id holding it (leased / pending), for jobs of `queue` still in flight. */
export async function leaseOwners(sb: Sandbox, queue = "default"): Promise<Map<string, string>> {
  const owners = new Map<string, string>();
  if (sb.broker === "rabbitmq") throw new Error("leaseOwners: RabbitMQ does not expose which consumer holds a message");
  if (sb.broker === "sqlite") {
    const db = new Database(sb.dbPath ?? "", { readonly: true, fileMustExist: true });
    try {
      const rows = db
        .prepare(
          "SELECT task_id, locked_by FROM chicory_jobs WHERE queue = ? AND locked_by IS NOT NULL AND locked_until > ?",
        )
        .all(queue, Date.now()) as Array<{ task_id: string; locked_by: string }>;
      for (const row of rows) owners.set(row.task_id, row.locked_by);
    } finally {
      db.close();
    }
    return owners;
  }
  const redis = rawRedis();
  try {
    const stream = `${sb.prefix}:stream:{${queue}}`;
    const group = sb.env.CHICORY_BROKER_REDIS_CONSUMER_GROUP ?? "chicory-workers";
    const pending = (await redis.call("XPENDING", stream, group, "-", "+", 10_000)) as Array<
      [string, string, number, number]
    >;
    for (const [entryId, consumer] of pending) {
      const entries = (await redis.xrange(stream, entryId, entryId)) as Array<[string, string[]]>;
      const fields = entries[0]?.[1] ?? [];
      // The task id: the entry's `id` field when it has one (unique messages, retries), else the body's.
      const at = fields.indexOf("id");
      const data = fields.indexOf("data");
      const taskId = at >= 0 ? fields[at + 1] : data >= 0 ? bodyId(fields[data + 1]) : undefined;
      owners.set(taskId ?? `entry:${entryId}`, consumer);
    }
  } finally {
    redis.disconnect();
  }
  return owners;
}

/** The worker id a CLI worker logged in its "worker started" line. */
export function workerIdOf(stderr: string): string {
  const match = /"workerId":"([^"]+)"[^\n]*"msg":"worker started"/.exec(stderr);
  if (!match?.[1]) throw new Error("no workerId in the worker's log");
  return match[1];
}

/** The Redis work stream key and consumer group of `queue` in a redis sandbox. */
export function redisStream(sb: Sandbox, queue = "default"): { stream: string; group: string } {
  if (sb.broker !== "redis") throw new Error("redisStream: not a redis sandbox");
  return {
    stream: `${sb.prefix}:stream:{${queue}}`,
    group: sb.env.CHICORY_BROKER_REDIS_CONSUMER_GROUP ?? "chicory-workers",
  };
}

/** One consumer of the group, as XINFO CONSUMERS reports it. */
export interface ConsumerInfo {
  readonly name: string;
  readonly pending: number;
  /** Redis 7.0: ms since the consumer last got entries (or was created / claimed some). */
  readonly idle: number;
}

/** XINFO CONSUMERS of the group of `queue` (empty when the group does not exist). */
export async function redisConsumers(redis: Redis, sb: Sandbox, queue = "default"): Promise<ConsumerInfo[]> {
  const { stream, group } = redisStream(sb, queue);
  let rows: unknown[][];
  try {
    rows = (await redis.call("XINFO", "CONSUMERS", stream, group)) as unknown[][];
  } catch (error) {
    if (error instanceof Error && /NOGROUP|no such key/i.test(error.message)) return [];
    throw error;
  }
  return rows.map((row) => {
    const field = (name: string) => row[row.indexOf(name) + 1];
    return { name: String(field("name")), pending: Number(field("pending")), idle: Number(field("idle")) };
  });
}

/** Pending entries of the group (XPENDING summary count), and how many have been idle ≥ `staleMs`. */
export async function redisPending(
  redis: Redis,
  sb: Sandbox,
  staleMs: number,
  queue = "default",
): Promise<{ pending: number; stale: number }> {
  const { stream, group } = redisStream(sb, queue);
  try {
    const [summary, stale] = await Promise.all([
      redis.call("XPENDING", stream, group) as Promise<[number, ...unknown[]]>,
      redis.call("XPENDING", stream, group, "IDLE", staleMs, "-", "+", 1000) as Promise<unknown[]>,
    ]);
    return { pending: Number(summary[0]), stale: stale.length };
  } catch (error) {
    if (error instanceof Error && /NOGROUP|no such key/i.test(error.message)) return { pending: 0, stale: 0 };
    throw error;
  }
}

/** The `id` of a JSON message body, if it has one. */
function bodyId(body: string | undefined): string | undefined {
  try {
    const id = (JSON.parse(body ?? "") as { id?: unknown }).id;
    return typeof id === "string" ? id : undefined;
  } catch {
    return undefined;
  }
}

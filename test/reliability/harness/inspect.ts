/**
 * Reads the broker's own view of in-flight jobs, straight from its storage (not through the
 * adapter under test): which consumer holds the lease of each task id.
 * - SQLite: `chicory_jobs.locked_by` (rows whose lease is still running).
 * - Redis: the consumer group's pending entries list (XPENDING) of the work stream.
 */
import Database from "better-sqlite3";
import { rawRedis } from "../../integration/redis/redis-test-keys.js";
import type { Sandbox } from "./sandbox.js";

/** task id → consumer id holding it (leased / pending), for jobs of `queue` still in flight. */
export async function leaseOwners(sb: Sandbox, queue = "default"): Promise<Map<string, string>> {
  const owners = new Map<string, string>();
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

/** The `id` of a JSON message body, if it has one. */
function bodyId(body: string | undefined): string | undefined {
  try {
    const id = (JSON.parse(body ?? "") as { id?: unknown }).id;
    return typeof id === "string" ? id : undefined;
  } catch {
    return undefined;
  }
}

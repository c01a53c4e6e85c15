/**
 * Inspection and administration of Redis queues and dead letters (the `BrokerAdmin` half of
 * the Redis broker). Every multi-step change is one Lua script on one queue's keys.
 * @module
 */
import type { MessageCodec } from "../../core/message.js";
import { ValidationError } from "../../errors.js";
import { type RedisClientLike, runScript } from "../../redis/redis-client.js";
import type { DlqMessage, DlqReplayGuard } from "../broker.js";
import {
  dlqListCount,
  guardedReplay,
  replayedTaskId,
  replayRefusedError,
  rewriteForReplay,
  toDlqMessage,
} from "../dlq.js";
import { type QueueKeys, RELEASED_CONSUMER } from "./redis-keys.js";
import { RARE_RECEIPT_TTL_MS, receiptKey } from "./redis-publish-batch.js";

type StreamEntry = [string, string[]];

/** Batch size of purge scripts (keeps each script call short). */
const PURGE_BATCH = 1000;

function fieldsOf(fields: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < fields.length; i += 2) out[fields[i] as string] = fields[i + 1] as string;
  return out;
}

/**
 * Up to `count` oldest DLQ entries; with `afterMessageId` (a whole entry id), those after it
 * (an exclusive `XRANGE` start, Redis 6.2+).
 */
export async function getDlqMessages(
  client: RedisClientLike,
  keys: QueueKeys,
  count: number,
  afterMessageId?: string,
): Promise<DlqMessage[]> {
  dlqListCount(afterMessageId === undefined ? "getDlqMessages" : "getDlqMessagesAfter", count);
  const start = afterMessageId === undefined ? "-" : `(${dlqEntryId(afterMessageId)}`;
  // nothing comes after the largest id (and Redis refuses it as an exclusive start)
  if (count === 0 || start === `(${MAX_U64}-${MAX_U64}`) return [];
  const entries = (await client.call("XRANGE", keys.dlq, start, "+", "COUNT", count)) as StreamEntry[];
  return entries.map(([id, raw]) => {
    const f = fieldsOf(raw);
    const retryCount = f.retry_count === undefined ? undefined : Number(f.retry_count);
    return toDlqMessage(id, {
      body: f.data ?? "",
      error: f.error ?? "",
      failedAt: f.failed_at ?? 0,
      retryCount: Number.isFinite(retryCount) ? retryCount : undefined,
      taskId: f.id || undefined,
    });
  });
}

const MAX_U64 = 2n ** 64n - 1n;

/**
 * `messageId` when it is a whole stream entry id (`<ms>-<seq>`, as `getDlqMessages` gives it,
 * each part at most 2^64 - 1), else a ValidationError: Redis reads `<ms>` alone as a range
 * over every entry of that millisecond, so one call could act on another entry than the one
 * named.
 */
function dlqEntryId(messageId: string): string {
  if (typeof messageId !== "string") {
    // (from JavaScript, or a field of another name read: `messageId` is the entry's id)
    throw new ValidationError(
      `DLQ message id must be a string (the entry's messageId, e.g. 1700000000000-0), got ${messageId === null ? "null" : typeof messageId}`,
    );
  }
  const parts = /^(\d{1,20})-(\d{1,20})$/.exec(messageId);
  if (!parts || BigInt(parts[1] as string) > MAX_U64 || BigInt(parts[2] as string) > MAX_U64) {
    throw new ValidationError(
      `DLQ message id ${JSON.stringify(messageId.slice(0, 64))} is not a Redis stream entry id (<ms>-<seq>, e.g. 1700000000000-0)`,
    );
  }
  return messageId;
}

/**
 * Moves one DLQ entry back to its queue's stream. The new body is computed here (re-encoded
 * when `resetRetries`), then a script enqueues it only if the entry still exists, deleting it
 * in the same step: concurrent replays enqueue once. The replayed message holds its task id's
 * unique marker; a replay while another message of that task id holds it is refused.
 * @throws ChicoryError when another message of the task id is queued, delayed or running
 */
export async function replayFromDlq(
  client: RedisClientLike,
  codec: MessageCodec,
  keys: QueueKeys,
  messageId: string,
  resetRetries: boolean,
  guard?: DlqReplayGuard,
  oversize?: (body: string) => Error | undefined | Promise<Error | undefined>,
): Promise<boolean> {
  const entries = (await client.call("XRANGE", keys.dlq, dlqEntryId(messageId), messageId)) as StreamEntry[];
  const entry = entries[0];
  if (entry === undefined) return false;
  const f = fieldsOf(entry[1]);
  const body = rewriteForReplay(codec, f.data ?? "", resetRetries, f.error);
  const tooLarge = await oversize?.(body);
  if (tooLarge !== undefined) throw tooLarge; // the entry stays in the DLQ
  const taskId = replayedTaskId(body) ?? f.id;
  return guardedReplay(guard, taskId, async () => {
    const id = taskId ?? messageId;
    // a receipt, as a publish call's: a copy sent again after a dropped connection answers as
    // the first did
    const receipt = receiptKey(keys.sent);
    const moved = await runScript(
      client,
      "chicoryReplay",
      [keys.dlq, keys.stream, keys.unique, receipt],
      [messageId, body, id, RARE_RECEIPT_TTL_MS],
    );
    if (moved === -2) throw replayRefusedError(messageId, id);
    return moved === 1;
  });
}

/** Whether the DLQ holds entry `messageId` (one `XRANGE` of that id). */
export async function hasDlqEntry(client: RedisClientLike, keys: QueueKeys, messageId: string): Promise<boolean> {
  const id = dlqEntryId(messageId);
  const entries = (await client.call("XRANGE", keys.dlq, id, id, "COUNT", 1)) as StreamEntry[];
  return entries.length > 0;
}

/** Deletes one DLQ entry. */
export async function deleteFromDlq(client: RedisClientLike, keys: QueueKeys, messageId: string): Promise<boolean> {
  return (await client.call("XDEL", keys.dlq, dlqEntryId(messageId))) === 1;
}

/** Deletes the DLQ of a queue; returns how many entries it had. */
export async function purgeDlq(client: RedisClientLike, keys: QueueKeys): Promise<number> {
  // a receipt, as a publish call's: a copy sent again after a dropped connection deletes nothing more
  const receipt = receiptKey(keys.sent);
  return Number(await runScript(client, "chicoryPurgeDlq", [keys.dlq, receipt], [RARE_RECEIPT_TTL_MS]));
}

/** Number of DLQ entries. */
export async function getDlqCount(client: RedisClientLike, keys: QueueKeys): Promise<number> {
  return Number(await client.call("XLEN", keys.dlq));
}

/** Stream length, pending count and delayed count, read atomically. */
export async function queueStats(
  client: RedisClientLike,
  keys: QueueKeys,
  group: string,
): Promise<{ length: number; pending: number; delayed: number }> {
  const [length, pending, delayed] = (await runScript(
    client,
    "chicoryQueueStats",
    [keys.stream, keys.delayed],
    [group, RELEASED_CONSUMER],
  )) as [number, number, number];
  return { length: Number(length), pending: Number(pending), delayed: Number(delayed) };
}

/** Consumers registered in the group (0 when the group does not exist). */
export async function getConsumerCount(client: RedisClientLike, keys: QueueKeys, group: string): Promise<number> {
  try {
    const consumers = (await client.call("XINFO", "CONSUMERS", keys.stream, group)) as unknown[][];
    // (not a worker: the holder of given-back entries, see RELEASED_CONSUMER)
    return consumers.filter((c) => c[1] !== RELEASED_CONSUMER).length;
  } catch (error) {
    if (error instanceof Error && /NOGROUP|no such key/i.test(error.message)) return 0;
    throw error;
  }
}

/**
 * Deletes every waiting message (ready, given back by a stopped consumer, and delayed) in
 * batches; in-flight entries are kept, so their consumers can still settle them. Returns how
 * many were deleted.
 */
export async function purgeQueue(client: RedisClientLike, keys: QueueKeys, group: string): Promise<number> {
  let total = 0;
  for (;;) {
    const receipt = receiptKey(keys.sent);
    const n = Number(
      await runScript(
        client,
        "chicoryPurgeQueue",
        [keys.stream, keys.delayed, keys.delayedData, keys.unique, receipt],
        [group, PURGE_BATCH, RELEASED_CONSUMER, RARE_RECEIPT_TTL_MS],
      ),
    );
    total += n;
    if (n === 0) return total;
  }
}

/** Deletes consumers with no pending entries idle longer than `staleMs`, atomically. */
export async function cleanupStaleConsumers(
  client: RedisClientLike,
  keys: QueueKeys,
  group: string,
  staleMs: number,
): Promise<number> {
  return Number(await runScript(client, "chicoryCleanupConsumers", [keys.stream], [group, staleMs, RELEASED_CONSUMER]));
}

/**
 * How the Redis backend stores task records and heartbeats: one JSON string per task whose
 * first member is always `state` (the precedence script reads only that prefix).
 * @module
 */
import { MAX_DEPTH, safeJsonParse } from "../../core/json.js";
import { ChicoryError } from "../../errors.js";
import { TASK_STATES, type TaskRecord, type TaskState, type WorkerStats } from "../backend.js";

/**
 * Deepest nesting of a stored record: the record's own object around a result or error that
 * may itself nest {@link MAX_DEPTH} levels (the worker refuses deeper results).
 */
export const RECORD_MAX_DEPTH = MAX_DEPTH + 1;

/**
 * Serializes a record with `state` first and `updatedAt` last (members left `undefined` are
 * omitted): the scripts read only these ends (`store-record.lua`, `delete-record-if.lua`).
 */
export function encodeRecord(record: TaskRecord): string {
  return JSON.stringify({
    state: record.state,
    taskId: record.taskId,
    result: record.result,
    error: record.error,
    retries: record.retries,
    taskName: record.taskName,
    updatedAt: record.updatedAt,
  });
}

/**
 * Parses the record stored at `key` for `taskId`: null when there is none.
 * @throws ChicoryError naming the key when the stored value is not the record of `taskId`
 * (corrupt or foreign data): reading it as "no record yet" would leave a `get()` waiting until
 * its timeout, and `state()` saying `PENDING`, with nothing pointing at the bad key
 */
export function decodeRecord(text: string | null | undefined, key: string, taskId: string): TaskRecord | null {
  if (text === null || text === undefined) return null;
  let parsed: unknown;
  try {
    parsed = safeJsonParse(text, RECORD_MAX_DEPTH);
  } catch {
    throw unreadable(key, `not valid JSON, or nested deeper than ${RECORD_MAX_DEPTH} levels`);
  }
  const record = asRecord(parsed);
  if (record === null) throw unreadable(key, "not a task record (an object with a taskId and a known state)");
  if (record.taskId !== taskId) throw unreadable(key, "the record of another task id");
  return record;
}

/** The error for a result key holding another Redis type than a string (`type`, as TYPE names it). */
export function notARecordKey(key: string, type: string): ChicoryError {
  return unreadable(key, `it holds a Redis ${type}, not a string (foreign data at a result key)`);
}

function unreadable(key: string, why: string): ChicoryError {
  return new ChicoryError(`the stored result at ${key} cannot be read: ${why}`);
}

/** `value` as a record when it has the shape of one (a task id and a known state), else null. */
export function asRecord(value: unknown): TaskRecord | null {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return null;
  const record = value as Partial<TaskRecord>;
  if (typeof record.taskId !== "string" || !TASK_STATES.includes(record.state as TaskState)) return null;
  return record as TaskRecord;
}

/** Parses a stored heartbeat; null when missing or malformed. */
export function decodeHeartbeat(text: string | null | undefined): WorkerStats | null {
  if (text === null || text === undefined) return null;
  try {
    const parsed = safeJsonParse(text);
    if (parsed !== null && typeof parsed === "object" && typeof (parsed as WorkerStats).workerId === "string") {
      return parsed as WorkerStats;
    }
  } catch {
    // a foreign or corrupt value: treated as absent
  }
  return null;
}

/**
 * How the Redis backend stores task records and heartbeats: one JSON string per task whose
 * first member is always `state` (the precedence script reads only that prefix).
 * @module
 */
import { MAX_DEPTH, safeJsonParse } from "../../core/json.js";
import { TASK_STATES, type TaskRecord, type TaskState, type WorkerStats } from "../backend.js";

/**
 * Deepest nesting of a stored record: the record's own object around a result or error that
 * may itself nest {@link MAX_DEPTH} levels (the worker refuses deeper results).
 */
export const RECORD_MAX_DEPTH = MAX_DEPTH + 1;

/** Serializes a record with `state` first (members left `undefined` are omitted). */
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

/** Parses a stored record; null when it is missing or not a record. */
export function decodeRecord(text: string | null | undefined): TaskRecord | null {
  if (text === null || text === undefined) return null;
  let parsed: unknown;
  try {
    parsed = safeJsonParse(text, RECORD_MAX_DEPTH);
  } catch {
    return null;
  }
  return asRecord(parsed);
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

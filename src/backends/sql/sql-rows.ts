/**
 * Conversion between stored rows and the backend's records. JSON columns are parsed with
 * the safe parser (`__proto__` stays inert data).
 * @module
 */
import { type JsonValue, safeJsonParse } from "../../core/json.js";
import { ValidationError } from "../../errors.js";
import { type StoredError, TASK_STATES, type TaskRecord, type TaskState, type WorkerStats } from "../backend.js";
import type { TextCodec } from "./sql-names.js";
import type { DbMillis } from "./sql-types.js";

/** Longest key (task id, worker id, task name) the tables hold, in UTF-16 units after encoding. */
export const MAX_KEY_LENGTH = 255;

/** Epoch ms from a BIGINT column as any driver returns it. */
export function millis(value: DbMillis): number {
  return Number(value);
}

/** Encodes a key column and checks that it fits. */
export function encodeKey(codec: TextCodec, value: string, what: string): string {
  const encoded = codec.encode(value);
  if (encoded.length === 0 || encoded.length > MAX_KEY_LENGTH) {
    throw new ValidationError(`${what} must have 1-${MAX_KEY_LENGTH} characters, got ${value.length}`);
  }
  return encoded;
}

/** A stored results row (as selected). */
export interface ResultRow {
  task_id: string;
  state: string;
  result: string | null;
  error: string | null;
  retries: number | string | null;
  task_name: string | null;
  updated_at: DbMillis;
}

/** Builds a {@link TaskRecord} from a row; unknown states read as `PENDING`. */
export function toTaskRecord(row: ResultRow, codec: TextCodec): TaskRecord {
  const state = (TASK_STATES as readonly string[]).includes(row.state) ? (row.state as TaskState) : "PENDING";
  const record: {
    taskId: string;
    state: TaskState;
    updatedAt: string;
    result?: JsonValue;
    error?: StoredError;
    retries?: number;
    taskName?: string;
  } = { taskId: codec.decode(row.task_id), state, updatedAt: new Date(millis(row.updated_at)).toISOString() };
  if (row.result !== null) record.result = safeJsonParse(row.result) as JsonValue;
  if (row.error !== null) record.error = safeJsonParse(row.error) as StoredError;
  if (row.retries !== null) record.retries = Number(row.retries);
  if (row.task_name !== null) record.taskName = codec.decode(row.task_name);
  return record;
}

/** Worker stats from the stored JSON. */
export function toWorkerStats(stats: string): WorkerStats {
  return safeJsonParse(stats) as WorkerStats;
}

/** Serializes a stored error, keeping only its documented fields. */
export function errorJson(error: StoredError | undefined): string | null {
  if (error === undefined) return null;
  const plain: { type: string; message: string; stack?: string; code?: string } = {
    type: String(error.type),
    message: String(error.message),
  };
  if (error.stack !== undefined) plain.stack = String(error.stack);
  if (error.code !== undefined) plain.code = String(error.code);
  return JSON.stringify(plain);
}

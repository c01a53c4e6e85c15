/**
 * How the Redis broker writes the result backend's terminal task records in the same script
 * call as the acks of their deliveries (one round trip per settled batch instead of two), when
 * both live on one Redis server and database.
 * @module
 */
import type { TaskRecord } from "../backends/backend.js";
import type { RedisArg, RedisClientLike } from "./redis-client.js";

/** The KEYS and ARGV of one `store-results.lua` call. */
export interface StoreResultsCall {
  /** The record keys, one per record. */
  readonly keys: string[];
  /** The TTL in seconds, the done channel, the key prefix's length, the longest inlined record, then each record's JSON. */
  readonly args: RedisArg[];
}

/** Implemented by the Redis backend; used by the Redis broker's settler. */
export interface RedisRecordWriter {
  /** True when `client` reaches this backend's server, database and user (see `sameRedisServer`). */
  sharesServerWith(client: RedisClientLike): boolean;
  /** `record` as this backend stores it (the JSON a {@link RedisRecordWriter.storeResultsCall} takes). */
  encodeRecord(record: TaskRecord): string;
  /**
   * The `store-results.lua` call that writes and announces `records` (at most 500, none over
   * `PIECE_BYTES` of `redis-pieces.ts`); `jsons`: their {@link RedisRecordWriter.encodeRecord},
   * when done already.
   */
  storeResultsCall(records: readonly TaskRecord[], jsons?: readonly string[]): StoreResultsCall;
  /**
   * Writes a terminal `record` whose `json` is over `PIECE_BYTES` (`redis-pieces.ts`) in
   * pieces on the backend's own connection, and announces it; with `unlessFinal`, only when the
   * task has no terminal record yet. Resolves to whether it was written; rejects with Redis's
   * refusal when the record is longer than the server stores.
   */
  storeRecordInPieces(record: TaskRecord, json: string, unlessFinal: boolean): Promise<boolean>;
  /** Called once `records` were written: resolves this process's waiters at once. */
  recordsWritten(records: readonly TaskRecord[]): void;
  /** Writes terminal `records` (at most 500) on the backend's own connection, and announces them. */
  storeRecords(records: readonly TaskRecord[]): Promise<void>;
  /**
   * Writes those of terminal `records` (at most 500) whose task has no terminal record yet, and
   * announces them; resolves to those written.
   */
  storeRecordsUnlessFinal?(records: readonly TaskRecord[]): Promise<TaskRecord[]>;
}

/** True when `backend` can lend its record writes to the broker's acks. */
export function isRedisRecordWriter(backend: unknown): backend is RedisRecordWriter {
  const b = backend as Partial<RedisRecordWriter> | null;
  return (
    typeof b === "object" &&
    b !== null &&
    typeof b.sharesServerWith === "function" &&
    typeof b.encodeRecord === "function" &&
    typeof b.storeResultsCall === "function" &&
    typeof b.storeRecordInPieces === "function" &&
    typeof b.recordsWritten === "function" &&
    typeof b.storeRecords === "function"
  );
}

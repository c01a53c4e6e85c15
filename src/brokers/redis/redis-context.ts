/**
 * What the broker shares with its consumers and deliveries: the command connection, key
 * names, settings and error wrapping.
 * @module
 */
import type { Logger } from "../../core/logger.js";
import type { RedisClientLike } from "../../redis/redis-client.js";
import type { QueueKeyCache, QueueKeys } from "./redis-keys.js";

/** Settings of a connected broker. */
export interface RedisBrokerContext {
  /** Command connection (auto-pipelined; commands wait while reconnecting). */
  readonly main: RedisClientLike;
  readonly keys: QueueKeyCache;
  /** Consumer group name. */
  readonly group: string;
  /** Lease length: an entry idle this long is reclaimed by another consumer. */
  readonly claimMinIdleMs: number;
  /** Entries a consumer reads ahead of its free slots (0 = none). */
  readonly prefetch: number;
  /** Longest XREADGROUP BLOCK. */
  readonly blockMs: number;
  /** DLQ length at which dead-lettering fails (0 = no limit). */
  readonly dlqMaxLength: number;
  readonly logger: Logger;
  /** Display URL (password masked). */
  readonly displayUrl: string;
  /**
   * How many times `main` became ready (connected, then after each reconnect): a call whose
   * reply comes with a higher count than when it was sent may have been sent twice (ioredis
   * sends again the commands whose replies a dropped connection lost).
   */
  readonly mainReadyCount: () => number;
  /**
   * The error of a message body longer than the server takes in one argument (its
   * `proto-max-bulk-len`, which would stall the connection: see `RedisBroker`); else undefined.
   * A promise when a body that may exceed Redis's least limit waits for the limit to be read
   * again.
   */
  oversize(body: string): Error | undefined | Promise<Error | undefined>;
  /**
   * Notes a delayed job Redis has just accepted `delayMs` from now, to move it into its stream
   * when due (see `redis-due-mover.ts`).
   */
  scheduleMove(keys: QueueKeys, delayMs: number): void;
  /** Wraps a driver error into a BrokerConnectionError naming `operation` (password redacted). */
  wrapError(operation: string, error: unknown): Error;
}

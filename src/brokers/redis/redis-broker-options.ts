/**
 * Options of the Redis broker and their `CHICORY_BROKER_REDIS_*` environment variables.
 * @module
 */
import { checkInt, checkOptionKeys, type EnvMap, envInt, envMillis, envString } from "../../core/env.js";
import type { Logger } from "../../core/logger.js";
import { ConfigurationError } from "../../errors.js";
import { isClusterClient } from "../../redis/redis-connect.js";
import {
  checkRedisName,
  REDIS_CONNECTION_OPTION_KEYS,
  type RedisConnectionOptions,
} from "../../redis/redis-options.js";

/** Options of {@link RedisBroker} (each falls back to its `CHICORY_BROKER_REDIS_*` variable). */
export interface RedisBrokerOptions extends RedisConnectionOptions {
  /** Prefix of every key (default `"chicory"`; `KEY_PREFIX`). */
  keyPrefix?: string | undefined;
  /** Consumer group shared by all workers (default `"chicory-workers"`; `CONSUMER_GROUP`). */
  consumerGroup?: string | undefined;
  /** Longest XREADGROUP block, in milliseconds (default 5000; `BLOCK_MS`). */
  blockMs?: number | undefined;
  /**
   * Lease length in milliseconds: a delivery whose consumer stopped renewing it for this long
   * is reclaimed by another consumer (default 30000; `CLAIM_MIN_IDLE_MS`). Live consumers renew
   * every third of it, so long tasks are never reclaimed from a live worker.
   */
  claimMinIdleMs?: number | undefined;
  /**
   * Entries a consumer reads ahead of its free slots and holds in a local buffer (default 0:
   * it reads no more than it can start at once; `PREFETCH`, at most 1000). A read-ahead entry
   * is leased like a running one (renewed, never reclaimed while its worker lives) and given
   * back at once when the worker stops. It saves a round trip per batch when tasks are short;
   * with long tasks it holds entries another worker could start, so keep it off for those.
   */
  prefetch?: number | undefined;
  /**
   * Backlog limit per queue (stream + delayed). When reached, `publish` throws instead of
   * enqueueing; work streams are never trimmed. 0 or null = no limit (default; `MAX_STREAM_LENGTH`).
   */
  maxStreamLength?: number | null | undefined;
  /**
   * DLQ length limit per queue. When reached, dead-lettering throws and the message stays in
   * the work stream; the DLQ is never trimmed. 0 or null = no limit (default; `DLQ_MAX_LENGTH`).
   */
  dlqMaxLength?: number | null | undefined;
  /**
   * Milliseconds `publish` waits while Redis is unreachable before it rejects with
   * `BrokerConnectionError` (default 10000; `PUBLISH_TIMEOUT_MS`). The outcome of a publish that
   * timed out is unknown: it is applied if Redis received it (the client sends it again once
   * reconnected; a resent copy adds nothing, see docs/brokers/redis.md, Limits).
   */
  publishTimeoutMs?: number | undefined;
  /**
   * Replicas that must hold a published message before `publish` (so `delay()`) resolves
   * (default 0: it resolves once the primary applied it; `WAIT_REPLICAS`). With n > 0, each
   * publish call that added a message is confirmed by `WAIT n waitTimeoutMs` after its reply,
   * on a connection of the publishes' own: a publish that fewer replicas acknowledged in time
   * (or whose connection was made again meanwhile) rejects with `BrokerConnectionError`,
   * although the primary applied it (it runs, unless the primary fails before a replica copies
   * it). It narrows what a failover can lose (asynchronous replication, docs/brokers/redis.md);
   * it does not make Redis consistent. With a given `client`, the publishes wait on a copy of it
   * (`duplicate()`) that the broker owns; not for a Redis Cluster.
   */
  waitReplicas?: number | undefined;
  /**
   * Longest wait of `waitReplicas`, in milliseconds (default 1000; `WAIT_TIMEOUT_MS`): one `WAIT`
   * at a time, shared by the calls that ask in one turn, so a publish waits for up to three (two
   * as a rule), and 3 × `waitTimeoutMs` + 1 s (or a tenth of `publishTimeoutMs`, the larger)
   * must not exceed `publishTimeoutMs`.
   */
  waitTimeoutMs?: number | undefined;
  /** Environment to read the variables from (default `process.env`). */
  env?: EnvMap | undefined;
  /** Where warnings go (default: nowhere). */
  logger?: Logger | undefined;
}

/** Resolved broker settings. */
export interface RedisBrokerSettings {
  /** Prefix of every key (`CHICORY_BROKER_REDIS_KEY_PREFIX`, default `chicory`). */
  readonly keyPrefix: string;
  /** Consumer group shared by all workers (`CHICORY_BROKER_REDIS_CONSUMER_GROUP`, default `chicory-workers`). */
  readonly consumerGroup: string;
  /** Milliseconds a read blocks waiting for messages (`CHICORY_BROKER_REDIS_BLOCK_MS`, default 5000, 1-600000). */
  readonly blockMs: number;
  /** Lease length in milliseconds before another consumer may reclaim a delivery (`CHICORY_BROKER_REDIS_CLAIM_MIN_IDLE_MS`, default 30000, at least 100). */
  readonly claimMinIdleMs: number;
  /** Entries a consumer reads ahead of its free slots (`CHICORY_BROKER_REDIS_PREFETCH`, default 0, at most 1000). */
  readonly prefetch: number;
  /** Backlog limit per queue, stream + delayed (`CHICORY_BROKER_REDIS_MAX_STREAM_LENGTH`); 0 (default): no limit. */
  readonly maxStreamLength: number;
  /** DLQ length limit per queue (`CHICORY_BROKER_REDIS_DLQ_MAX_LENGTH`); 0 (default): no limit. */
  readonly dlqMaxLength: number;
  /** Milliseconds a publish waits while Redis is unreachable before it rejects (`CHICORY_BROKER_REDIS_PUBLISH_TIMEOUT_MS`, default 10000). */
  readonly publishTimeoutMs: number;
  /** Replicas a publish waits for (0 = none). */
  readonly waitReplicas: number;
  /** Longest wait for them, ms. */
  readonly waitTimeoutMs: number;
}

const ENV = "CHICORY_BROKER_REDIS";

/** A length cap: the option (null: none) over the variable; an error names where the value came from. */
function limit(value: number | null | undefined, env: EnvMap, option: string, variable: string): number {
  if (value === null) return 0;
  if (value === undefined) return envInt(env, variable, 0, 0);
  return checkInt(value, option, 0);
}

/** The keys of {@link RedisBrokerOptions}: any other is refused (an untyped caller's typo). */
const OPTION_KEYS: ReadonlySet<string> = new Set(
  Object.keys({
    ...REDIS_CONNECTION_OPTION_KEYS,
    keyPrefix: true,
    consumerGroup: true,
    blockMs: true,
    claimMinIdleMs: true,
    prefetch: true,
    maxStreamLength: true,
    dlqMaxLength: true,
    publishTimeoutMs: true,
    waitReplicas: true,
    waitTimeoutMs: true,
    env: true,
    logger: true,
  } satisfies Record<keyof RedisBrokerOptions, true>),
);

/** Options over environment over defaults. */
export function resolveBrokerSettings(options: RedisBrokerOptions, env: EnvMap): RedisBrokerSettings {
  checkOptionKeys(options, "RedisBroker", OPTION_KEYS);
  const publishTimeoutMs = checkInt(
    options.publishTimeoutMs ?? envMillis(env, `${ENV}_PUBLISH_TIMEOUT_MS`, 10_000, 1),
    "publishTimeoutMs",
    1,
  );
  const waitReplicas = checkInt(
    options.waitReplicas ?? envInt(env, `${ENV}_WAIT_REPLICAS`, 0, 0, 100),
    "waitReplicas",
    0,
    100,
  );
  const waitTimeoutMs = checkInt(
    options.waitTimeoutMs ?? envMillis(env, `${ENV}_WAIT_TIMEOUT_MS`, 1000, 1),
    "waitTimeoutMs",
    1,
  );
  const margin = Math.max(1000, Math.ceil(publishTimeoutMs / 10));
  if (waitReplicas > 0 && 3 * waitTimeoutMs + margin > publishTimeoutMs) {
    throw new ConfigurationError(
      `waitTimeoutMs (${waitTimeoutMs}) is too long for publishTimeoutMs (${publishTimeoutMs}): a publish waits for up to three waits (the one under way when it is sent, the next, and in rare cases one more), so 3 × waitTimeoutMs + ${margin} ms (the call and its replies: 1 s, or a tenth of publishTimeoutMs, the larger) must not exceed publishTimeoutMs, or it would time out ("outcome unknown") before the replicas' answer: lower waitTimeoutMs or raise publishTimeoutMs`,
    );
  }
  if (waitReplicas > 0 && options.client !== undefined && isClusterClient(options.client)) {
    throw new ConfigurationError(
      "waitReplicas is not for a Redis Cluster: a WAIT confirms the writes of the connection it is sent on, and a Cluster sends each queue's publishes to the node of its slot",
    );
  }
  return {
    keyPrefix: checkRedisName(
      options.keyPrefix ?? envString(env, `${ENV}_KEY_PREFIX`, "chicory"),
      options.keyPrefix === undefined ? `${ENV}_KEY_PREFIX` : "keyPrefix",
    ),
    consumerGroup: checkRedisName(
      options.consumerGroup ?? envString(env, `${ENV}_CONSUMER_GROUP`, "chicory-workers"),
      options.consumerGroup === undefined ? `${ENV}_CONSUMER_GROUP` : "consumerGroup",
    ),
    blockMs: checkInt(options.blockMs ?? envMillis(env, `${ENV}_BLOCK_MS`, 5000, 1, 600_000), "blockMs", 1, 600_000),
    claimMinIdleMs: checkInt(
      options.claimMinIdleMs ?? envMillis(env, `${ENV}_CLAIM_MIN_IDLE_MS`, 30_000, 100),
      "claimMinIdleMs",
      100,
    ),
    prefetch: checkInt(options.prefetch ?? envInt(env, `${ENV}_PREFETCH`, 0, 0, 1000), "prefetch", 0, 1000),
    maxStreamLength: limit(options.maxStreamLength, env, "maxStreamLength", `${ENV}_MAX_STREAM_LENGTH`),
    dlqMaxLength: limit(options.dlqMaxLength, env, "dlqMaxLength", `${ENV}_DLQ_MAX_LENGTH`),
    publishTimeoutMs,
    waitReplicas,
    waitTimeoutMs,
  };
}

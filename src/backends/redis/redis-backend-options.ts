/**
 * Options of the Redis backend and their `CHICORY_BACKEND_REDIS_*` environment variables.
 * @module
 */
import type { Duration } from "../../core/duration.js";
import { checkOptionKeys, durationMs, type EnvMap, envDurationMs, envString } from "../../core/env.js";
import type { Logger } from "../../core/logger.js";
import { ConfigurationError } from "../../errors.js";
import {
  checkRedisName,
  REDIS_CONNECTION_OPTION_KEYS,
  type RedisConnectionOptions,
} from "../../redis/redis-options.js";

/** Options of {@link RedisBackend} (each falls back to its `CHICORY_BACKEND_REDIS_*` variable). */
export interface RedisBackendOptions extends RedisConnectionOptions {
  /** Prefix of every key (default `"chicory"`; `KEY_PREFIX`). */
  keyPrefix?: string | undefined;
  /** How long records live, in seconds or with a unit (default 86400; 0 = forever; `RESULT_TTL`). */
  resultTtl?: Duration | undefined;
  /** Environment to read the variables from (default `process.env`). */
  env?: EnvMap | undefined;
  /** Where warnings go (default: nowhere). */
  logger?: Logger | undefined;
}

/** Resolved backend settings. */
export interface RedisBackendSettings {
  /** Prefix of every key (`CHICORY_BACKEND_REDIS_KEY_PREFIX`, default `chicory`). */
  readonly keyPrefix: string;
  /** Record TTL in whole seconds, rounded up; 0: records never expire. */
  readonly resultTtlSeconds: number;
}

const ENV = "CHICORY_BACKEND_REDIS";
/** Longest record TTL (Redis refuses an `EX` whose milliseconds overflow). */
const MAX_TTL_SECONDS = 100 * 365 * 86_400;

/** The keys of {@link RedisBackendOptions}: any other is refused (an untyped caller's typo). */
const OPTION_KEYS: ReadonlySet<string> = new Set(
  Object.keys({
    ...REDIS_CONNECTION_OPTION_KEYS,
    keyPrefix: true,
    resultTtl: true,
    env: true,
    logger: true,
  } satisfies Record<keyof RedisBackendOptions, true>),
);

/** Options over environment over defaults. */
export function resolveBackendSettings(options: RedisBackendOptions, env: EnvMap): RedisBackendSettings {
  checkOptionKeys(options, "RedisBackend", OPTION_KEYS);
  const ttlMs =
    options.resultTtl === undefined
      ? envDurationMs(env, `${ENV}_RESULT_TTL`, 86_400_000)
      : durationMs(options.resultTtl, "resultTtl", 86_400_000);
  const resultTtlSeconds = Math.ceil(ttlMs / 1000);
  if (resultTtlSeconds > MAX_TTL_SECONDS) {
    throw new ConfigurationError(
      `${options.resultTtl === undefined ? `${ENV}_RESULT_TTL` : "resultTtl"}: at most ${MAX_TTL_SECONDS} s (100 years), got ${resultTtlSeconds} s; 0 keeps records forever`,
    );
  }
  return {
    keyPrefix: checkRedisName(
      options.keyPrefix ?? envString(env, `${ENV}_KEY_PREFIX`, "chicory"),
      options.keyPrefix === undefined ? `${ENV}_KEY_PREFIX` : "keyPrefix",
    ),
    resultTtlSeconds,
  };
}

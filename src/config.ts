/**
 * Configuration (SPEC §9): constructor options over a `config` object over environment
 * variables over `.env` over defaults. Every value is validated once, here, and errors name
 * the variable or option.
 * @module
 */
import { cpus } from "node:os";
import { type Duration, toMs } from "./core/duration.js";
import {
  checkChoice,
  checkFlag,
  checkInt,
  checkOptionKeys,
  type EnvMap,
  envBool,
  envChoice,
  envDurationMs,
  envInt,
  envString,
  keysOf,
  loadEnv,
} from "./core/env.js";
import { checkLogLevel, type LogLevel, type LogLevelName } from "./core/logger.js";
import { DEFAULT_MAX_MESSAGE_BYTES } from "./core/message.js";
import { assertValidName } from "./core/names.js";
import { describeValue } from "./core/schema.js";
import { maskUrl } from "./core/url.js";
import { ConfigurationError, toError } from "./errors.js";

/**
 * Default of `maxResultBytes`: 4 MiB, a quarter of the smallest default limit of a backend's
 * server (MariaDB's `max_allowed_packet`, 16 MiB; the MySQL driver escapes `\` and `"` on the
 * client, which can double a record on the wire), so that a result too large for it fails its
 * task before it is sent rather than by the server's refusal (see `worker/executor.ts`).
 */
export const DEFAULT_MAX_RESULT_BYTES = 4 * 1024 * 1024;
/** Highest `maxResultBytes`: half Redis's largest value, room for the record around it. */
const MAX_RESULT_BYTES_LIMIT = 256 * 1024 * 1024;

/** When arguments and results are validated against their schemas. */
export type ValidationMode = "none" | "inputs" | "outputs" | "strict";
/** All validation modes. */
export const VALIDATION_MODES: readonly ValidationMode[] = ["none", "inputs", "outputs", "strict"];

/** `at_least_once`: ack after the outcome is stored; `at_most_once`: ack before running. */
export type DeliveryMode = "at_least_once" | "at_most_once";
/** All delivery modes. */
export const DELIVERY_MODES: readonly DeliveryMode[] = ["at_least_once", "at_most_once"];

/** Worker settings (SPEC §6). Durations are seconds. */
export interface WorkerConfig {
  /** Tasks run at once (default min(32, cpus + 4)). */
  readonly concurrency: number;
  /** Queues consumed, in order of preference (default `["default"]`). */
  readonly queues: readonly string[];
  /** Move failed and poison messages to the DLQ (default false). */
  readonly useDeadLetterQueue: boolean;
  /** Seconds between heartbeats (default 10). */
  readonly heartbeatInterval: number;
  /** Seconds a heartbeat lives (> heartbeatInterval; default 3 × heartbeatInterval, at least 30). */
  readonly heartbeatTtl: number;
  /** Seconds between stale-worker cleanups, jittered ±15 % (default 900, >= 30). */
  readonly cleanupInterval: number;
  /**
   * Seconds after which a silent worker is stale (> heartbeatInterval, >= 10; default 300, or
   * 3 × heartbeatInterval when longer).
   */
  readonly staleWorkersTimeout: number;
  /** Seconds `stop()` waits for running tasks (default 30). */
  readonly shutdownTimeout: number;
  /** Log level (default `INFO`). */
  readonly logLevel: LogLevel;
  /** Deliveries after which a message is poison and dead-lettered (default 5). */
  readonly maxDeliveries: number;
}

/**
 * Worker settings as accepted from users: durations in seconds or unit strings. Each falls
 * back to its `CHICORY_WORKER_*` variable, then to its default.
 */
export interface WorkerOptions {
  /** Tasks run at once (`CHICORY_WORKER_CONCURRENCY`; default min(32, cpus + 4)). */
  concurrency?: number | undefined;
  /** One queue or several, in order of preference (`CHICORY_WORKER_QUEUE`; default `"default"`). */
  queue?: string | readonly string[] | undefined;
  /** Move failed and poison messages to the DLQ (`CHICORY_WORKER_USE_DEAD_LETTER_QUEUE`; default false). */
  useDeadLetterQueue?: boolean | undefined;
  /** Time between heartbeats (`CHICORY_WORKER_HEARTBEAT_INTERVAL`; default 10 s). */
  heartbeatInterval?: Duration | undefined;
  /** How long a heartbeat lives, over the interval (`CHICORY_WORKER_HEARTBEAT_TTL`; default 3 intervals, at least 30 s). */
  heartbeatTtl?: Duration | undefined;
  /**
   * Time between stale-worker cleanups, ±15 % (`CHICORY_WORKER_CLEANUP_INTERVAL`; default 900 s,
   * at least 30 s). The first round runs about a minute after the start (or after this
   * interval, when shorter).
   */
  cleanupInterval?: Duration | undefined;
  /**
   * Silence after which a worker is stale and cleaned up, over the heartbeat interval and at
   * least 10 s (`CHICORY_WORKER_STALE_WORKERS_TIMEOUT`; default 300 s, or 3 intervals when longer).
   */
  staleWorkersTimeout?: Duration | undefined;
  /** How long `stop()` waits for running tasks (`CHICORY_WORKER_SHUTDOWN_TIMEOUT`; default 30 s). */
  shutdownTimeout?: Duration | undefined;
  /** Log level (`CHICORY_WORKER_LOG_LEVEL`; default `INFO`) of the worker's default logger (a `logger` given keeps its own). */
  logLevel?: LogLevelName | undefined;
  /** Deliveries after which a message is poison and dead-lettered (`CHICORY_WORKER_MAX_DELIVERIES`; default 5). */
  maxDeliveries?: number | undefined;
}

/** The resolved application configuration. */
export interface ChicoryConfig {
  /** Where schemas are checked, unless a task says (`CHICORY_VALIDATION_MODE`, default `inputs`). */
  readonly validationMode: ValidationMode;
  /** The tasks' default delivery mode (`CHICORY_DELIVERY_MODE`, default `at_least_once`). */
  readonly deliveryMode: DeliveryMode;
  /** Seconds between fallback polls of `AsyncResult.get()` (default 0.5). */
  readonly resultPollInterval: number;
  /** Default `get()` timeout in seconds, or null to wait without limit (default null). */
  readonly resultDefaultTimeout: number | null;
  /** Broker URL from `CHICORY_BROKER_URL`, if any. */
  readonly brokerUrl: string | undefined;
  /** Backend URL from `CHICORY_BACKEND_URL`, if any. */
  readonly backendUrl: string | undefined;
  /** HMAC key from `CHICORY_SIGNING_KEY`, or null. */
  readonly signingKey: string | null;
  /** Maximum encoded message size in bytes (default 1 MiB). */
  readonly maxMessageBytes: number;
  /** Largest result a worker stores, in bytes of JSON (default 4 MiB). */
  readonly maxResultBytes: number;
  /** Worker defaults. */
  readonly worker: WorkerConfig;
  /** The environment the configuration was read from (adapters read their own variables). */
  readonly env: EnvMap;
}

/**
 * Configuration as accepted from users (every field optional). Each falls back to its
 * `CHICORY_*` variable, then to its default.
 */
export interface ChicoryConfigInput {
  /** Where schemas are checked (`CHICORY_VALIDATION_MODE`; default `inputs`). */
  validationMode?: ValidationMode | undefined;
  /** The tasks' default delivery mode (`CHICORY_DELIVERY_MODE`; default `at_least_once`). */
  deliveryMode?: DeliveryMode | undefined;
  /** Interval of `get()`'s fallback poll (`CHICORY_RESULT_POLL_INTERVAL`; default 0.5 s). */
  resultPollInterval?: Duration | undefined;
  /** Default `get()` timeout, null for none (`CHICORY_RESULT_DEFAULT_TIMEOUT`; default none). */
  resultDefaultTimeout?: Duration | null | undefined;
  /** Broker URL (`CHICORY_BROKER_URL`; default the embedded SQLite file). */
  brokerUrl?: string | undefined;
  /** Result backend URL (`CHICORY_BACKEND_URL`). */
  backendUrl?: string | undefined;
  /** HMAC key that signs and verifies messages, null for none (`CHICORY_SIGNING_KEY`). */
  signingKey?: string | null | undefined;
  /** Largest encoded message in bytes, 1 KiB to 512 MiB (`CHICORY_MAX_MESSAGE_BYTES`; default 1 MiB). */
  maxMessageBytes?: number | undefined;
  /**
   * Largest task result a worker stores, in bytes of JSON, 1 KiB to 256 MiB
   * (`CHICORY_MAX_RESULT_BYTES`; default 4 MiB). A larger result fails its task with a
   * `ValidationError` (not retried) instead of being stored: return a reference to large data.
   */
  maxResultBytes?: number | undefined;
  /** Worker defaults. */
  worker?: WorkerOptions | undefined;
  /** Environment to read instead of `process.env` + `.env` (tests). */
  env?: EnvMap | undefined;
}

/**
 * A signing key given in code, read as `CHICORY_SIGNING_KEY` is (surrounding whitespace dropped:
 * a key read from a file keeps no trailing newline that a worker reading the variable would
 * lack). Null turns signing off; an empty or blank key is refused (a missing secret must not
 * turn signing off unnoticed).
 */
function givenKey(key: string | null): string | null {
  if (key === null) return null;
  if (typeof key !== "string" || key.trim() === "") {
    throw new ConfigurationError("signingKey: an empty key; pass null (or leave it out) to turn signing off");
  }
  return key.trim();
}

/** The keys of {@link WorkerOptions}. */
export const WORKER_OPTION_KEYS = keysOf<WorkerOptions>({
  concurrency: true,
  queue: true,
  useDeadLetterQueue: true,
  heartbeatInterval: true,
  heartbeatTtl: true,
  cleanupInterval: true,
  staleWorkersTimeout: true,
  shutdownTimeout: true,
  logLevel: true,
  maxDeliveries: true,
});

/** Notes for worker option keys that are easy to get wrong. */
export const WORKER_OPTION_NOTES: Readonly<Record<string, string>> = {
  queues:
    ' (did you mean "queue"? it takes one name or a list; a resolved config, worker.config or app.config.worker, is taken as it is, but not a copy of one)',
};

const CONFIG_INPUT_KEYS = keysOf<ChicoryConfigInput>({
  validationMode: true,
  deliveryMode: true,
  resultPollInterval: true,
  resultDefaultTimeout: true,
  brokerUrl: true,
  backendUrl: true,
  signingKey: true,
  maxMessageBytes: true,
  maxResultBytes: true,
  worker: true,
  env: true,
});

/** Resolves configuration from options, environment and defaults. */
export function resolveConfig(input: ChicoryConfigInput = {}): ChicoryConfig {
  checkOptionKeys(input, "config", CONFIG_INPUT_KEYS);
  if (input.worker !== undefined)
    checkOptionKeys(input.worker, "config.worker", WORKER_OPTION_KEYS, WORKER_OPTION_NOTES);
  const env = input.env ?? loadEnv();
  const maxMessageBytes =
    input.maxMessageBytes === undefined
      ? envInt(env, "CHICORY_MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES, 1024, 512 * 1024 * 1024)
      : checkInt(input.maxMessageBytes, "maxMessageBytes", 1024, 512 * 1024 * 1024);
  const maxResultBytes =
    input.maxResultBytes === undefined
      ? envInt(env, "CHICORY_MAX_RESULT_BYTES", DEFAULT_MAX_RESULT_BYTES, 1024, MAX_RESULT_BYTES_LIMIT)
      : checkInt(input.maxResultBytes, "maxResultBytes", 1024, MAX_RESULT_BYTES_LIMIT);
  const timeoutRaw = input.resultDefaultTimeout;
  let resultDefaultTimeout: number | null;
  if (timeoutRaw === null) resultDefaultTimeout = null;
  else if (timeoutRaw !== undefined) resultDefaultTimeout = toMs(timeoutRaw, "resultDefaultTimeout") / 1000;
  else {
    const fromEnv = envString(env, "CHICORY_RESULT_DEFAULT_TIMEOUT");
    resultDefaultTimeout = fromEnv === undefined ? null : toMs(fromEnv, "CHICORY_RESULT_DEFAULT_TIMEOUT") / 1000;
  }
  return withRedactedView({
    validationMode:
      input.validationMode === undefined
        ? envChoice(env, "CHICORY_VALIDATION_MODE", VALIDATION_MODES, "inputs")
        : checkChoice(input.validationMode, "validationMode", VALIDATION_MODES),
    deliveryMode:
      input.deliveryMode === undefined
        ? envChoice(env, "CHICORY_DELIVERY_MODE", DELIVERY_MODES, "at_least_once")
        : checkChoice(input.deliveryMode, "deliveryMode", DELIVERY_MODES),
    resultPollInterval:
      (input.resultPollInterval === undefined
        ? envDurationMs(env, "CHICORY_RESULT_POLL_INTERVAL", 500)
        : toMs(input.resultPollInterval, "resultPollInterval")) / 1000,
    resultDefaultTimeout,
    brokerUrl:
      input.brokerUrl === undefined ? envString(env, "CHICORY_BROKER_URL") : givenSpec(input.brokerUrl, "brokerUrl"),
    backendUrl:
      input.backendUrl === undefined
        ? envString(env, "CHICORY_BACKEND_URL")
        : givenSpec(input.backendUrl, "backendUrl"),
    signingKey:
      input.signingKey === undefined ? (envString(env, "CHICORY_SIGNING_KEY") ?? null) : givenKey(input.signingKey),
    maxMessageBytes,
    maxResultBytes,
    worker: resolveWorkerConfig(input.worker ?? {}, env),
    env,
  });
}

/**
 * Gives `config` a view for `JSON.stringify` and `util.inspect` (so for `console.log(app)` too)
 * without its secrets: URL passwords masked, the signing key as `***`, and the environment as a
 * count (it holds the process's whole environment, other services' secrets included). The
 * fields themselves are unchanged; the two methods are not enumerable.
 */
function withRedactedView(config: ChicoryConfig): ChicoryConfig {
  const view = () => ({
    ...config,
    brokerUrl: config.brokerUrl === undefined ? undefined : maskUrl(config.brokerUrl),
    backendUrl: config.backendUrl === undefined ? undefined : maskUrl(config.backendUrl),
    signingKey: config.signingKey === null ? null : "***",
    env: `[${Object.keys(config.env).length} variables]`,
  });
  Object.defineProperty(config, "toJSON", { value: view });
  Object.defineProperty(config, Symbol.for("nodejs.util.inspect.custom"), {
    value: (_depth: number, options: object, inspect: (value: unknown, options: object) => string) =>
      inspect(view(), options),
  });
  return config;
}

/** Default concurrency: min(32, cpus + 4). */
export function defaultConcurrency(): number {
  return Math.min(32, cpus().length + 4);
}

/**
 * Resolves worker settings: `options` over `base` (an already resolved config, e.g. the
 * app's) over `CHICORY_WORKER_*` variables over defaults.
 */
export function resolveWorkerConfig(options: WorkerOptions, env: EnvMap, base?: WorkerConfig): WorkerConfig {
  const sec = (value: Duration | undefined, name: string, envName: string, fallback: number, baseValue?: number) =>
    (value === undefined
      ? baseValue !== undefined
        ? baseValue * 1000
        : envDurationMs(env, envName, fallback * 1000)
      : toMs(value, name)) / 1000;

  const concurrency =
    options.concurrency === undefined
      ? (base?.concurrency ?? envInt(env, "CHICORY_WORKER_CONCURRENCY", defaultConcurrency(), 1, 10_000))
      : checkInt(options.concurrency, "concurrency", 1, 10_000);
  let queues: readonly string[];
  let queueSource = "queue";
  if (options.queue !== undefined) queues = givenQueues(options.queue);
  else if (base) queues = base.queues;
  else {
    queueSource = "CHICORY_WORKER_QUEUE";
    queues = (envString(env, "CHICORY_WORKER_QUEUE", "default") ?? "default")
      .split(",")
      .map((q) => q.trim())
      .filter(Boolean);
  }
  if (queues.length === 0) throw new ConfigurationError(`${queueSource}: at least one queue is required`);
  for (const q of queues) {
    try {
      assertValidName(q, "queue");
    } catch (error) {
      // a name given in code stays a ValidationError, as everywhere names are checked; one
      // read from the environment is a configuration error naming the variable
      if (queueSource === "queue") throw error;
      throw new ConfigurationError(`${queueSource}: ${toError(error).message}`, { cause: error });
    }
  }

  const heartbeatInterval = sec(
    options.heartbeatInterval,
    "heartbeatInterval",
    "CHICORY_WORKER_HEARTBEAT_INTERVAL",
    10,
    base?.heartbeatInterval,
  );
  // A TTL nobody set follows the interval (3 intervals, at least 30 s), so raising the
  // interval alone never makes the config invalid; a TTL someone set is checked as given.
  const ttlGiven =
    options.heartbeatTtl !== undefined ||
    (base !== undefined ? givenTtl.has(base) : envString(env, "CHICORY_WORKER_HEARTBEAT_TTL") !== undefined);
  const heartbeatTtl = ttlGiven
    ? sec(options.heartbeatTtl, "heartbeatTtl", "CHICORY_WORKER_HEARTBEAT_TTL", 30, base?.heartbeatTtl)
    : Math.max(30, 3 * heartbeatInterval);
  const cleanupInterval = sec(
    options.cleanupInterval,
    "cleanupInterval",
    "CHICORY_WORKER_CLEANUP_INTERVAL",
    900,
    base?.cleanupInterval,
  );
  // A live worker is silent for up to one heartbeat interval: a stale timeout nobody set
  // follows a long interval (3 intervals, at least 300 s); one someone set is checked below.
  const staleGiven =
    options.staleWorkersTimeout !== undefined ||
    (base !== undefined ? givenStale.has(base) : envString(env, "CHICORY_WORKER_STALE_WORKERS_TIMEOUT") !== undefined);
  const staleWorkersTimeout = staleGiven
    ? sec(
        options.staleWorkersTimeout,
        "staleWorkersTimeout",
        "CHICORY_WORKER_STALE_WORKERS_TIMEOUT",
        300,
        base?.staleWorkersTimeout,
      )
    : Math.max(300, 3 * heartbeatInterval);
  const shutdownTimeout = sec(
    options.shutdownTimeout,
    "shutdownTimeout",
    "CHICORY_WORKER_SHUTDOWN_TIMEOUT",
    30,
    base?.shutdownTimeout,
  );
  if (heartbeatInterval <= 0)
    throw new ConfigurationError("heartbeatInterval (CHICORY_WORKER_HEARTBEAT_INTERVAL): must be > 0");
  if (heartbeatTtl <= heartbeatInterval) {
    throw new ConfigurationError(
      `heartbeatTtl must exceed heartbeatInterval: got ttl ${heartbeatTtl} s, interval ${heartbeatInterval} s; set a longer TTL (heartbeatTtl, --heartbeat-ttl, CHICORY_WORKER_HEARTBEAT_TTL) or a shorter interval (heartbeatInterval, --heartbeat-interval, CHICORY_WORKER_HEARTBEAT_INTERVAL)`,
    );
  }
  if (cleanupInterval < 30)
    throw new ConfigurationError(
      `cleanupInterval (CHICORY_WORKER_CLEANUP_INTERVAL): must be >= 30 s, got ${cleanupInterval}`,
    );
  if (staleWorkersTimeout < 10) {
    throw new ConfigurationError(
      `staleWorkersTimeout (CHICORY_WORKER_STALE_WORKERS_TIMEOUT): must be >= 10 s, got ${staleWorkersTimeout}`,
    );
  }
  if (staleWorkersTimeout <= heartbeatInterval) {
    throw new ConfigurationError(
      `staleWorkersTimeout must exceed heartbeatInterval (a live worker is silent for up to one interval, and its cleanup would remove live workers): got ${staleWorkersTimeout} s and ${heartbeatInterval} s; set a longer timeout (staleWorkersTimeout, CHICORY_WORKER_STALE_WORKERS_TIMEOUT) or a shorter interval (heartbeatInterval, --heartbeat-interval, CHICORY_WORKER_HEARTBEAT_INTERVAL)`,
    );
  }
  const logLevel =
    options.logLevel === undefined
      ? (base?.logLevel ??
        checkLogLevel(envString(env, "CHICORY_WORKER_LOG_LEVEL", "INFO"), "CHICORY_WORKER_LOG_LEVEL"))
      : checkLogLevel(options.logLevel, "logLevel");
  const config: WorkerConfig = {
    concurrency,
    queues,
    useDeadLetterQueue:
      options.useDeadLetterQueue === undefined
        ? (base?.useDeadLetterQueue ?? envBool(env, "CHICORY_WORKER_USE_DEAD_LETTER_QUEUE", false))
        : checkFlag(options.useDeadLetterQueue, "useDeadLetterQueue"),
    heartbeatInterval,
    heartbeatTtl,
    cleanupInterval,
    staleWorkersTimeout,
    shutdownTimeout,
    logLevel,
    maxDeliveries:
      options.maxDeliveries === undefined
        ? (base?.maxDeliveries ?? envInt(env, "CHICORY_WORKER_MAX_DELIVERIES", 5, 1, 1000))
        : checkInt(options.maxDeliveries, "maxDeliveries", 1, 1000),
  };
  if (ttlGiven) givenTtl.add(config);
  if (staleGiven) givenStale.add(config);
  resolvedWorkerConfigs.add(config);
  return config;
}

/**
 * A broker or backend spec given in code (a kind or a URL), trimmed as variables are; anything
 * but a non-empty string is refused naming `name` (a JavaScript caller's null or number).
 */
export function givenSpec(value: unknown, name: string): string {
  if (typeof value !== "string" || value.trim() === "") {
    throw new ConfigurationError(
      `${name}: expected a kind ("redis") or a URL ("redis://host:6379/0"), got ${typeof value === "string" ? '""' : describeValue(value)}`,
    );
  }
  return value.trim();
}

/** The worker's `queue` option: a name or an array of names (anything else refused, naming it). */
function givenQueues(value: unknown): readonly string[] {
  if (typeof value === "string") return [value];
  if (!Array.isArray(value)) {
    throw new ConfigurationError(`queue: expected a queue name or an array of names, got ${describeValue(value)}`);
  }
  return [...(value as unknown[])].map((q) => {
    if (typeof q !== "string")
      throw new ConfigurationError(`queue: expected queue names, got ${describeValue(q)} in the array`);
    return q;
  });
}

/** Every config {@link resolveWorkerConfig} made. */
const resolvedWorkerConfigs = new WeakSet<object>();

/**
 * True when `value` is a config {@link resolveWorkerConfig} made (`worker.config`,
 * `app.config.worker`): a `Worker` takes it as it is. A copy is not one (its derived heartbeat
 * TTL and stale timeout would count as set): it is refused as options, with a note.
 */
export function isResolvedWorkerConfig(value: unknown): value is WorkerConfig {
  return typeof value === "object" && value !== null && resolvedWorkerConfigs.has(value);
}

/** Resolved worker configs whose heartbeat TTL was set (not derived from the interval). */
const givenTtl = new WeakSet<WorkerConfig>();
/** Worker configs whose stale timeout was set (not derived from the heartbeat interval). */
const givenStale = new WeakSet<WorkerConfig>();

/**
 * Options of the RabbitMQ broker and their resolution from `CHICORY_BROKER_RABBITMQ_*`
 * environment variables (constructor options win over the environment). Pure.
 * @module
 */
import type { Duration } from "../../core/duration.js";
import {
  checkChoice,
  checkInt,
  durationMs,
  type EnvMap,
  envBool,
  envChoice,
  envDurationMs,
  envInt,
  envString,
} from "../../core/env.js";
import type { Logger } from "../../core/logger.js";
import { silentLogger } from "../../core/logger.js";
import { envTls } from "../../core/tls.js";
import { maskUrl, unencodedUserinfo } from "../../core/url.js";
import { ConfigurationError } from "../../errors.js";
import { checkDelayLevels, DEFAULT_DELAY_LEVELS_MS } from "./rabbitmq-delays.js";

/** RabbitMQ queue types Chicory declares. */
export type RabbitMqQueueType = "classic" | "quorum";

/** Options of {@link RabbitMqBroker}. Durations are seconds (or unit strings like `"500ms"`). */
export interface RabbitMqBrokerOptions {
  /** `amqp://` or `amqps://` URL; else built from host, port, username, password, vhost. */
  url?: string | undefined;
  /** Host when no URL is given (default `127.0.0.1`). */
  host?: string | undefined;
  /** Port when no URL is given (default 5672). */
  port?: number | undefined;
  /** User when no URL is given (default `guest`). */
  username?: string | undefined;
  /** Password when no URL is given (default `guest`). */
  password?: string | undefined;
  /** Virtual host when no URL is given (default `/`). */
  vhost?: string | undefined;
  /** Prefix of every queue Chicory declares (default `chicory`). */
  prefix?: string | undefined;
  /**
   * Unacknowledged deliveries per consumer channel (default: the consuming worker's
   * concurrency, or 16 for a consumer that does not say).
   */
  prefetchCount?: number | undefined;
  /** `x-max-length` of work queues with `x-overflow: reject-publish` (publishes fail, nothing is dropped); null: unbounded. */
  queueMaxLength?: number | null | undefined;
  /** `x-message-ttl` of work queues in seconds: older messages move to the DLQ; null: none. */
  messageTtl?: Duration | null | undefined;
  /** Durable queues and persistent messages (default true). */
  durable?: boolean | undefined;
  /** `classic` (default) or `quorum` (recommended: exact delivery counts, replicated). */
  queueType?: RabbitMqQueueType | undefined;
  /** Quorum queues only: `x-delivery-limit`, deliveries after which RabbitMQ dead-letters a message; null: none. */
  deliveryLimit?: number | null | undefined;
  /** Classic queues only: `x-max-priority` (1-255); null (default): no priorities. */
  maxPriority?: number | null | undefined;
  /** First reconnect delay in seconds (default 1), doubled per failed attempt. */
  reconnectDelay?: Duration | undefined;
  /** Longest reconnect delay in seconds (default 5). */
  maxReconnectDelay?: Duration | undefined;
  /** Seconds a publish waits for the broker's confirm before failing (default 10). */
  publishTimeout?: Duration | undefined;
  /** Delay levels in seconds (default 1 s ... 1 d); a delay is rounded up to the next level. */
  delayLevels?: readonly Duration[] | undefined;
  /** Accepted for the common broker options and ignored: RabbitMQ requeues a closed channel's messages at once. */
  claimMinIdleMs?: number | undefined;
  /** Queue used by admin calls without a queue (default `default`). */
  defaultQueue?: string | undefined;
  /** Name shown for the connections in RabbitMQ (default `chicory`; `:publish`/`:consume` is appended). */
  connectionName?: string | undefined;
  /**
   * TLS options for `amqps://` passed to `tls.connect` (e.g. `{ ca }`), merged over the
   * `TLS_CA` / `TLS_REJECT_UNAUTHORIZED` variables. The server certificate and host name are
   * verified unless `rejectUnauthorized: false` is given explicitly.
   */
  tls?: Record<string, unknown> | undefined;
  /** Logger for reconnects and dropped settles (default: silent). */
  logger?: Logger | undefined;
  /** Environment to read `CHICORY_BROKER_RABBITMQ_*` from (default `process.env`). */
  env?: EnvMap | undefined;
}

/** Fully resolved settings. */
export interface RabbitMqSettings {
  /** `amqp://` or `amqps://` URL (the option, `CHICORY_BROKER_RABBITMQ_URL`, or built from host, port, user, password, vhost). */
  readonly url: string;
  /** Prefix of every queue Chicory declares (`CHICORY_BROKER_RABBITMQ_PREFIX`, default `chicory`). */
  readonly prefix: string;
  /** Explicit prefetch, or undefined to follow the consumer's capacity. */
  readonly prefetchCount: number | undefined;
  /** `x-max-length` of work queues (`CHICORY_BROKER_RABBITMQ_QUEUE_MAX_LENGTH`); null (default): unbounded. */
  readonly queueMaxLength: number | null;
  /** `x-message-ttl` of work queues in milliseconds (`CHICORY_BROKER_RABBITMQ_MESSAGE_TTL`); null (default): none. */
  readonly messageTtlMs: number | null;
  /** Durable queues and persistent messages (`CHICORY_BROKER_RABBITMQ_DURABLE`, default true). */
  readonly durable: boolean;
  /** Type of the queues Chicory declares (`CHICORY_BROKER_RABBITMQ_QUEUE_TYPE`, default `classic`). */
  readonly queueType: RabbitMqQueueType;
  /** Quorum queues only: `x-delivery-limit` (`CHICORY_BROKER_RABBITMQ_DELIVERY_LIMIT`); null (default): none. */
  readonly deliveryLimit: number | null;
  /** Classic queues only: `x-max-priority`, 1-255 (`CHICORY_BROKER_RABBITMQ_MAX_PRIORITY`); null (default): no priorities. */
  readonly maxPriority: number | null;
  /** First reconnect delay in milliseconds, doubled per failed attempt (`CHICORY_BROKER_RABBITMQ_RECONNECT_DELAY`, default 1000, at least 10). */
  readonly reconnectDelayMs: number;
  /** Longest reconnect delay in milliseconds (`CHICORY_BROKER_RABBITMQ_MAX_RECONNECT_DELAY`, default 5000, at least the first delay). */
  readonly maxReconnectDelayMs: number;
  /** Milliseconds a publish waits for the broker's confirm before failing (`CHICORY_BROKER_RABBITMQ_PUBLISH_TIMEOUT`, default 10000). */
  readonly publishTimeoutMs: number;
  /** Delay levels in milliseconds, ascending (default {@link DEFAULT_DELAY_LEVELS_MS}); a delay is rounded up to the next level. */
  readonly delayLevelsMs: readonly number[];
  /** Queue used by admin calls without a queue (default `default`). */
  readonly defaultQueue: string;
  /** Name shown for the connections in RabbitMQ, with `:publish`/`:consume` appended (default `chicory`). */
  readonly connectionName: string;
  /** TLS options for `amqps://` (undefined: Node's defaults, certificate verified). */
  readonly tls: Record<string, unknown> | undefined;
  /** Logger for reconnects and dropped settles (default: silent). */
  readonly logger: Logger;
}

const V = "CHICORY_BROKER_RABBITMQ_";
const PREFIX = /^[A-Za-z0-9._:-]{1,64}$/;

function buildUrl(options: RabbitMqBrokerOptions, env: EnvMap): string {
  const host = options.host ?? envString(env, `${V}HOST`, "127.0.0.1");
  const port = checkInt(options.port ?? envInt(env, `${V}PORT`, 5672, 1, 65535), "port", 1, 65535);
  const user = options.username ?? envString(env, `${V}USERNAME`, "guest");
  const password = options.password ?? envString(env, `${V}PASSWORD`, "guest");
  const vhost = options.vhost ?? envString(env, `${V}VHOST`, "/");
  return `amqp://${encodeURIComponent(user)}:${encodeURIComponent(password)}@${host}:${port}/${encodeURIComponent(vhost)}`;
}

function nullableInt(
  value: number | null | undefined,
  optionName: string,
  envName: string,
  env: EnvMap,
  min: number,
  max: number,
) {
  if (value === null) return null;
  if (value !== undefined) return checkInt(value, optionName, min, max);
  const fromEnv = envInt(env, envName, 0, 0, max);
  return fromEnv === 0 ? null : checkInt(fromEnv, envName, min, max);
}

/**
 * Resolves options over the environment over defaults.
 * @throws ConfigurationError naming the option or variable
 */
export function resolveRabbitMqSettings(options: RabbitMqBrokerOptions = {}): RabbitMqSettings {
  const env = options.env ?? process.env;
  const url = options.url ?? envString(env, `${V}URL`) ?? buildUrl(options, env);
  if (!/^amqps?:\/\//i.test(url)) {
    throw new ConfigurationError(`${V}URL: expected an amqp:// or amqps:// URL`);
  }
  const unencoded = unencodedUserinfo(url);
  if (unencoded !== undefined) throw new ConfigurationError(`invalid RabbitMQ URL ${unencoded}`);
  const fromEnv = envTls(env, `${V}`.slice(0, -1));
  const tls = options.tls || fromEnv ? { ...fromEnv, ...options.tls } : undefined;
  if (tls && !/^amqps:\/\//i.test(url)) {
    throw new ConfigurationError(
      `${V}TLS_* (or the tls option) is set but the URL ${maskUrl(url)} is not TLS: use amqps:// (or unset them)`,
    );
  }
  // a setting's name in an error: the option's when the value came from code, else the variable's
  const named = (option: string, variable: string) =>
    (options as Record<string, unknown>)[option] !== undefined ? option : `${V}${variable}`;
  const prefix = options.prefix ?? envString(env, `${V}PREFIX`, "chicory");
  if (!PREFIX.test(prefix)) {
    throw new ConfigurationError(
      `${named("prefix", "PREFIX")}: "${prefix.slice(0, 80)}" is invalid: use 1-64 of [A-Za-z0-9._:-]`,
    );
  }
  const queueType = options.queueType
    ? checkChoice(options.queueType, "queueType", ["classic", "quorum"] as const)
    : envChoice(env, `${V}QUEUE_TYPE`, ["classic", "quorum"] as const, "classic");
  const durable = options.durable ?? envBool(env, `${V}DURABLE`, true);
  const maxPriority = nullableInt(options.maxPriority, "maxPriority", `${V}MAX_PRIORITY`, env, 1, 255);
  if (queueType === "quorum" && maxPriority !== null) {
    throw new ConfigurationError(
      `${named("maxPriority", "MAX_PRIORITY")}: quorum queues do not support priorities (RabbitMQ 3.x); use classic queues or no maxPriority`,
    );
  }
  if (queueType === "quorum" && !durable) {
    throw new ConfigurationError(
      `${named("durable", "DURABLE")}: quorum queues are always durable; set durable to true`,
    );
  }
  const deliveryLimit = nullableInt(options.deliveryLimit, "deliveryLimit", `${V}DELIVERY_LIMIT`, env, 1, 1_000_000);
  if (deliveryLimit !== null && queueType !== "quorum") {
    throw new ConfigurationError(
      `${named("deliveryLimit", "DELIVERY_LIMIT")}: x-delivery-limit needs quorum queues (queueType "quorum")`,
    );
  }
  const ttlMs =
    options.messageTtl === null
      ? 0
      : options.messageTtl !== undefined
        ? durationMs(options.messageTtl, "messageTtl", 0)
        : envDurationMs(env, `${V}MESSAGE_TTL`, 0);
  const reconnectDelayMs =
    options.reconnectDelay !== undefined
      ? durationMs(options.reconnectDelay, "reconnectDelay", 1000)
      : envDurationMs(env, `${V}RECONNECT_DELAY`, 1000);
  const maxReconnectDelayMs =
    options.maxReconnectDelay !== undefined
      ? durationMs(options.maxReconnectDelay, "maxReconnectDelay", 5000)
      : envDurationMs(env, `${V}MAX_RECONNECT_DELAY`, 5000);
  const delayLevelsMs = options.delayLevels
    ? checkDelayLevels(options.delayLevels.map((level) => durationMs(level, "delayLevels", 0)))
    : DEFAULT_DELAY_LEVELS_MS;
  return {
    url,
    prefix,
    prefetchCount:
      options.prefetchCount !== undefined
        ? checkInt(options.prefetchCount, "prefetchCount", 1, 65535)
        : envString(env, `${V}PREFETCH_COUNT`) === undefined
          ? undefined
          : envInt(env, `${V}PREFETCH_COUNT`, 16, 1, 65535),
    queueMaxLength: nullableInt(
      options.queueMaxLength,
      "queueMaxLength",
      `${V}QUEUE_MAX_LENGTH`,
      env,
      1,
      Number.MAX_SAFE_INTEGER,
    ),
    messageTtlMs: ttlMs > 0 ? Math.ceil(ttlMs) : null,
    durable,
    queueType,
    deliveryLimit,
    maxPriority,
    reconnectDelayMs: Math.max(10, reconnectDelayMs),
    maxReconnectDelayMs: Math.max(reconnectDelayMs, maxReconnectDelayMs),
    publishTimeoutMs: Math.max(
      1,
      options.publishTimeout !== undefined
        ? durationMs(options.publishTimeout, "publishTimeout", 10_000)
        : envDurationMs(env, `${V}PUBLISH_TIMEOUT`, 10_000),
    ),
    delayLevelsMs,
    defaultQueue: options.defaultQueue ?? "default",
    connectionName: options.connectionName ?? "chicory",
    tls,
    logger: options.logger ?? silentLogger,
  };
}

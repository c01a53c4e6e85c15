/**
 * The one table from broker/backend kinds and URL schemes to adapters. Adapters import
 * their driver packages lazily in `connect()`, so a user of one broker never needs
 * another broker's client installed.
 * @module
 */
import type { Backend } from "./backends/backend.js";
import { MemoryBackend } from "./backends/memory.js";
import { RedisBackend } from "./backends/redis/index.js";
import { createSqlBackend } from "./backends/sql/index.js";
import type { Broker } from "./brokers/broker.js";
import { MemoryBroker } from "./brokers/memory.js";
import { RabbitMqBroker } from "./brokers/rabbitmq/index.js";
import { RedisBroker } from "./brokers/redis/index.js";
import { SqliteBroker, sqliteBrokerOptionsFromEnv } from "./brokers/sqlite/index.js";
import type { EnvMap } from "./core/env.js";
import { maskUrl, urlScheme } from "./core/url.js";
import { warnOnce } from "./core/warn-once.js";
import { ConfigurationError } from "./errors.js";
import { resolveRedisConnection } from "./redis/redis-options.js";

/** Broker kinds accepted by `new Chicory({ broker })`. */
export type BrokerType = "memory" | "sqlite" | "redis" | "rabbitmq";
/** Backend kinds accepted by `new Chicory({ backend })`. */
export type BackendType = "memory" | "sqlite" | "redis" | "postgres" | "mysql" | "mssql";

/** What a factory receives. */
export interface DriverContext {
  /** Environment to read `CHICORY_BROKER_*` / `CHICORY_BACKEND_*` variables from. */
  readonly env: EnvMap;
}

/** Builds a broker from a URL (or from the environment when `url` is undefined). */
export type BrokerFactory = (url: string | undefined, context: DriverContext) => Broker;
/** Builds a backend from a URL (or from the environment when `url` is undefined). */
export type BackendFactory = (url: string | undefined, context: DriverContext) => Backend;

const BROKERS: Partial<Record<BrokerType, BrokerFactory>> = {
  memory: () => new MemoryBroker(),
  rabbitmq: (url, { env }) => new RabbitMqBroker({ url, env }),
  redis: (url, { env }) => new RedisBroker({ url, env }),
  sqlite: (url, { env }) => new SqliteBroker(sqliteBrokerOptionsFromEnv(url, env)),
};

const BACKENDS: Partial<Record<BackendType, BackendFactory>> = {
  memory: () => new MemoryBackend(),
  redis: (url, { env }) => new RedisBackend({ url, env }),
  postgres: (url, { env }) => createSqlBackend("postgres", url, env),
  mysql: (url, { env }) => createSqlBackend("mysql", url, env),
  sqlite: (url, { env }) => createSqlBackend("sqlite", url, env),
  mssql: (url, { env }) => createSqlBackend("mssql", url, env),
};

const SCHEMES: Record<string, BrokerType | BackendType> = {
  memory: "memory",
  sqlite: "sqlite",
  redis: "redis",
  rediss: "redis",
  "redis+sentinel": "redis",
  "rediss+sentinel": "redis",
  amqp: "rabbitmq",
  amqps: "rabbitmq",
  postgres: "postgres",
  postgresql: "postgres",
  mysql: "mysql",
  mariadb: "mysql",
  mssql: "mssql",
  sqlserver: "mssql",
};

/** The embedded default used when no broker is configured: `CHICORY_BROKER_SQLITE_PATH`, else `./chicory.db`. */
export const DEFAULT_BROKER_SPEC = "sqlite";

/** Kinds whose broker location can also hold results (backend defaults to the same place). */
const SHARES_LOCATION: ReadonlySet<string> = new Set(["memory", "sqlite", "redis"]);

/** Splits a broker/backend spec into its kind and URL (undefined URL = from the environment). */
export function parseSpec(spec: string, role: "broker" | "backend"): { kind: string; url: string | undefined } {
  const scheme = urlScheme(spec);
  if (scheme === undefined) return { kind: spec.toLowerCase(), url: undefined };
  const kind = SCHEMES[scheme];
  if (kind === undefined) {
    throw new ConfigurationError(
      `${role} URL ${maskUrl(spec)}: unknown scheme "${scheme}:" (use ${Object.keys(SCHEMES).join(":, ")}:)`,
    );
  }
  return { kind, url: spec };
}

/** For a spec read as a kind that looks like a URL without its `:` (`redis//host`): how one is written. */
function urlHint(kind: string): string {
  return kind.includes("/") ? ': a URL needs "://" after its scheme (redis://host:6379/0)' : "";
}

/** Creates a broker from a kind (`"redis"`) or a URL (`"redis://..."`). */
export function createBroker(spec: string, context: DriverContext): Broker {
  const { kind, url } = parseSpec(spec, "broker");
  const factory = BROKERS[kind as BrokerType];
  if (!factory) {
    throw new ConfigurationError(
      `broker "${maskUrl(kind)}" is not available (brokers: ${Object.keys(BROKERS).join(", ")})${urlHint(kind)}`,
    );
  }
  return factory(url, context);
}

/** Creates a backend from a kind (`"redis"`) or a URL (`"postgres://..."`). */
export function createBackend(spec: string, context: DriverContext): Backend {
  const { kind, url } = parseSpec(spec, "backend");
  const factory = BACKENDS[kind as BackendType];
  if (!factory) {
    throw new ConfigurationError(
      `backend "${maskUrl(kind)}" is not available (backends: ${Object.keys(BACKENDS).join(", ")})${urlHint(kind)}`,
    );
  }
  return factory(url, context);
}

/**
 * The backend spec implied by a broker spec when none is configured: the same kind and
 * location when that kind can hold results, else undefined (no backend).
 */
export function defaultBackendSpec(brokerSpec: string): string | undefined {
  const { kind } = parseSpec(brokerSpec, "broker");
  return SHARES_LOCATION.has(kind) ? brokerSpec : undefined;
}

/** True when variable `name` is set and not blank (the variable readers take a blank one for unset). */
function isSet(env: EnvMap, name: string): boolean {
  const value = env[name];
  return value !== undefined && value.trim() !== "";
}

/** The Redis settings that say which server and database. */
const REDIS_SERVER = ["URL", "HOST", "PORT", "DB"];
/** The Redis settings that say where a Redis server is, and as whom. */
const REDIS_LOCATION = [...REDIS_SERVER, "USERNAME", "PASSWORD"];
/**
 * The Redis settings of how to trust that server and log in to its sentinels: shared with the
 * location, each unless set.
 */
const REDIS_TRUST = ["TLS_CA", "TLS_REJECT_UNAUTHORIZED", "SENTINEL_USERNAME", "SENTINEL_PASSWORD"];

/**
 * True when a `CHICORY_BACKEND_REDIS_` location variable is set: the backend has its own server.
 * `brokerSpec`: the spec of a Redis broker beside it, whose location then comes from its
 * variables when the spec has no URL.
 * @throws ConfigurationError when the backend's own location, lacking a URL or host, would land
 *   on the Redis defaults instead of the server the broker's variables name, or on that server
 *   without the broker's login or TLS
 */
function hasOwnRedisLocation(env: EnvMap, brokerSpec?: string): boolean {
  const own = REDIS_LOCATION.filter((name) => isSet(env, `CHICORY_BACKEND_REDIS_${name}`));
  if (own.length === 0) return false;
  const fromVariables = brokerSpec !== undefined && parseSpec(brokerSpec, "broker").url === undefined;
  const broker = ["URL", "HOST", "PORT"].filter((name) => isSet(env, `CHICORY_BROKER_REDIS_${name}`));
  if (!fromVariables || own.includes("URL") || own.includes("HOST") || broker.length === 0) return true;
  // e.g. only CHICORY_BACKEND_REDIS_DB beside CHICORY_BROKER_REDIS_PORT=6380: reads as "the same
  // server, another database", but is the backend's own location on the Redis defaults. Refused
  // (a warning is easy to miss, and results would go to whatever answers there) unless those
  // defaults are the broker's server and the broker logs in to it as they do: no user, no
  // password, no TLS. (Both read as the adapters read them; a broker variable that cannot be
  // read is refused here as the broker refuses it.)
  const mine = resolveRedisConnection({}, env, "CHICORY_BACKEND_REDIS").options as RedisServerOptions;
  const theirs = resolveRedisConnection({}, env, "CHICORY_BROKER_REDIS").options as RedisServerOptions;
  const where = `${mine.host}:${mine.port}`;
  const isSameServer = theirs.host !== undefined && sameRedisServer(where, `${theirs.host}:${theirs.port}`);
  if (isSameServer && !theirs.username && !theirs.password && !theirs.tls) return true;
  const set = `CHICORY_BACKEND_REDIS_${own.join(", _")} ${own.length === 1 ? "is" : "are"} set, so the Redis backend has a location of its own`;
  const fix = "set CHICORY_BACKEND_REDIS_URL (or _HOST) too, or unset them";
  const brokers = `CHICORY_BROKER_REDIS_${broker.join(", _")}`;
  throw new ConfigurationError(
    isSameServer
      ? `${set}, and without CHICORY_BACKEND_REDIS_URL or _HOST it would connect to ${where} without the broker's login and TLS settings: ${fix}`
      : `${set}, and without CHICORY_BACKEND_REDIS_URL or _HOST its server would be ${where}, not the broker's (${brokers}): ${fix}`,
  );
}

/** What {@link resolveRedisConnection} gives of a server's address and login (no host: Sentinel, a socket). */
interface RedisServerOptions {
  readonly host?: string;
  readonly port?: number;
  readonly username?: string;
  readonly password?: string;
  readonly tls?: unknown;
}

/** Whether two `host:port` name one server (loopback names taken as one, case aside). */
function sameRedisServer(a: string, b: string): boolean {
  const loopback = (address: string) =>
    address.toLowerCase().replace(/^(?:localhost|\[::1\]|::1|\[0:0:0:0:0:0:0:1\]|0:0:0:0:0:0:0:1):/, "127.0.0.1:");
  return loopback(a) === loopback(b);
}

/**
 * The backend a broker spec implies when none is configured (the same kind and location), or
 * undefined when that kind holds no results. A Redis broker found through its variables
 * (`broker: "redis"` with `CHICORY_BROKER_REDIS_URL`, `_HOST`, …) shares them with its
 * backend: unless a `CHICORY_BACKEND_REDIS_` location variable is set, the backend connects
 * where the broker does, and takes the broker's `KEY_PREFIX` when it has none of its own.
 */
export function createDefaultBackend(brokerSpec: string, context: DriverContext): Backend | undefined {
  const spec = defaultBackendSpec(brokerSpec);
  if (spec === undefined) return undefined;
  const { kind, url } = parseSpec(spec, "backend");
  if (kind !== "redis") return createBackend(spec, context);
  if (url !== undefined) {
    // the broker's URL, whose server the backend's own variables do not move (its _USERNAME and
    // _PASSWORD do serve a URL without credentials): said, not ignored silently
    const own = REDIS_SERVER.filter((name) => isSet(context.env, `CHICORY_BACKEND_REDIS_${name}`));
    if (own.length > 0) {
      warnOnce(
        `backend redis location ignored ${own.join(",")}`,
        `CHICORY_BACKEND_REDIS_${own.join(", _")} ${own.length === 1 ? "is" : "are"} set but not used: with no backend configured, ` +
          "the result backend is the broker's Redis URL; set CHICORY_BACKEND_URL (or pass backend:) to place it elsewhere",
        "CHICORY_BACKEND_LOCATION",
      );
    }
  }
  const env: Record<string, string | undefined> = { ...context.env };
  const from = (name: string) => context.env[`CHICORY_BROKER_REDIS_${name}`];
  // Beside the broker's URL only the backend's own login counts as its own (its other location
  // variables are not used, as said above): without one it logs in as the broker does.
  const hasOwnLocation =
    url !== undefined
      ? ["USERNAME", "PASSWORD"].some((name) => isSet(context.env, `CHICORY_BACKEND_REDIS_${name}`))
      : hasOwnRedisLocation(context.env, brokerSpec);
  if (!hasOwnLocation) {
    for (const name of REDIS_LOCATION) env[`CHICORY_BACKEND_REDIS_${name}`] = from(name);
  } else if (url !== undefined) {
    // the broker's server whatever the backend's own variables say (a URL without a database
    // path takes the broker's _DB, as the broker does)
    for (const name of REDIS_SERVER) env[`CHICORY_BACKEND_REDIS_${name}`] = from(name);
  }
  if (url !== undefined || !hasOwnLocation) {
    // the same server (the broker's URL, whatever the backend's own variables say): trusted (and
    // its sentinels logged in to) the same way, unless the backend says otherwise
    for (const name of REDIS_TRUST) env[`CHICORY_BACKEND_REDIS_${name}`] ??= from(name);
  }
  inheritKeyPrefix(env, from("KEY_PREFIX"));
  return createBackend(spec, { ...context, env });
}

/**
 * The backend of spec `backendSpec` next to a broker of spec `brokerSpec`. A backend asked for
 * by kind alone (`"redis"`, no URL) beside a Redis broker, with no `CHICORY_BACKEND_REDIS_`
 * location variable of its own, is the broker's default backend: where the broker connects
 * (`new Chicory({ broker: "redis", backend: "redis" })` with `CHICORY_BROKER_REDIS_URL` set
 * keeps both on that server), not on the Redis defaults (127.0.0.1:6379). A Redis backend
 * placed anywhere beside a Redis broker takes the broker's `KEY_PREFIX` when it has none of its
 * own: an app's keys keep one prefix (a backend URL naming the broker's own server, say, does
 * not put its records under `chicory:` beside the broker's `tenant:` keys).
 */
export function createBackendBeside(backendSpec: string, brokerSpec: string, context: DriverContext): Backend {
  const backend = parseSpec(backendSpec, "backend");
  if (backend.kind !== "redis" || parseSpec(brokerSpec, "broker").kind !== "redis") {
    return createBackend(backendSpec, context);
  }
  if (backend.url === undefined && !hasOwnRedisLocation(context.env, brokerSpec)) {
    return createDefaultBackend(brokerSpec, context) ?? createBackend(backendSpec, context);
  }
  return createBackendWithPrefix(backendSpec, context, context.env.CHICORY_BROKER_REDIS_KEY_PREFIX);
}

/**
 * The backend of spec `backendSpec` for an app given a broker object: a Redis backend beside a
 * {@link RedisBroker} takes that broker's key prefix unless it has its own, as beside a broker
 * spec (see {@link createBackendBeside}).
 */
export function createBackendBesideObject(backendSpec: string, broker: Broker, context: DriverContext): Backend {
  if (!(broker instanceof RedisBroker) || parseSpec(backendSpec, "backend").kind !== "redis") {
    return createBackend(backendSpec, context);
  }
  return createBackendWithPrefix(backendSpec, context, broker.settings.keyPrefix);
}

/** The Redis backend of `spec`, with the broker's key prefix `prefix` unless it has its own. */
function createBackendWithPrefix(spec: string, context: DriverContext, prefix: string | undefined): Backend {
  const env: Record<string, string | undefined> = { ...context.env };
  inheritKeyPrefix(env, prefix);
  return createBackend(spec, { ...context, env });
}

/**
 * Gives a Redis backend (its variables in `env`) the broker's key prefix `prefix`, unless it has
 * its own: set and not blank (a blank variable is unset, as the readers take it).
 */
function inheritKeyPrefix(env: Record<string, string | undefined>, prefix: string | undefined): void {
  if (!isSet(env, "CHICORY_BACKEND_REDIS_KEY_PREFIX")) env.CHICORY_BACKEND_REDIS_KEY_PREFIX = prefix;
}

/**
 * Connection settings shared by the Redis broker and backend: URL or host/port options,
 * `CHICORY_{BROKER,BACKEND}_REDIS_*` environment variables, and the ioredis options we
 * always set (no per-request retry limit, explicit reconnect strategy).
 * @module
 */
import { isIPv6 } from "node:net";
import { checkInt, type EnvMap, envInt, envString } from "../core/env.js";
import { envTls } from "../core/tls.js";
import { maskUrl, unencodedUserinfo } from "../core/url.js";
import { ConfigurationError } from "../errors.js";
import type { RedisClientLike } from "./redis-client.js";

/** How to reach Redis. A `url` wins over host/port/db/username/password. */
export interface RedisConnectionOptions {
  /**
   * `redis://[user:pass@]host:port/db` or `rediss://` (TLS); or, through sentinels,
   * `redis+sentinel://[user:pass@]host[:port][,host[:port]...]/<primary name>[/db]` or
   * `rediss+sentinel://` (TLS to the sentinels and the servers).
   */
  url?: string | undefined;
  /** Host (default `127.0.0.1`). */
  host?: string | undefined;
  /** Port (default 6379). */
  port?: number | undefined;
  /** Database index (default 0); beside a `redis://` or `rediss://` URL, used only when the URL has no database path (a sentinel URL names its own). */
  db?: number | undefined;
  /** ACL user name. */
  username?: string | undefined;
  /** Password. */
  password?: string | undefined;
  /**
   * TLS options passed to `tls.connect` (e.g. `{ ca }`), merged over the `TLS_CA` /
   * `TLS_REJECT_UNAUTHORIZED` variables; TLS is on for `rediss://` and `rediss+sentinel://`, or
   * when this is set (with a sentinel URL, to the sentinels and the servers alike). The
   * server certificate is always verified unless `rejectUnauthorized: false` is given.
   */
  tls?: Record<string, unknown> | undefined;
  /**
   * ACL user name the sentinels of a `redis+sentinel://` URL ask for (their own `AUTH`, not the
   * primary's). Only with such a URL: set with another, it is a `ConfigurationError`.
   */
  sentinelUsername?: string | undefined;
  /**
   * Password of the sentinels of a `redis+sentinel://` URL (their `requirepass`, not the
   * primary's). Only with such a URL: set with another, it is a `ConfigurationError`.
   */
  sentinelPassword?: string | undefined;
  /**
   * A ready ioredis client. The caller owns it (Chicory never closes it); connections Chicory
   * needs in addition (blocking readers, the result subscriber) are `duplicate()`s of it.
   */
  client?: RedisClientLike | undefined;
}

/** Resolved connection: ioredis options and a display URL with the password masked. */
export interface ResolvedRedisConnection {
  /** Options for `new Redis(...)` (without the always-set ones). */
  readonly options: Record<string, unknown>;
  /** Display form, password masked. */
  readonly displayUrl: string;
  /** The password, to redact it from driver error messages. */
  readonly password: string | undefined;
  /** Prefix of the environment variables (`CHICORY_BROKER_REDIS`), named in error hints. */
  readonly envPrefix: string;
  /** True when TLS is on and the server certificate is not verified (explicit opt-in). */
  readonly tlsUnverified: boolean;
}

/** The keys of {@link RedisConnectionOptions} (a missing or extra one fails to compile). */
export const REDIS_CONNECTION_OPTION_KEYS: Readonly<Record<keyof RedisConnectionOptions, true>> = {
  url: true,
  host: true,
  port: true,
  db: true,
  username: true,
  password: true,
  tls: true,
  sentinelUsername: true,
  sentinelPassword: true,
  client: true,
};

/** Reconnect delay: 100 ms growing to 2 s, so a restarted Redis is picked up within ~2 s. */
export function reconnectDelayMs(times: number): number {
  return Math.min(100 * times, 2000);
}

/**
 * Milliseconds a connection may wait for a reply before it is declared dead (a half-open TCP
 * connection after a silent network partition), dropped and reconnected.
 */
export const SOCKET_TIMEOUT_MS = 10_000;

/** Most reconnects on `READONLY` of one connection per {@link READONLY_WINDOW_MS}. */
export const READONLY_RECONNECTS = 3;
/** See {@link READONLY_RECONNECTS}. */
export const READONLY_WINDOW_MS = 10_000;
/** `READONLY` replies within this time of the one that started a reconnect belong to it. */
const READONLY_EPISODE_MS = 1000;

/** Marks the `reconnectOnError` functions made by {@link readonlyReconnector}. */
const CHICORY_RECONNECTOR = Symbol.for("chicory.readonlyReconnector");

/** An ioredis `reconnectOnError` made by {@link readonlyReconnector}. */
export type ReadonlyReconnector = ((error: Error) => 2 | false) & {
  /** Marks a reconnector made by {@link readonlyReconnector}. */
  readonly [CHICORY_RECONNECTOR]: true;
};

/** True when `value` is a {@link readonlyReconnector} (a connection Chicory opened). */
export function isReadonlyReconnector(value: unknown): value is ReadonlyReconnector {
  return typeof value === "function" && (value as Partial<ReadonlyReconnector>)[CHICORY_RECONNECTOR] === true;
}

/**
 * An ioredis `reconnectOnError` for one connection. After a failover behind one address (a
 * managed service's endpoint, a DNS name, a proxy), a connection opened to the old primary stays
 * up and every write gets `READONLY`: reconnect (reaching the new primary) and send the refused
 * command again (a refused write did nothing). The replies of the writes in flight at that
 * moment belong to the same reconnect; at most {@link READONLY_RECONNECTS} reconnects per
 * {@link READONLY_WINDOW_MS}: an address that still leads to a replica (a URL naming one, an
 * endpoint not switched yet) then fails its writes with `READONLY` at once instead of
 * reconnecting in a loop with the writes held.
 */
export function readonlyReconnector(): ReadonlyReconnector {
  const starts: number[] = [];
  const decide = (error: Error): 2 | false => {
    if (!error.message.startsWith("READONLY")) return false;
    const now = performance.now();
    const last = starts[starts.length - 1];
    if (last !== undefined && now - last < READONLY_EPISODE_MS) return 2;
    while (starts.length > 0 && now - (starts[0] as number) > READONLY_WINDOW_MS) starts.shift();
    if (starts.length >= READONLY_RECONNECTS) return false;
    starts.push(now);
    return 2;
  };
  return Object.assign(decide, { [CHICORY_RECONNECTOR]: true as const });
}

/** ioredis options Chicory always sets (plus a fresh {@link readonlyReconnector} per client). */
export const BASE_REDIS_OPTIONS: Readonly<Record<string, unknown>> = {
  // No `CLIENT SETINFO` at connect: Redis before 7.2 refuses it, and over a slow link ioredis 6
  // sometimes takes that refusal for a fatal error and fails the connect (about 1 in 15 through
  // 20–150 ms of latency). The connection name (`connectionName`) still tells clients apart.
  disableClientInfo: true,
  maxRetriesPerRequest: null,
  retryStrategy: reconnectDelayMs,
  lazyConnect: true,
  socketTimeout: SOCKET_TIMEOUT_MS,
};

/**
 * Merges options over `${envPrefix}_{URL,HOST,PORT,DB,USERNAME,PASSWORD,TLS_CA,
 * TLS_REJECT_UNAUTHORIZED,SENTINEL_USERNAME,SENTINEL_PASSWORD}` (options win; a URL, from options
 * or env, wins over the separate fields). A ready `client` wins over all of them: the result
 * describes that client.
 */
export function resolveRedisConnection(
  options: RedisConnectionOptions,
  env: EnvMap,
  envPrefix: string,
): ResolvedRedisConnection {
  if (options.client !== undefined) return fromClient(options.client, envPrefix);
  if (options.url !== undefined && typeof options.url !== "string") {
    throw new ConfigurationError(
      `url: expected a redis://, rediss:// or redis+sentinel:// URL string, got ${typeof options.url}`,
    );
  }
  const fromEnv = envTls(env, envPrefix);
  const tls = options.tls || fromEnv ? { ...fromEnv, ...options.tls } : undefined;
  const url = options.url ?? envString(env, `${envPrefix}_URL`);
  const base = { envPrefix, tlsUnverified: tls?.rejectUnauthorized === false };
  const sentinelAuth = sentinelCredentials(options, env, envPrefix, url);
  if (url !== undefined) {
    // a redis:// URL without a database path: the db option or variable (else dropped without a word)
    const pathlessDb = () =>
      options.db ??
      (envString(env, `${envPrefix}_DB`) === undefined ? undefined : envInt(env, `${envPrefix}_DB`, 0, 0, 100_000));
    const fromAnyUrl = fromUrl(url, tls, options.tls === undefined, envPrefix, pathlessDb);
    const resolved = sentinelAuth ? { ...fromAnyUrl, options: { ...fromAnyUrl.options, ...sentinelAuth } } : fromAnyUrl;
    // A URL without credentials takes them from the options or variables (a secret kept
    // apart from the URL); credentials in the URL win. A URL with a user and no password takes
    // the password alone (`redis://app@host` with the secret in the variable).
    const { username, password } = resolved.options as { username?: string; password?: string };
    if (password !== undefined) return { ...resolved, ...base };
    const user = username ?? options.username ?? envString(env, `${envPrefix}_USERNAME`);
    const envPassword = options.password ?? envString(env, `${envPrefix}_PASSWORD`);
    return {
      ...resolved,
      options: { ...resolved.options, username: user, password: envPassword },
      password: envPassword,
      ...base,
    };
  }
  const host = checkHost(
    options.host ?? envString(env, `${envPrefix}_HOST`, "127.0.0.1"),
    options.host === undefined ? `${envPrefix}_HOST` : "host",
    envPrefix,
  );
  const port = checkInt(options.port ?? envInt(env, `${envPrefix}_PORT`, 6379, 1, 65535), "port", 1, 65535);
  const db = checkInt(options.db ?? envInt(env, `${envPrefix}_DB`, 0, 0, 100_000), "db", 0, 100_000);
  const username = options.username ?? envString(env, `${envPrefix}_USERNAME`);
  const password = options.password ?? envString(env, `${envPrefix}_PASSWORD`);
  const scheme = tls ? "rediss" : "redis";
  // as a URL would have them: the user name percent-encoded, an IPv6 address in brackets
  const auth = username || password ? `${encodeURIComponent(username ?? "")}${password ? ":***" : ""}@` : "";
  const shownHost = isIPv6(host) ? `[${host}]` : host;
  return {
    options: { host, port, db, username, password, ...(tls ? { tls } : {}) },
    displayUrl: `${scheme}://${auth}${shownHost}:${port}/${db}`,
    password,
    ...base,
  };
}

/**
 * The sentinels' own user name and password (`sentinelUsername`/`sentinelPassword` or
 * `${envPrefix}_SENTINEL_USERNAME`/`_PASSWORD`) as ioredis options, or undefined when neither is
 * set.
 * @throws ConfigurationError when one is set and `url` is not a `redis+sentinel://` URL (it
 *   would be ignored)
 */
function sentinelCredentials(
  options: RedisConnectionOptions,
  env: EnvMap,
  envPrefix: string,
  url: string | undefined,
): { sentinelUsername: string | undefined; sentinelPassword: string | undefined } | undefined {
  const sentinelUsername = options.sentinelUsername ?? envString(env, `${envPrefix}_SENTINEL_USERNAME`);
  const sentinelPassword = options.sentinelPassword ?? envString(env, `${envPrefix}_SENTINEL_PASSWORD`);
  if (sentinelUsername === undefined && sentinelPassword === undefined) return undefined;
  if (url === undefined || !SENTINEL_SCHEME.test(url)) {
    throw new ConfigurationError(
      `sentinelUsername/sentinelPassword (or ${envPrefix}_SENTINEL_USERNAME/_SENTINEL_PASSWORD) are set but the connection is not through sentinels: they are read only with a ${SENTINEL_URL_FORM} URL (the primary's password is the URL's, or ${envPrefix}_PASSWORD)`,
    );
  }
  return { sentinelUsername, sentinelPassword };
}

/** A `host:port` of an ioredis node option (`{ host, port }`, a port number or a URL string). */
function nodeAddress(node: unknown): string {
  if (typeof node === "number") return `127.0.0.1:${node}`;
  if (typeof node === "string") return node.replace(/^[a-z]+:\/\//i, "").replace(/^[^@]*@/, "");
  const n = (node ?? {}) as { host?: unknown; port?: unknown };
  return `${typeof n.host === "string" ? n.host : "127.0.0.1"}:${typeof n.port === "number" ? n.port : 6379}`;
}

/**
 * The connection a ready client (`client` option) talks to, for messages: its own address
 * (the connection settings and variables do not apply to it), password masked.
 * @throws ConfigurationError for a client with ioredis's own `keyPrefix` or with `stringNumbers` (see below)
 */
function fromClient(client: RedisClientLike, envPrefix: string): ResolvedRedisConnection {
  const c = client as {
    isCluster?: boolean;
    startupNodes?: unknown[];
    options?: Record<string, unknown>;
  };
  const o = c.options ?? {};
  const redisOptions = (c.isCluster === true ? (o.redisOptions as Record<string, unknown> | undefined) : o) ?? {};
  // ioredis prefixes the keys it knows of, not those the scripts build or return (a result's
  // task id cut from its key, a consumer's heartbeat key): the prefix goes in Chicory's keyPrefix.
  const clientPrefix = [o.keyPrefix, redisOptions.keyPrefix].find((p) => typeof p === "string" && p !== "");
  if (clientPrefix !== undefined) {
    throw new ConfigurationError(
      `client: the ioredis client has its own keyPrefix ${JSON.stringify(clientPrefix)}, which Chicory's scripts ` +
        `do not see; give the client without it and put the prefix in Chicory's keyPrefix option ` +
        `(or ${envPrefix}_KEY_PREFIX), e.g. keyPrefix: ${JSON.stringify(`${String(clientPrefix).replace(/:$/, "")}:chicory`)}`,
    );
  }
  // Chicory reads the scripts' integer replies as numbers (1 published, -1 queue full, ...)
  if (redisOptions.stringNumbers === true) {
    throw new ConfigurationError(
      "client: the ioredis client has stringNumbers: true, which turns Redis's integer replies into strings that " +
        "Chicory would misread; give Chicory a client without it",
    );
  }
  const password = typeof redisOptions.password === "string" ? redisOptions.password : undefined;
  const username = typeof redisOptions.username === "string" ? redisOptions.username : undefined;
  const auth = username || password ? `${username ?? ""}${password ? ":***" : ""}@` : "";
  const scheme = redisOptions.tls ? "rediss" : "redis";
  let displayUrl: string;
  if (c.isCluster === true) {
    const nodes = (c.startupNodes ?? []).map(nodeAddress).join(",");
    displayUrl = `${scheme}://${auth}${nodes || "?"} (cluster)`;
  } else if (Array.isArray(o.sentinels)) {
    displayUrl = `${scheme}://${auth}${o.sentinels.map(nodeAddress).join(",")}/${String(o.db ?? 0)} (sentinel ${String(o.name ?? "?")})`;
  } else if (typeof o.path === "string") {
    displayUrl = `${scheme}+unix://${auth}${o.path}`;
  } else {
    displayUrl = `${scheme}://${auth}${String(o.host ?? "127.0.0.1")}:${String(o.port ?? 6379)}/${String(o.db ?? 0)}`;
  }
  return { options: {}, displayUrl, password, envPrefix, tlsUnverified: false };
}

/**
 * Refuses the `_TLS_*` variables beside a URL that is not TLS: connecting in clear text where
 * TLS was meant is not done silently (a `tls` option given in code turns TLS on instead).
 * @throws ConfigurationError naming the TLS scheme to use
 */
function refuseTlsVariablesWithoutTls(
  isTls: boolean,
  tls: Record<string, unknown> | undefined,
  tlsFromEnvOnly: boolean,
  url: string,
  envPrefix: string,
  tlsScheme: string,
): void {
  if (isTls || !tls || !tlsFromEnvOnly) return;
  throw new ConfigurationError(
    `${envPrefix}_TLS_* is set but the URL ${maskUrl(url)} is not TLS: use ${tlsScheme} (or unset the TLS variables)`,
  );
}

/**
 * `url` masked, as `rediss://` when TLS was turned on by the `tls` option beside a `redis://`
 * URL (`isShownTls` false), and with the database `given` apart from it appended.
 */
function displayOf(url: string, isShownTls: boolean, given: number | undefined): string {
  const masked = isShownTls ? maskUrl(url) : maskUrl(url).replace(/^redis:/i, "rediss:");
  return given === undefined ? masked : `${masked.replace(/\/$/, "")}/${given}`;
}

function fromUrl(
  url: string,
  tls: Record<string, unknown> | undefined,
  tlsFromEnvOnly: boolean,
  envPrefix: string,
  pathlessDb: () => number | undefined,
): Omit<ResolvedRedisConnection, "envPrefix" | "tlsUnverified"> {
  if (SENTINEL_SCHEME.test(url)) return fromSentinelUrl(url, tls, tlsFromEnvOnly, envPrefix);
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch (error) {
    throw new ConfigurationError(
      `invalid Redis URL ${maskUrl(url)}: expected redis://[user:password@]host[:port][/db], a port from 1 to 65535 (percent-encode @ : / ? # % in a user name or password, e.g. @ as %40)`,
      { cause: error },
    );
  }
  const isTls = parsed.protocol === "rediss:";
  if (!isTls && parsed.protocol !== "redis:") {
    throw new ConfigurationError(`invalid Redis URL ${maskUrl(url)}: use redis:// or rediss://`);
  }
  if (!/^rediss?:\/\//i.test(url)) {
    // `redis:/host:port` or `redis:host` parses, with the host taken for the database path
    throw new ConfigurationError(
      `invalid Redis URL ${maskUrl(url)}: expected ${parsed.protocol}//[user:password@]host[:port][/db] (two slashes after "${parsed.protocol}")`,
    );
  }
  refuseTlsVariablesWithoutTls(isTls, tls, tlsFromEnvOnly, url, envPrefix, "rediss://");
  const unencoded = unencodedUserinfo(url, true); // (nothing of the password may appear in the message)
  if (unencoded !== undefined) throw new ConfigurationError(`invalid Redis URL ${unencoded}`);
  const dbText = parsed.pathname.replace(/^\//, "");
  if (dbText !== "" && !/^\d+$/.test(dbText)) {
    throw new ConfigurationError(
      `database in ${maskUrl(url)}: expected an integer from 0 to 100000 as the path (/2), got "${dbText}"`,
    );
  }
  const given = dbText === "" ? pathlessDb() : undefined; // (a path wins over the option and variable)
  const db =
    given !== undefined
      ? checkInt(given, "db", 0, 100_000)
      : dbText === ""
        ? 0
        : checkInt(Number(dbText), `database in ${maskUrl(url)}`, 0, 100_000, dbText);
  if (parsed.search !== "") {
    throw new ConfigurationError(
      `invalid Redis URL ${maskUrl(url)}: query parameters are not read; give the password as redis://:password@host (or user:password@) or in ${envPrefix}_PASSWORD, the database as the path (/2)`,
    );
  }
  if (parsed.hash !== "") {
    // e.g. a `#` in a password, not percent-encoded: what follows it would be dropped silently
    throw new ConfigurationError(
      `invalid Redis URL ${maskUrl(url)}: a "#" starts a fragment, which is not read; percent-encode a "#" in the user or password as %23`,
    );
  }
  const password = decodeUrlPart(parsed.password, "password", url);
  const username = decodeUrlPart(parsed.username, "user name", url);
  return {
    options: {
      host: parsed.hostname.replace(/^\[|\]$/g, "") || "127.0.0.1",
      port: parsed.port ? Number(parsed.port) : 6379,
      db,
      username,
      password,
      ...(isTls || tls ? { tls: tls ?? {} } : {}),
    },
    displayUrl: displayOf(url, isTls || tls === undefined, given),
    password,
  };
}

/** Port of a sentinel named without one. */
const SENTINEL_PORT = 26379;

/** The schemes of a URL that names sentinels. */
const SENTINEL_SCHEME = /^rediss?\+sentinel:/i;

const SENTINEL_URL_FORM = "redis+sentinel://[user:password@]host[:port][,host[:port]...]/<primary name>[/db]";

/**
 * `redis+sentinel://[user:password@]host[:port][,host[:port]...]/<name>[/db]`: the sentinels to
 * ask (port 26379 by default) for the primary they call `name`; the user name and password are
 * the primary's (the sentinels' own are {@link RedisConnectionOptions.sentinelPassword} and
 * `_SENTINEL_*`). ioredis follows the sentinels' `+switch-master` (`failoverDetector`).
 * `rediss+sentinel://` (or `tls` given) is TLS to the sentinels and to the primary and replicas
 * alike, with the same TLS options.
 */
function fromSentinelUrl(
  url: string,
  tls: Record<string, unknown> | undefined,
  tlsFromEnvOnly: boolean,
  envPrefix: string,
): Omit<ResolvedRedisConnection, "envPrefix" | "tlsUnverified"> {
  const invalid = (why: string) => new ConfigurationError(`invalid Redis Sentinel URL ${maskUrl(url)}: ${why}`);
  if (!/^rediss?\+sentinel:\/\//i.test(url)) throw invalid(`expected ${SENTINEL_URL_FORM}`);
  const isTls = /^rediss\+/i.test(url);
  refuseTlsVariablesWithoutTls(isTls, tls, tlsFromEnvOnly, url, envPrefix, "rediss+sentinel://");
  // A "/" (or "?", "#") left unencoded in the password would move the rest of it into the
  // sentinels or the path, which the messages below quote: refused first, saying only where.
  const unencoded = unencodedUserinfo(url, true);
  if (unencoded !== undefined) throw new ConfigurationError(`invalid Redis Sentinel URL ${unencoded}`);
  const match = /^[^:]+:\/\/(?:([^/?#]*)@)?([^/?#@]+)(\/[^?#]*)?$/i.exec(url);
  if (match === null) {
    throw invalid(
      /[?#]/.test(url)
        ? "query parameters and fragments are not read (percent-encode ? # in a password)"
        : `expected ${SENTINEL_URL_FORM}`,
    );
  }
  const [, userinfo, hostList, path = ""] = match as unknown as [
    string,
    string | undefined,
    string,
    string | undefined,
  ];
  const sentinels = hostList.split(",").map((node) => {
    const address = /^(\[[0-9a-f:.]+\]|[^:[\]]+)(?::(\d{1,5}))?$/i.exec(node.trim());
    const port = address?.[2] === undefined ? SENTINEL_PORT : Number(address[2]);
    if (!address || port < 1 || port > 65535)
      throw invalid(`sentinel "${node}": expected host[:port], a port from 1 to 65535`);
    return { host: (address[1] as string).replace(/^\[|\]$/g, ""), port };
  });
  const [name, dbText, ...rest] = path.replace(/^\//, "").split("/");
  if (!name) throw invalid(`the primary's name is missing: expected ${SENTINEL_URL_FORM}`);
  if (rest.length > 0 || (dbText !== undefined && dbText !== "" && !/^\d+$/.test(dbText))) {
    throw invalid(`expected /<primary name>[/db], the database an integer from 0 to 100000, got "${path}"`);
  }
  const db =
    dbText === undefined || dbText === ""
      ? 0
      : checkInt(Number(dbText), `database in ${maskUrl(url)}`, 0, 100_000, dbText);
  const colon = userinfo?.indexOf(":") ?? -1;
  const username =
    userinfo === undefined
      ? undefined
      : decodeUrlPart(colon < 0 ? userinfo : userinfo.slice(0, colon), "user name", url);
  const password =
    userinfo === undefined || colon < 0 ? undefined : decodeUrlPart(userinfo.slice(colon + 1), "password", url);
  return {
    options: {
      sentinels,
      name: decodeUrlPart(name, "primary name", url),
      db,
      username,
      password,
      failoverDetector: true,
      // A sentinel that accepts the connection and never answers (stopped, wedged, behind a
      // proxy) would hold the lookup of the primary for good, the other sentinels never asked:
      // each asked at most this long, then the next one
      sentinelCommandTimeout: SENTINEL_COMMAND_TIMEOUT_MS,
      // (ioredis: `sentinelTLS` for the sentinels, `tls` with `enableTLSForSentinelMode` for the
      // primary and replicas they name)
      ...(isTls || tls ? { tls: tls ?? {}, sentinelTLS: tls ?? {}, enableTLSForSentinelMode: true } : {}),
    },
    displayUrl: maskUrl(url),
    password,
  };
}

/** Longest wait for one sentinel's answer about the primary (see the sentinel options above). */
const SENTINEL_COMMAND_TIMEOUT_MS = 2000;

/**
 * A percent-decoded user name or password of a URL, or undefined when empty. A `%` not followed
 * by two hex digits is a configuration error: decoding it would drop the secret silently.
 */
function decodeUrlPart(value: string, part: string, url: string): string | undefined {
  if (value === "") return undefined;
  try {
    return decodeURIComponent(value);
  } catch (error) {
    throw new ConfigurationError(
      `invalid Redis URL ${maskUrl(url)}: the ${part} has a % that is not a percent-escape (write % as %25)`,
      { cause: error },
    );
  }
}

const NAME = /^[A-Za-z0-9._:-]{1,64}$/;

/** Checks a key prefix or group name (no braces, spaces or control characters). */
export function checkRedisName(value: string, name: string): string {
  if (!NAME.test(value)) {
    throw new ConfigurationError(
      `${name}: ${JSON.stringify(value.slice(0, 80))} is invalid: use 1-64 of [A-Za-z0-9._:-]`,
    );
  }
  return value;
}

/**
 * A host option or `_HOST` variable: a name or an address. An IPv6 address may be bracketed as
 * in a URL (`[::1]`); a URL, or a host with its port (`127.0.0.1:6380`), is refused naming where
 * it came from (it would fail later as a DNS error on a name nobody wrote).
 */
function checkHost(host: string, source: string, envPrefix: string): string {
  if (typeof host !== "string" || host === "") {
    throw new ConfigurationError(`${source}: expected a host name or address, got ${JSON.stringify(host)}`);
  }
  const unbracketed = /^\[(.*)\]$/.exec(host)?.[1];
  if (unbracketed !== undefined && isIPv6(unbracketed)) return unbracketed;
  if (/[[\]/]/.test(host) || (host.includes(":") && !isIPv6(host))) {
    const what =
      /^unix:/i.test(host) || (host.includes("/") && !host.includes("://"))
        ? "a Unix socket is reached through a client: client: new Redis({ path }) (docs/brokers/redis.md)"
        : host.includes("://")
          ? `a URL goes in ${envPrefix}_URL (or the url option)`
          : /[[\]]/.test(host)
            ? "brackets are for an IPv6 address only, as [::1]"
            : `the port goes in ${envPrefix}_PORT (or the port option)`;
    throw new ConfigurationError(
      `${source}: expected a host name or address, got ${JSON.stringify(maskUrl(host).slice(0, 100))}: ${what}`,
    );
  }
  return host;
}

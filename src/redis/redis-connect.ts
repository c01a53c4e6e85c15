/**
 * Opening ioredis connections for Chicory's adapters, with errors wrapped and passwords
 * redacted.
 * @module
 */

import { DeadlinePassed, nextTurn, sleep, withinDeadline } from "../core/sleep.js";
import { warnTlsUnverified } from "../core/tls.js";
import { redactSecrets } from "../core/url.js";
import { processWarningLogger } from "../core/warn-once.js";
import { ConfigurationError, toError } from "../errors.js";
import { loadRedis, type RedisClientLike, scriptNameOf } from "./redis-client.js";
import { type PlainAddress, plainAddressOf, refusalHint, refusalOnConnect } from "./redis-greeting.js";
import {
  BASE_REDIS_OPTIONS,
  isReadonlyReconnector,
  type ResolvedRedisConnection,
  readonlyReconnector,
} from "./redis-options.js";

/** Builds the error an adapter throws for a failed Redis operation. */
export type ErrorFactory = (message: string, cause: unknown) => Error;

/** A message for a driver error with the password removed. */
export function describeRedisError(error: unknown, password: string | undefined): string {
  const text = toError(error).message;
  // ioredis's parser asks to report a reply it cannot read; here it means "not a Redis server".
  // A command on a connection that dropped, not sent again, is reported as a retry limit; one
  // issued while it reconnects, as an offline queue setting.
  const plain = text
    .replace(/\s*Please report this\.?/, "")
    .replace(
      /Reached the max retries per request limit \(which is \d+\)\.?.*$/s,
      "the connection to Redis was lost (reconnecting; this command was not sent again)",
    )
    .replace(
      /Stream isn't writeable and enableOfflineQueue options? is false\.?/,
      "not connected to Redis (reconnecting; this command was not sent)",
    );
  return redactSecrets(
    withOutOfMemoryHint(withNoReplicasHint(withWrongTypeHint(withScriptRefusalHint(plain), error))),
    password,
  );
}

/**
 * A Redis at its `maxmemory` under `noeviction` refuses every write that may add data (`OOM`):
 * says so, and what ends it (the worker holds the writes so refused and tries them again).
 */
function withOutOfMemoryHint(text: string): string {
  if (!/^OOM\b/.test(text)) return text;
  return `${text} (this write was not applied: the Redis server is at its maxmemory limit; free memory or raise maxmemory, and writes are taken again)`;
}

/**
 * A primary with `min-replicas-to-write` refuses every write (`NOREPLICAS`) while too few
 * replicas are in sync: says so, and that writes resume by themselves (the worker retries its
 * acks and reads; a refused publish was not applied).
 */
function withNoReplicasHint(text: string): string {
  if (!/^NOREPLICAS\b/.test(text)) return text;
  return `${text} (this write was not applied: the primary refuses writes while fewer replicas than its min-replicas-to-write are connected within min-replicas-max-lag, until enough are back)`;
}

/** Commands whose first argument is a subcommand, the key coming next (`XINFO CONSUMERS key …`). */
const SUBCOMMAND_FIRST: ReadonlySet<string> = new Set(["xinfo", "xgroup", "object", "memory"]);

/**
 * Redis's `WRONGTYPE` names no key: names the keys of the refused command (ioredis keeps the
 * command on its reply errors), so that a key of another type under the prefix (an operator's
 * `SET`) can be found. Chicory's own type checks name their key already.
 */
function withWrongTypeHint(text: string, error: unknown): string {
  if (!/^WRONGTYPE\b/.test(text) || /^WRONGTYPE key /.test(text)) return text;
  const command = (error as { command?: { name?: unknown; args?: unknown } } | null)?.command;
  const args = Array.isArray(command?.args) ? command.args.map(String) : [];
  const name = String(command?.name ?? "").toLowerCase();
  let keys: string[];
  if (name === "evalsha" || name === "eval") keys = args.slice(2, 2 + Number(args[1] ?? 0));
  else if (name === "xreadgroup" || name === "xread") {
    const at = args.findIndex((a) => a.toUpperCase() === "STREAMS");
    keys = at < 0 ? [] : args.slice(at + 1, at + 1 + (args.length - at - 1) / 2);
  } else if (SUBCOMMAND_FIRST.has(name)) keys = args.slice(1, 2);
  else keys = args.slice(0, 1);
  return keys.length === 0
    ? `${text} (a key holds a value of another type than Chicory's)`
    : `${text} (${keys.length === 1 ? "key" : "one of the keys"} ${keys.join(", ")}; TYPE <key> tells which)`;
}

/**
 * Redis reports a command an ACL refuses inside a script by the script's SHA only ("The user
 * executing the script can't run this command or subcommand script: <sha>, on
 * @user_script:6."): names the script when it is one of Chicory's, and where to look. Other
 * refusals (`NOPERM`: a key outside the user's patterns) get where to look.
 */
function withScriptRefusalHint(text: string): string {
  const match = /can't run this command or subcommand script: ([0-9a-f]{40})/i.exec(text);
  if (match === null) {
    // a key or channel outside the user's patterns, or a command it may not run
    return /^NOPERM\b/.test(text) && !text.includes("ACL LOG")
      ? `${text} (ACL LOG on the server names what was refused; see docs/brokers/redis.md, "ACL")`
      : text;
  }
  const name = scriptNameOf(match[1] as string);
  const script = name === undefined ? "a script" : `Chicory's script ${name}`;
  return `${text} (${script} runs a command this Redis user may not run: ACL LOG on the server names it; see docs/brokers/redis.md, "ACL")`;
}

/** A connect the server ended by closing the connection (not a refusal, a timeout or a reply). */
const CLOSED_BY_SERVER = /\bECONNRESET\b|\bEPIPE\b|Connection is closed/;

/**
 * Why a failed connect failed, in words a user can act on: Redis's own refusal (`NOAUTH`,
 * `WRONGPASS`) or the TLS verification error, plus which setting to look at.
 */
export function connectFailureHint(error: unknown, envPrefix: string, isTls = false, hasCa = false): string {
  const text = toError(error).message;
  const code = (error as { code?: unknown } | null)?.code;
  if (code === "ETIMEDOUT" || /\bETIMEDOUT\b/.test(text)) {
    return isTls
      ? " (no TLS answer in time: is TLS on at that port? a Redis without TLS needs redis:// and no tls option or TLS variable; else check host, port and firewall)"
      : " (no answer in time: check host, port and firewall)";
  }
  if (/Unknown RESP type/.test(text)) return " (the server does not speak the Redis protocol: is this a Redis port?)";
  if (CLOSED_BY_SERVER.test(text)) {
    return isTls
      ? " (the server closed the connection: is this a Redis port with TLS on?)"
      : " (the server closed the connection: is this a Redis port? a Redis with TLS only needs rediss://)";
  }
  if (/\bNOAUTH\b/.test(text)) {
    return ` (authentication required: give the password in the URL, or in ${envPrefix}_PASSWORD for a URL without one)`;
  }
  if (WRONG_LOGIN.test(text)) {
    return ` (authentication failed: check the user and password in the URL or ${envPrefix}_USERNAME/_PASSWORD)`;
  }
  if (isSelectRefusal(error)) {
    return ` (the server has no such database: check the database number in the URL or ${envPrefix}_DB; Redis has 16 unless its "databases" setting says otherwise, and Redis Cluster only database 0)`;
  }
  if (code === "ERR_TLS_CERT_ALTNAME_INVALID") {
    return " (TLS: the server certificate is not valid for this host name: connect with a name the certificate lists)";
  }
  return untrustedCertificateHint(code, "the server certificate", hasCa, envPrefix);
}

/** A login the server refused: a wrong user name or password (`NOAUTH` is a missing one). */
const WRONG_LOGIN = /\bWRONGPASS\b|invalid password|invalid username-password/i;

/**
 * Where to give the CA when TLS verification failed with `code` (a certificate error), naming
 * `whose` certificate; "" for any other code.
 */
function untrustedCertificateHint(code: unknown, whose: string, hasCa: boolean, envPrefix: string): string {
  if (typeof code !== "string" || !/CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)/.test(code)) return "";
  return hasCa
    ? ` (TLS: ${whose} is not trusted [${code}]: the CA given (tls.ca or ${envPrefix}_TLS_CA) does not sign it; give the CA that does)`
    : ` (TLS: ${whose} is not trusted [${code}]: give its CA with the tls.ca option or ${envPrefix}_TLS_CA)`;
}

/** True when the connection's TLS options carry a CA of their own. */
function hasCa(connection: ResolvedRedisConnection): boolean {
  const tls = connection.options.tls as { ca?: unknown } | undefined;
  return tls?.ca !== undefined;
}

/** True for Redis's refusal of `SELECT` (a database number the server does not have). */
function isSelectRefusal(error: unknown): boolean {
  const text = error instanceof Error ? error.message : "";
  return /\bDB index is out of range\b|\binvalid DB index\b|SELECT is not allowed in cluster mode/i.test(text);
}

/**
 * Creates and connects a client. On failure the client is closed (no background reconnect
 * loop is left behind) and `makeError` decides what is thrown. The message carries the
 * reason the server or TLS gave (ioredis reports it as an `error` event and then rejects
 * `connect()` with a bare "Connection is closed").
 */
export async function openRedis(
  connection: ResolvedRedisConnection,
  extra: Record<string, unknown>,
  what: string,
  makeError: ErrorFactory,
  signal?: AbortSignal,
): Promise<RedisClientLike> {
  const Redis = await loadRedis(what);
  if (connection.tlsUnverified) warnTlsUnverified(what, connection.displayUrl, connection.envPrefix);
  const cut = () =>
    makeError(`${what}: the connect to ${connection.displayUrl} was cut short by disconnect()`, undefined);
  let client: RedisClientLike;
  for (let attempt = 0; ; attempt++) {
    if (signal?.aborted) throw cut();
    const opened = await connectOnce(Redis, connection, extra, signal);
    if ("client" in opened) {
      client = opened.client;
      if (signal?.aborted) {
        dropRedis(client);
        throw cut();
      }
      break;
    }
    if (signal?.aborted) throw cut();
    const reason = opened.reason;
    if (reason instanceof NoPrimaryError) {
      // (a connection to a sentinel that closed is no Redis handshake to try again)
      const sentinels = connection.options.sentinels as SentinelAddress[];
      const asked = sentinels.map((s) => `${s.host}:${s.port}`).join(", ");
      // ioredis says only "Connection is closed" of a sentinel it could not reach: ask one why
      const why = /Connection is closed\.?$/.test(reason.message)
        ? await sentinelRefusal(Redis, connection)
        : undefined;
      const said =
        why === undefined
          ? describeRedisError(reason, connection.password).replace(
              // (ioredis's words when every sentinel answered that it does not know the name)
              /^All sentinels are unreachable\. (Last error: ERR No such master with that name)/,
              "the sentinels answered but do not know this name. $1",
            )
          : `${reason.message.replace(/\s*Last error: Connection is closed\.?$/, "")} ${why.sentinel}: ${describeRedisError(why.error, connection.password)}`;
      const hint =
        why === undefined ? sentinelLoginHint(reason, connection) : sentinelFailureHint(why.error, connection);
      const sentinelPassword = connection.options.sentinelPassword as string | undefined;
      throw makeError(
        redactSecrets(
          `${what}: cannot connect to ${connection.displayUrl}: no sentinel (${asked}) led to the primary "${String(connection.options.name)}": ${said}${hint}`,
          sentinelPassword,
        ),
        redactedCopy(why?.error ?? reason, connection.password, sentinelPassword),
      );
    }
    // A connection the server closed during the handshake (`CLIENT KILL`, a server going down, a proxy
    // that dropped it) is tried again, twice, shortly after: one that is not Redis at all
    // closes every time, and still fails within half a second.
    const retryInMs = CLOSED_AT_CONNECT_RETRY_MS[attempt];
    if (retryInMs !== undefined && CLOSED_BY_SERVER.test(toError(reason).message)) {
      await sleep(retryInMs);
      continue;
    }
    // (a server that refuses the connection as it accepts it says why, to a connection that listens)
    const refusal = CLOSED_BY_SERVER.test(toError(reason).message)
      ? await refusalOf(plainAddressOf(connection.options))
      : undefined;
    throw makeError(
      `${what}: cannot connect to ${connection.displayUrl}: ${describeRedisError(reason, connection.password)}${refusal ?? primaryFailureHint(reason, connection)}`,
      redactedCopy(reason, connection.password),
    );
  }
  if (await isClusterNode(client)) {
    dropRedis(client);
    // A plain connection to one node of a Cluster: every call on a key of another node fails
    // (MOVED), and a script over several slots too (CROSSSLOT): refused here, not job by job.
    throw new ConfigurationError(
      `${what}: ${connection.displayUrl} is a node of a Redis Cluster, which a URL cannot reach as a whole: ` +
        'give the broker a Cluster client (client: new Cluster([...]), see docs/brokers/redis.md, "Redis Cluster"); ' +
        "the result backend needs a Redis that is not a Cluster",
    );
  }
  return client;
}

/** No sentinel led to the primary in a connect's first round (see {@link sentinelConnect}). */
class NoPrimaryError extends Error {}

/**
 * {@link connectFailureHint} for a connect that reached the server (or, through sentinels, the
 * primary they named): a primary's certificate must name the address the sentinels give, which
 * the URL does not choose.
 */
export function primaryFailureHint(error: unknown, connection: ResolvedRedisConnection): string {
  if (connection.options.sentinels !== undefined) {
    const code = (error as { code?: unknown } | null)?.code;
    const text = toError(error).message;
    if (code === "ERR_TLS_CERT_ALTNAME_INVALID") {
      return " (TLS: the primary's certificate is not valid for the address the sentinels gave for it: it must list that address, an IP unless the sentinels announce host names (resolve-hostnames, announce-hostnames))";
    }
    if (connection.options.tls === undefined && CLOSED_BY_SERVER.test(text)) {
      return " (the primary the sentinels named closed the connection: is TLS on at its port? TLS to the sentinels and the servers is rediss+sentinel://; for TLS to the servers only, give a client:)";
    }
    if (connection.options.tls !== undefined && isNoTlsAnswer(error)) {
      return " (no TLS answer from the primary the sentinels named: is TLS on at its port? rediss+sentinel:// is TLS to the sentinels and the servers alike; for TLS to the sentinels only, give a client:)";
    }
  }
  return connectFailureHint(error, connection.envPrefix, connection.options.tls !== undefined, hasCa(connection));
}

/** A TLS connect to a port that does not speak TLS: no answer in time, or a reply that is not TLS. */
function isNoTlsAnswer(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return (
    code === "ETIMEDOUT" ||
    error instanceof DeadlinePassed ||
    /\bETIMEDOUT\b|WRONG_VERSION_NUMBER|packet length too long/i.test(toError(error).message)
  );
}

/** A sentinel of a `redis+sentinel://` URL. */
interface SentinelAddress {
  readonly host: string;
  readonly port: number;
}

/**
 * A sentinel that a one-off connection, made as ioredis makes its own, cannot reach, with the
 * error it reports, or undefined when each one connects: the first (in the URL's order) whose
 * error names a setting (a login, a TLS certificate, TLS on one side only), else the first.
 * Run only after a failed connect: ioredis keeps these errors of its sentinel connections to
 * itself.
 */
async function sentinelRefusal(
  Redis: Awaited<ReturnType<typeof loadRedis>>,
  connection: ResolvedRedisConnection,
): Promise<{ sentinel: string; error: unknown } | undefined> {
  const o = connection.options;
  const refusals = await Promise.all(
    (o.sentinels as SentinelAddress[]).map(async (sentinel) => {
      let first: unknown;
      const probe = new Redis({
        host: sentinel.host,
        port: sentinel.port,
        username: o.sentinelUsername,
        password: o.sentinelPassword,
        tls: o.sentinelTLS,
        ...ONE_OFF_OPTIONS,
        enableReadyCheck: false,
        disableClientInfo: true,
      });
      probe.on("error", (error: unknown) => {
        first ??= error;
      });
      try {
        await withinDeadline(probe.connect(), PROBE_CONNECT_MS);
      } catch (error) {
        first ??= error;
      } finally {
        dropRedis(probe);
      }
      return first === undefined ? undefined : { sentinel: `${sentinel.host}:${sentinel.port}`, error: first };
    }),
  );
  // a login or certificate refusal says more than a sentinel that is down
  const telling = refusals.find(
    (refusal) => refusal !== undefined && sentinelFailureHint(refusal.error, connection) !== "",
  );
  return telling ?? refusals.find((refusal) => refusal !== undefined);
}

/** The sentinels' login hint when `error` (a sentinel's answer, or ioredis's last error) is a refused login; else "". */
function sentinelLoginHint(error: unknown, connection: ResolvedRedisConnection): string {
  const text = toError(error).message;
  return /\bNOAUTH\b/.test(text) || WRONG_LOGIN.test(text)
    ? ` (the sentinels refused the login: their own user and password are ${connection.envPrefix}_SENTINEL_USERNAME/_SENTINEL_PASSWORD or the sentinelUsername/sentinelPassword options, not the primary's)`
    : "";
}

/**
 * Which setting to look at when a one-off connection to a sentinel failed: the login, its TLS
 * certificate, or TLS on one side only; "" when the error says none of these.
 */
export function sentinelFailureHint(error: unknown, connection: ResolvedRedisConnection): string {
  const text = toError(error).message;
  const code = (error as { code?: unknown } | null)?.code;
  const prefix = connection.envPrefix;
  const login = sentinelLoginHint(error, connection);
  if (login !== "") return login;
  if (code === "ERR_TLS_CERT_ALTNAME_INVALID") {
    return " (TLS: a sentinel's certificate is not valid for the name it is reached at: name it in the URL as its certificate does)";
  }
  const untrusted = untrustedCertificateHint(code, "a sentinel's certificate", hasCa(connection), prefix);
  if (untrusted !== "") return untrusted;
  if (connection.options.sentinelTLS === undefined && CLOSED_BY_SERVER.test(text)) {
    return " (a sentinel closed the connection: is TLS on at its port? sentinels with TLS need rediss+sentinel://)";
  }
  if (connection.options.sentinelTLS !== undefined && isNoTlsAnswer(error)) {
    return " (no TLS answer from a sentinel: is TLS on at its port? sentinels without TLS need redis+sentinel://)";
  }
  return "";
}

/**
 * `connect()` of a client that asks sentinels for the primary, failing after the first round in
 * which no sentinel led to it: ioredis's own connect would go on asking for ever. Later
 * reconnects keep asking (ioredis's `sentinelRetryStrategy`), so a connection that lost the
 * primary waits for the sentinels to name one. The error says why the round failed, with the
 * last sentinel's answer when one answered without naming a primary (an unknown name, say),
 * which ioredis's own "All sentinels are unreachable" leaves out.
 */
function sentinelConnect(client: RedisClientLike): Promise<void> {
  const emitter = client as unknown as {
    on(event: "error" | "sentinelError", listener: (error: Error) => void): void;
    off(event: "error" | "sentinelError", listener: (error: Error) => void): void;
  };
  let answer: Error | undefined;
  const onSentinelError = (error: Error) => {
    answer = error;
  };
  let onError: ((error: Error) => void) | undefined;
  const gaveUp = new Promise<never>((_, reject) => {
    onError = (error) => {
      if (!/^All sentinels are unreachable/.test(error.message)) return;
      // (it would retry; this connect does not)
      const text = error.message.replace(/ Retrying from scratch after \d+ms\./, "");
      reject(
        new NoPrimaryError(answer !== undefined && !/Last error/.test(text) ? `${text} (${answer.message})` : text),
      );
    };
    emitter.on("error", onError);
  });
  emitter.on("sentinelError", onSentinelError);
  return Promise.race([client.connect(), gaveUp]).finally(() => {
    if (onError) emitter.off("error", onError);
    emitter.off("sentinelError", onSentinelError);
  });
}

/** Waits before the second and third attempt of a connect the server closed (see {@link openRedis}). */
const CLOSED_AT_CONNECT_RETRY_MS = [100, 300];

/**
 * One attempt of {@link openRedis}: the connected client, or the reason it failed (the client
 * closed, no reconnect loop left behind).
 */
async function connectOnce(
  Redis: Awaited<ReturnType<typeof loadRedis>>,
  connection: ResolvedRedisConnection,
  extra: Record<string, unknown>,
  signal: AbortSignal | undefined,
): Promise<{ client: RedisClientLike } | { reason: unknown }> {
  const client = new Redis({
    ...connection.options,
    ...BASE_REDIS_OPTIONS,
    reconnectOnError: readonlyReconnector(),
    ...extra,
  });
  // cut by the adapter's disconnect(): the connect under way fails at once (a server that
  // accepts and never answers would hold it for its whole connect timeout)
  const onAbort = () => dropRedis(client);
  signal?.addEventListener("abort", onAbort, { once: true });
  hearSentinelDetector(client);
  let reported: unknown;
  client.on("error", (error: unknown) => {
    // Later errors surface as rejected commands / status; during connect, keep the reason.
    reported ??= error;
  });
  trackConnectionErrors(client, connection.password);
  try {
    await (connection.options.sentinels === undefined ? client.connect() : sentinelConnect(client));
    // ioredis reports a refused SELECT as an `error` event only, and the connection stays on
    // database 0: taken as connected, every key would land in the wrong database.
    if (isSelectRefusal(reported)) throw reported;
    return { client };
  } catch (error) {
    dropRedis(client);
    // (sentinelConnect's error says more than the first one reported)
    return { reason: error instanceof NoPrimaryError ? error : (reported ?? error) };
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
}

/** Longest wait for a caller's client to become ready, at connect. */
const GIVEN_CLIENT_READY_MS = 10_000;

/**
 * The command connection of an adapter: the client the caller gave (`client:`, a `Cluster`
 * included), once ready, or a new one from `connection` ({@link openRedis}).
 */
export async function adapterClient(
  given: RedisClientLike | undefined,
  connection: ResolvedRedisConnection,
  extra: Record<string, unknown>,
  what: string,
  makeError: ErrorFactory,
  signal?: AbortSignal,
): Promise<RedisClientLike> {
  if (given === undefined) return openRedis(connection, extra, what, makeError, signal);
  await awaitGivenClient(given, connection, what, makeError, signal);
  return given;
}

/**
 * Waits until a client the caller gave is ready, connecting it when it was made with
 * `lazyConnect`; bounded. The caller keeps owning it: nothing is closed.
 * @throws the error of `makeError` naming the reason the client reported (a Cluster's last node
 *   error: `WRONGPASS`, `ECONNREFUSED`...) when it is not ready in time, or has ended
 */
async function awaitGivenClient(
  client: RedisClientLike,
  connection: ResolvedRedisConnection,
  what: string,
  makeError: ErrorFactory,
  signal?: AbortSignal,
): Promise<void> {
  // Its listeners are removed before returning: a client the caller owns is left as it was.
  if (client.status === "ready") return;
  let last: unknown;
  const onError = (error: unknown) => {
    const reason = errorReason(error);
    // ioredis ends a failed connect with a bare "Connection is closed": keep the reason before it
    if (last === undefined || !/^Connection is closed/.test(String((reason as Error)?.message))) last = reason;
  };
  const emitter = client as unknown as {
    on(event: string, listener: (...args: unknown[]) => void): void;
    off(event: string, listener: (...args: unknown[]) => void): void;
  };
  emitter.on("error", onError);
  let timer: NodeJS.Timeout | undefined;
  let onReady: (() => void) | undefined;
  let onEnd: (() => void) | undefined;
  try {
    const ready = new Promise<boolean>((resolve) => {
      onReady = () => resolve(true);
      onEnd = () => resolve(false);
      emitter.on("ready", onReady);
      emitter.on("end", onEnd);
      signal?.addEventListener("abort", onEnd, { once: true }); // the caller's client goes on
      timer = setTimeout(() => resolve(false), GIVEN_CLIENT_READY_MS);
    });
    if (client.status === "wait") client.connect().catch(onError);
    if (client.status === "ready") return;
    // an ended client (quit, disconnected) emits nothing more: said at once, not at the bound
    if (client.status === "end")
      last ??= new Error("it has ended (quit or disconnected): give a client that is open or connecting");
    else if (await ready) return;
  } finally {
    clearTimeout(timer);
    emitter.off("error", onError);
    if (onReady) emitter.off("ready", onReady);
    if (onEnd) {
      emitter.off("end", onEnd);
      signal?.removeEventListener("abort", onEnd);
    }
  }
  if (signal?.aborted)
    throw makeError(`${what}: the wait for the given client was cut short by disconnect()`, undefined);
  const reason =
    last === undefined
      ? `not ready within ${GIVEN_CLIENT_READY_MS / 1000} s`
      : describeRedisError(last, connection.password);
  throw makeError(
    `${what}: the client given cannot reach ${connection.displayUrl} (status ${client.status}): ${reason}`,
    redactedCopy(last, connection.password),
  );
}

/** The error that says why: a Cluster's last node error rather than its "all nodes failed". */
function errorReason(error: unknown): unknown {
  return (error as { lastNodeError?: unknown } | undefined)?.lastNodeError ?? error;
}

/** True when `client`'s server runs in cluster mode (`INFO cluster`); false when it will not say. */
async function isClusterNode(client: RedisClientLike): Promise<boolean> {
  try {
    const info = await withinDeadline(client.call("INFO", "cluster") as Promise<unknown>, 2000);
    return typeof info === "string" && /^cluster_enabled:1\s*$/m.test(info);
  } catch {
    return false; // INFO refused (ACL) or no answer: the calls that follow will tell
  }
}

/**
 * The error without what it must not carry: ioredis attaches the failed command to a reply
 * error (`command.args` of `HELLO 3 AUTH user password` holds the password; of a script call,
 * its source and the job bodies it was given), which `util.inspect` and loggers print. Keeps
 * name, message, stack and {@link KEPT_ERROR_FIELDS}, with `secrets` removed.
 */
export function redactedCopy(error: unknown, ...secrets: Array<string | undefined>): unknown {
  if (!(error instanceof Error)) return error;
  const copy = new Error(redactSecrets(error.message, ...secrets)) as Error & Record<string, unknown>;
  copy.name = error.name;
  const fields = error as unknown as Record<string, unknown>;
  for (const key of KEPT_ERROR_FIELDS) {
    const value = fields[key];
    if (typeof value === "string" || typeof value === "number") copy[key] = value;
  }
  copy.stack = redactSecrets(error.stack ?? "", ...secrets);
  return copy;
}

/** The fields of a driver error {@link redactedCopy} keeps (what the system or server said). */
const KEPT_ERROR_FIELDS = ["code", "errno", "syscall", "address", "port"] as const;

/** True for an ioredis `Cluster` client. */
export function isClusterClient(client: RedisClientLike): boolean {
  return (client as { readonly isCluster?: unknown }).isCluster === true;
}

/** Options a `Cluster` takes for itself; the others apply to each node's connection. */
const CLUSTER_LEVEL_OPTIONS = new Set([
  "enableOfflineQueue",
  "enableAutoPipelining",
  "lazyConnect",
  "retryDelayOnFailover",
]);

/**
 * A `duplicate()` of `client` with `options`. A Cluster's `duplicate` takes startup nodes first
 * and its nodes' connection options under `redisOptions`: given as to a single-node client,
 * they would be read as nodes and the copy would never connect.
 */
function duplicateWith(client: RedisClientLike, options: Record<string, unknown>): RedisClientLike {
  if (!isClusterClient(client)) return client.duplicate(options);
  const clusterOptions: Record<string, unknown> = {};
  const redisOptions: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(options)) {
    if (key === "retryStrategy") continue; // a Cluster reconnects by its clusterRetryStrategy
    (CLUSTER_LEVEL_OPTIONS.has(key) ? clusterOptions : redisOptions)[key] = value;
  }
  const cluster = client as unknown as {
    duplicate(nodes: unknown[], options: Record<string, unknown>): RedisClientLike;
  };
  return cluster.duplicate([], { ...clusterOptions, redisOptions });
}

/** Logs what a sentinel connection reported (see {@link hearSentinelDetector}). */
const sentinelLog = processWarningLogger("CHICORY_SENTINEL_UNREACHABLE");
/** When each sentinel's error was last logged (`host:port` → ms). */
const sentinelWarnedAt = new Map<string, number>();
/** At most one such line per sentinel in this time (in a worker's log; a process warning is once). */
const SENTINEL_WARN_EVERY_MS = 10 * 60_000;

/** An ioredis connection to a sentinel, as {@link hearSentinelDetector} sees it. */
interface SentinelClient {
  on(event: "error", listener: (error: Error) => void): unknown;
}

/**
 * ioredis's failover detector (`failoverDetector`, on for `redis+sentinel://` URLs) keeps a
 * connection to each sentinel that has no `error` listener: a sentinel that is down then prints
 * "[ioredis] Unhandled error event" and a stack on stderr at each attempt (every minute by
 * default), on each connection. Gives every sentinel connection of `client` a listener that logs
 * instead: in a worker's log while a worker runs (at most once per sentinel per
 * {@link SENTINEL_WARN_EVERY_MS}), else as a process warning (once per sentinel). Reaches into
 * ioredis 6's `SentinelConnector.connectToSentinel`; a client without it, or a sentinel
 * connection without `on`, is left as it is.
 * @internal exported for tests
 */
export function hearSentinelDetector(client: RedisClientLike): void {
  const connector = (
    client as unknown as {
      connector?: { connectToSentinel?: (endpoint: { host?: string; port?: number }, ...rest: unknown[]) => unknown };
    }
  ).connector;
  const connect = connector?.connectToSentinel;
  if (connector === undefined || typeof connect !== "function") return;
  connector.connectToSentinel = function (this: unknown, endpoint, ...rest) {
    const sentinel = connect.call(this, endpoint, ...rest);
    if (typeof (sentinel as Partial<SentinelClient> | null)?.on !== "function") return sentinel;
    try {
      (sentinel as SentinelClient).on("error", (error) => logSentinelError(endpoint, error));
    } catch {
      // (another shape: ioredis's own behaviour stays)
    }
    return sentinel;
  };
}

/** One line for a sentinel connection's error, at most once per sentinel per {@link SENTINEL_WARN_EVERY_MS}. */
function logSentinelError(endpoint: { host?: string; port?: number } | undefined, error: Error): void {
  const address = `${endpoint?.host ?? "127.0.0.1"}:${endpoint?.port ?? 26379}`;
  const now = Date.now();
  if (now - (sentinelWarnedAt.get(address) ?? Number.NEGATIVE_INFINITY) < SENTINEL_WARN_EVERY_MS) return;
  sentinelWarnedAt.set(address, now);
  sentinelLog.warn(
    { sentinel: address, err: error?.message },
    `redis: sentinel ${address} refused or did not answer; the connections ask the other sentinels, and this one again later`,
  );
}

/** Connects a `duplicate()` of `client` (blocking reader, subscriber) and waits until ready. */
export async function openDuplicate(client: RedisClientLike, extra: Record<string, unknown>): Promise<RedisClientLike> {
  // A connection Chicory opened gives each copy a READONLY budget of its own (see readonlyReconnector).
  const own = isReadonlyReconnector((client as { options?: { reconnectOnError?: unknown } }).options?.reconnectOnError);
  const copy = duplicateWith(client, {
    lazyConnect: true,
    retryStrategy: BASE_REDIS_OPTIONS.retryStrategy,
    ...(own ? { reconnectOnError: readonlyReconnector() } : {}),
    ...extra,
  });
  copy.on("error", () => {
    // see openRedis
  });
  hearSentinelDetector(copy);
  trackConnectionErrors(copy, passwordOf(client));
  try {
    await copy.connect();
  } catch (error) {
    // Keep the copy: ioredis goes on reconnecting in the background; callers check `status`.
    if (copy.status === "end") throw error;
  }
  return copy;
}

/**
 * The error a command rejects with when Chicory closes its connection before Redis answered it
 * (Redis unreachable: the command waited in the client, or was sent and its reply never came).
 * Adapters turn it into their own connection error, naming the server.
 */
export class RedisClosedBeforeAnswer extends Error {
  constructor() {
    super(
      "the connection was closed before Redis answered (Redis unreachable?); the outcome of a write is unknown: it is applied if Redis received it",
    );
    this.name = "RedisClosedBeforeAnswer";
  }
}

/**
 * True for a command ended by the close of its connection before Redis answered:
 * {@link RedisClosedBeforeAnswer}, or ioredis's own "Connection is closed." (a command it still
 * held, e.g. in an auto-pipeline, once the client had ended).
 */
export function isClosedBeforeAnswer(error: unknown): boolean {
  return (
    error instanceof RedisClosedBeforeAnswer ||
    (error instanceof Error && /^Connection is closed\.?$/.test(error.message))
  );
}

/** The parts of an ioredis client (private in its types) that reject the commands it holds. */
interface HeldCommands {
  /** Rejects the commands of the offline queue and the command queue (ioredis's own close step). */
  flushQueue?: (error: Error, options?: { offlineQueue?: boolean; commandQueue?: boolean }) => void;
  /** Commands sent on a connection that dropped, kept to be sent again once reconnected. */
  prevCommandQueue?: { shift?: () => { command?: { reject?: (error: Error) => void } } | undefined } | null;
  /** Sets `status` and emits it as an event. */
  setStatus?: (status: string) => void;
  /** A Cluster's node connections. */
  nodes?: (role: "all") => RedisClientLike[];
}

/**
 * Disconnects `client` at once, socket included, and rejects every command it still holds with
 * {@link RedisClosedBeforeAnswer}. Only for connections Chicory opened: a client the caller
 * gave is never closed by Chicory.
 *
 * ioredis only ends its socket (a half-close) and keeps a 2 s timer until the server closes its
 * side: a timer that holds the process open when the socket was still connecting or the server
 * does not answer. And a client waiting to reconnect (Redis down) has no socket whose "close"
 * would end it: `disconnect()` leaves it "reconnecting" for ever, the commands of its offline
 * queue (and those sent before the drop) never settle, and a command sent to it later would
 * wait too (ioredis 6; see {@link endHeldCommands}).
 */
export function dropRedis(client: RedisClientLike): void {
  type Socket = { destroy?: () => void; destroyed?: boolean };
  const c = client as { stream?: Socket; connector?: { stream?: Socket | undefined } };
  // The socket of a connection still opening is the connector's only. One that is closed
  // already will not emit the "close" that ioredis's timer waits for: hide it from ioredis.
  const socket = c.connector?.stream ?? c.stream;
  if (c.connector && socket?.destroyed === true) c.connector.stream = undefined;
  // A Cluster's node connections leave its pool on disconnect: found before.
  const nodes = isClusterClient(client) ? clusterNodes(client) : [];
  client.disconnect();
  socket?.destroy?.();
  for (const node of [client, ...nodes]) endHeldCommands(node);
}

function clusterNodes(client: RedisClientLike): RedisClientLike[] {
  try {
    return (client as HeldCommands).nodes?.("all") ?? [];
  } catch {
    return [];
  }
}

/**
 * Rejects the commands a disconnected client still holds, and ends a client that would stay
 * "reconnecting". ioredis has no public way to do either: it flushes its queues when the socket
 * closes, and a client between reconnect attempts has no socket (redis/ioredis#2169, open). Its
 * own close step is used (`flushQueue`, then status "end" as ioredis sets it, so a command sent
 * afterwards fails at once with "Connection is closed"); each part is skipped when a later
 * ioredis no longer has it. A client whose socket is still closing gets the same rejections now
 * rather than "Connection is closed." once the socket is gone.
 */
function endHeldCommands(client: RedisClientLike): void {
  const held = client as unknown as HeldCommands;
  const error = new RedisClosedBeforeAnswer();
  try {
    if (typeof held.flushQueue === "function") held.flushQueue(error);
    // Commands sent before a drop, kept apart once a new socket opened (to be sent again when
    // ready): neither queue of flushQueue holds them.
    const previous = held.prevCommandQueue;
    if (typeof previous?.shift === "function") {
      for (let item = previous.shift(); item !== undefined; item = previous.shift()) item.command?.reject?.(error);
    }
    // No socket will close to end it (disconnect() cleared the reconnect timer already).
    if (client.status === "reconnecting" && typeof held.setStatus === "function") held.setStatus.call(client, "end");
  } catch {
    // an ioredis of another shape: its own close handling is all there is
  }
}

/** Closes a client Chicory owns: QUIT when connected, else an immediate disconnect. */
export async function closeRedis(client: RedisClientLike): Promise<void> {
  if (client.status === "ready") {
    // The client writes auto-pipelined commands at the next check phase but QUIT at once: let
    // those go first (Redis answers in order, so they settle before the connection closes).
    await nextTurn();
  }
  if (client.status === "ready") {
    try {
      await Promise.race([client.quit(), new Promise((resolve) => setTimeout(resolve, 1000).unref())]);
    } catch {
      // already closing
    }
  }
  dropRedis(client);
}

/**
 * ` (the server refused the connection: "<its line>": <hint>)` when the server at `address`
 * refuses new connections with a line of its own (see {@link refusalOnConnect}), else undefined.
 */
async function refusalOf(address: PlainAddress | undefined): Promise<string | undefined> {
  if (address === undefined) return undefined;
  const line = await refusalOnConnect(address);
  if (line === undefined) return undefined;
  const hint = refusalHint(line);
  return ` (the server refuses new connections: "${line}"${hint === "" ? "" : `: ${hint}`})`;
}

/** The last error of each connection while it is not ready (described, password removed). */
const connectionErrors = new WeakMap<RedisClientLike, string>();
/** What the server of a connection it keeps closing said of it, while it does (see {@link trackConnectionErrors}). */
const connectionRefusals = new WeakMap<RedisClientLike, string>();
/** When a closed connection's server was last asked why. */
const refusalAsked = new WeakMap<RedisClientLike, number>();
/** Shortest time between two such questions for one client. */
const REFUSAL_ASK_EVERY_MS = 5000;

/**
 * Keeps the last error `client` reports until it is ready again (see {@link lastConnectionError}).
 * A reconnect the server closed (`EPIPE`, `ECONNRESET`) is asked about once in a while: a server
 * past its `maxclients` says so to a connection that listens, and the last error then quotes it.
 */
function trackConnectionErrors(client: RedisClientLike, password: string | undefined): void {
  const emitter = client as unknown as { on(event: string, listener: (error?: unknown) => void): void };
  emitter.on("error", (error) => {
    const reason = errorReason(error);
    connectionErrors.set(client, describeRedisError(reason, password).slice(0, 300));
    if (!CLOSED_BY_SERVER.test(toError(reason).message)) {
      connectionRefusals.delete(client);
      return;
    }
    const now = performance.now();
    if (now - (refusalAsked.get(client) ?? Number.NEGATIVE_INFINITY) < REFUSAL_ASK_EVERY_MS) return;
    refusalAsked.set(client, now);
    const options = (client as { options?: Record<string, unknown> }).options;
    void refusalOf(plainAddressOf(options)).then((refusal) => {
      if (client.status === "ready") return;
      if (refusal === undefined) connectionRefusals.delete(client);
      else connectionRefusals.set(client, refusal);
    });
  });
  emitter.on("ready", () => {
    connectionErrors.delete(client);
    connectionRefusals.delete(client);
  });
}

function passwordOf(client: RedisClientLike): string | undefined {
  const password = (client as { options?: { password?: unknown } }).options?.password;
  return typeof password === "string" ? password : undefined;
}

/**
 * Why `client` is not connected, as its last error said (`WRONGPASS` after a password change,
 * `ECONNREFUSED`...), for messages that would otherwise only give its status; "" when ready or
 * unknown.
 */
export function lastConnectionError(client: RedisClientLike | undefined): string {
  if (client === undefined || client.status === "ready") return "";
  const error = connectionErrors.get(client);
  return error === undefined ? "" : `; last error: ${error}${connectionRefusals.get(client) ?? ""}`;
}

/** Longest healthcheck round trip before it reports a failure. */
const HEALTHCHECK_TIMEOUT_MS = 2000;

/** Longest connect of the one-off connection that checks whether a reconnecting client's server answers. */
const PROBE_CONNECT_MS = 1000;

/** ioredis options of a one-off connection (a probe): no retries, no queueing, a short connect. */
const ONE_OFF_OPTIONS: Readonly<Record<string, unknown>> = {
  lazyConnect: true,
  retryStrategy: () => null,
  enableOfflineQueue: false,
  maxRetriesPerRequest: 0,
  connectTimeout: PROBE_CONNECT_MS,
};

/**
 * PING with latency; never throws and never waits longer than about 2 s (commands may be queued
 * offline). A client between reconnect attempts says nothing of the server now (ioredis waits
 * up to 2 s before its next attempt, and stays "reconnecting" meanwhile, even once the server is
 * back): a one-off connection checks the server, and if it answers, the client's return is
 * awaited (within the same bound). So a Redis down is reported at once (its connect is refused),
 * and one back for a moment is not reported down.
 */
export async function pingRedis(
  client: RedisClientLike | undefined,
  password: string | undefined,
): Promise<{ connected: boolean; error?: string; latencyMs?: number }> {
  if (!client) return { connected: false, error: "not connected" };
  if (client.status !== "ready") {
    if (!isBetweenAttempts(client)) return notReady(client);
    // one check per client at a time, whatever the number of healthchecks that ask
    let back = returns.get(client);
    if (back === undefined) {
      back = returnOf(client).finally(() => returns.delete(client));
      returns.set(client, back);
    }
    const error = await back;
    if (error !== null) return { connected: false, error };
  }
  const started = performance.now(); // the round trip only, not a reconnect waited for
  let timer: NodeJS.Timeout | undefined;
  try {
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`no reply within ${HEALTHCHECK_TIMEOUT_MS} ms`)),
        HEALTHCHECK_TIMEOUT_MS,
      );
    });
    await Promise.race([client.call("PING"), timeout]);
    return { connected: true, latencyMs: performance.now() - started };
  } catch (error) {
    return { connected: false, error: describeRedisError(error, password) };
  } finally {
    clearTimeout(timer);
  }
}

/** True for a single-node client that is (re)connecting: its status may lag behind the server's. */
function isBetweenAttempts(client: RedisClientLike): boolean {
  const { status } = client;
  return (status === "reconnecting" || status === "connecting" || status === "connect") && !isClusterClient(client);
}

/** Whether `client`'s server accepts a new connection and answers a PING now (a one-off connection, closed after). */
async function serverAnswers(client: RedisClientLike): Promise<boolean> {
  let probe: RedisClientLike | undefined;
  try {
    probe = duplicateWith(client, {
      ...ONE_OFF_OPTIONS,
      reconnectOnError: null,
      connectionName: "chicory-probe",
      failoverDetector: false, // (through sentinels: a one-off connection needs no failover notices)
    });
    probe.on("error", () => {
      // the refusal is the answer
    });
    hearSentinelDetector(probe);
    await withinDeadline(probe.connect(), PROBE_CONNECT_MS);
    await withinDeadline(probe.call("PING") as Promise<unknown>, PROBE_CONNECT_MS);
    return true;
  } catch {
    return false;
  } finally {
    if (probe !== undefined) dropRedis(probe);
  }
}

/** Why `client` is not connected, as its status and last error say. */
function notReady(client: RedisClientLike): { connected: false; error: string } {
  return { connected: false, error: `connection ${client.status}${lastConnectionError(client)}` };
}

/** The checks of reconnecting clients under way (see {@link returnOf}). */
const returns = new WeakMap<RedisClientLike, Promise<string | null>>();

/**
 * Null once a reconnecting `client` is ready again (its server answers a one-off connection,
 * and the client comes back within the healthcheck's bound), else why not.
 */
async function returnOf(client: RedisClientLike): Promise<string | null> {
  const started = performance.now();
  if (!(await serverAnswers(client))) return notReady(client).error;
  const ready = await becomesReady(client, HEALTHCHECK_TIMEOUT_MS - (performance.now() - started));
  if (ready) return null;
  return client.status === "end"
    ? "connection closed"
    : `connection ${client.status} (the server answers; the connection is not back yet)`;
}

/**
 * Resolves true once `client` is ready, false after `ms` or when it is closed (its timer does
 * not keep the process alive).
 */
function becomesReady(client: RedisClientLike, ms: number): Promise<boolean> {
  if (client.status === "ready") return Promise.resolve(true);
  if (ms <= 0 || client.status === "end") return Promise.resolve(false);
  return new Promise((resolve) => {
    const settle = (isReady: boolean) => {
      clearTimeout(timer);
      client.off("ready", onReady);
      client.off("end", onEnd);
      resolve(isReady);
    };
    const onReady = () => settle(true);
    const onEnd = () => settle(false);
    const timer = setTimeout(() => settle(false), ms);
    timer.unref();
    client.on("ready", onReady);
    client.on("end", onEnd);
  });
}

/**
 * The connection options of an ioredis client that decide which server and database it talks
 * to: its address, or for a Sentinel client the primary its sentinels name (`name`, the same
 * set of sentinels); undefined for a Cluster or a client of replicas.
 */
function serverOf(client: RedisClientLike): string | undefined {
  const c = client as { isCluster?: boolean; options?: Record<string, unknown> };
  const o = c.options;
  if (c.isCluster === true || o === undefined) return undefined;
  if (o.sentinels !== undefined && o.sentinels !== null) {
    if (!Array.isArray(o.sentinels) || (o.role ?? "master") !== "master" || typeof o.name !== "string")
      return undefined;
    const sentinels = (o.sentinels as { host?: unknown; port?: unknown }[])
      .map((s) => `${String(s.host ?? "localhost")}:${String(s.port ?? 26379)}`)
      .sort();
    return JSON.stringify(["sentinel", o.name, sentinels, o.db ?? 0, o.username ?? null]);
  }
  return JSON.stringify([o.path ?? null, o.host ?? "localhost", o.port ?? 6379, o.db ?? 0, o.username ?? null]);
}

/**
 * True when `a` and `b` are single-node clients (no Cluster) of the same server, database and
 * user, or Sentinel clients of the same primary and database, so one Lua script may touch the
 * keys of both. False when unsure.
 */
export function sameRedisServer(a: RedisClientLike, b: RedisClientLike): boolean {
  const server = serverOf(a);
  return server !== undefined && server === serverOf(b);
}

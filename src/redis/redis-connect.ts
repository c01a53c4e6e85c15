/**
 * Opening ioredis connections for Chicory's adapters, with errors wrapped and passwords
 * redacted.
 * @module
 */
import { redactSecrets } from "../core/url.js";
import { loadRedis, type RedisClientLike } from "./redis-client.js";
import { BASE_REDIS_OPTIONS, type ResolvedRedisConnection } from "./redis-options.js";

/** Builds the error an adapter throws for a failed Redis operation. */
export type ErrorFactory = (message: string, cause: unknown) => Error;

/** A message for a driver error with the password removed. */
export function describeRedisError(error: unknown, password: string | undefined): string {
  const text = error instanceof Error ? error.message : String(error);
  return redactSecrets(text, password);
}

/**
 * Creates and connects a client. On failure the client is closed (no background reconnect
 * loop is left behind) and `makeError` decides what is thrown.
 */
export async function openRedis(
  connection: ResolvedRedisConnection,
  extra: Record<string, unknown>,
  what: string,
  makeError: ErrorFactory,
): Promise<RedisClientLike> {
  const Redis = await loadRedis(what);
  const client = new Redis({ ...connection.options, ...BASE_REDIS_OPTIONS, ...extra });
  client.on("error", () => {
    // Connection errors surface as rejected commands / status; the event only needs a listener.
  });
  try {
    await client.connect();
  } catch (error) {
    client.disconnect();
    throw makeError(
      `${what}: cannot connect to ${connection.displayUrl}: ${describeRedisError(error, connection.password)}`,
      error,
    );
  }
  return client;
}

/** Connects a `duplicate()` of `client` (blocking reader, subscriber) and waits until ready. */
export async function openDuplicate(client: RedisClientLike, extra: Record<string, unknown>): Promise<RedisClientLike> {
  const copy = client.duplicate({ lazyConnect: true, retryStrategy: BASE_REDIS_OPTIONS.retryStrategy, ...extra });
  copy.on("error", () => {
    // see openRedis
  });
  try {
    await copy.connect();
  } catch (error) {
    // Keep the copy: ioredis goes on reconnecting in the background; callers check `status`.
    if (copy.status === "end") throw error;
  }
  return copy;
}

/** Closes a client Chicory owns: QUIT when connected, else an immediate disconnect. */
export async function closeRedis(client: RedisClientLike): Promise<void> {
  if (client.status === "ready") {
    try {
      await Promise.race([client.quit(), new Promise((resolve) => setTimeout(resolve, 1000).unref())]);
    } catch {
      // already closing
    }
  }
  client.disconnect();
}

/** Longest healthcheck round trip before it reports a failure. */
const HEALTHCHECK_TIMEOUT_MS = 2000;

/** PING with latency; never throws and never waits longer than 2 s (commands may be queued offline). */
export async function pingRedis(
  client: RedisClientLike | undefined,
  password: string | undefined,
): Promise<{ connected: boolean; error?: string; latencyMs?: number }> {
  if (!client) return { connected: false, error: "not connected" };
  if (client.status !== "ready") return { connected: false, error: `connection ${client.status}` };
  const started = performance.now();
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

/**
 * PostgreSQL through `pg` (imported lazily): a `pg.Pool` for queries and, for waiting on
 * results, one dedicated `pg.Client` per process that LISTENs (see `pg-listener.ts`).
 *
 * URL: `postgres://user:password@host:5432/database?sslmode=require` (`postgresql://` too).
 * The pool keeps `poolSize` connections, opens up to `maxOverflow` more under load (closed
 * after 10 s idle), replaces connections older than `poolRecycle`, and fails a checkout after
 * `poolTimeout` with `DbPoolExhaustedError` (also when the database does not answer a new
 * connection within it, not retried). Broken connections (killed, server restart) are
 * discarded by the pool; an `error` on an idle one is handled, never crashes the process.
 * @module
 */

import type { EnvMap } from "../../../core/env.js";
import type { Logger } from "../../../core/logger.js";
import { maskUrl } from "../../../core/url.js";
import { loadKysely } from "../kysely.js";
import { importDriver } from "../sql-driver.js";
import { isConnectionError } from "../sql-errors.js";
import { resolvePoolSettings, type SqlPoolOptions } from "../sql-options.js";
import {
  adoptCheckout,
  cappedByQueryTimeout,
  closeGraceMs,
  currentOperation,
  OpenSockets,
  type SocketLike,
} from "../sql-sockets.js";
import type { PgListenClient, SqlConnection, SqlDatabase, SqlDialect } from "../sql-types.js";

/** The little of a `pg.Pool` the backend uses (an injected pool must offer this). */
export interface PgPoolLike {
  /** Checks a client out. */
  connect(): Promise<{
    /** The client's `query` method. */
    query: unknown;
    /** Gives the client back to the pool (discarded when given an error). */
    release(error?: unknown): void;
  }>;
  /** Closes the pool and its clients. */
  end(): Promise<void>;
  /** Listens for errors of idle clients (handled, so they never crash the process). */
  on(event: "error", listener: (error: Error) => void): unknown;
  /** Listens for each new client (the backend handles its errors and lowers its `statement_timeout`). */
  on(
    event: "connect",
    listener: (client: {
      on(event: "error", listener: (error: Error) => void): unknown;
      query?(text: string, values: readonly unknown[]): Promise<unknown>;
    }) => void,
  ): unknown;
  /** Clients the pool holds, idle or checked out (tells a full pool's checkout timeout apart). */
  readonly totalCount: number;
  /** The pool's settings, as far as the backend reads them. */
  readonly options?: {
    /** Most clients the pool opens (taken as 10 when absent). */
    readonly max?: number;
  };
}

interface PgModule {
  Pool: new (config: Record<string, unknown>) => PgPoolLike;
  Client: new (config: Record<string, unknown>) => PgListenClient & { connect(): Promise<void> };
}

/** Options of {@link postgresDialect}. */
export interface PostgresDialectOptions extends SqlPoolOptions {
  /** A ready `pg.Pool` (the caller owns and ends it); waiters then poll (no LISTEN connection). */
  pool?: PgPoolLike | undefined;
  /** `application_name` of the connections (default `chicory`), shown in `pg_stat_activity`. */
  applicationName?: string | undefined;
  /** Environment to read `CHICORY_BACKEND_POSTGRES_*` from (default `process.env`). */
  env?: EnvMap | undefined;
}

const WHAT = "the PostgreSQL result backend";

/** Sets the session's `statement_timeout` to `$1` ms unless it is lower (and not 0: none). */
const LOWER_STATEMENT_TIMEOUT =
  "select set_config('statement_timeout', $1, false) from pg_settings where name = 'statement_timeout' and (setting::bigint = 0 or setting::bigint > $1::bigint)";

/** How often the LISTEN connection is probed (or every `queryTimeout`, if shorter). */
const LISTEN_PROBE_MS = 10_000;

/** A PostgreSQL database for {@link SqlBackend}. */
export function postgresDialect(options: PostgresDialectOptions = {}): SqlDialect {
  const settings = resolvePoolSettings("postgres", options, options.env ?? process.env);
  const applicationName = options.applicationName ?? "chicory";
  const injected = options.pool;
  const loadPg = () => importDriver<PgModule>("pg@8", WHAT, () => import("pg"));
  return {
    flavor: "postgres",
    displayUrl: injected ? "postgres (injected pool)" : maskUrl(settings.url),
    async connect(logger?: Logger): Promise<SqlConnection> {
      let pool: PgPoolLike;
      let max: number;
      const sockets = new OpenSockets();
      if (injected) {
        pool = injected;
        max = injected.options?.max ?? 10;
      } else {
        const pg = await loadPg();
        max = settings.poolSize + settings.maxOverflow;
        pool = new pg.Pool({
          // Its socket noted from the start: a connection the database never answers (a stalled
          // server) is closed by close() at once, not left open until poolTimeout.
          Client: class extends pg.Client {
            constructor(config: Record<string, unknown>) {
              super(config);
              sockets.add(socketOf(this));
            }
          },
          connectionString: settings.url,
          application_name: applicationName,
          min: settings.poolSize, // kept when idle; the overflow closes after 10 s idle
          max,
          idleTimeoutMillis: 10_000,
          connectionTimeoutMillis: settings.poolTimeoutMs,
          maxLifetimeSeconds: Math.floor(settings.poolRecycleMs / 1000),
        });
      }
      // An idle client that dies (pg_terminate_backend, restart) is removed by the pool; the
      // event must have a listener or Node would crash the process.
      const onError = () => undefined;
      pool.on("error", onError);
      // A checked-out client has no listener of its own: a FATAL message (the connection was
      // killed) would crash the process. The failing query rejects anyway, and the pool
      // discards the client when it is released.
      // A statement given up after queryTimeout has its socket closed here, but its server
      // session goes on waiting (a lock held by another session does not end when the client
      // leaves), and the pool opens another connection for the next statement: without a bound
      // on the server's side, a long lock would pile sessions up to max_connections. So each new
      // connection lowers `statement_timeout` to queryTimeout + 1 s (ended by the server a
      // second after the client gave up), unless a lower one is set (role, database, URL
      // `options`). A query, not a startup parameter: PgBouncer refuses unknown ones.
      const statementTimeout = !injected && settings.queryTimeoutMs > 0 ? String(settings.queryTimeoutMs + 1000) : "";
      let isRefusalLogged = false;
      const onRefused = (error: unknown) => {
        // (a connection that died meanwhile fails its next statement anyway: not worth a line)
        if (isRefusalLogged || isConnectionError(error)) return;
        isRefusalLogged = true;
        logger?.warn(
          { err: error instanceof Error ? error.message : String(error) },
          "could not set statement_timeout on a new PostgreSQL connection: a statement given up after queryTimeout may go on waiting on the server (logged once per pool)",
        );
      };
      pool.on("connect", (client) => {
        client.on("error", onError);
        sockets.add(socketOf(client)); // (noted at construction, unless TLS replaced it, or a pool was injected)
        // queued before the statement of the checkout that opened the connection
        if (statementTimeout !== "") client.query?.(LOWER_STATEMENT_TIMEOUT, [statementTimeout]).catch(onRefused);
      });
      const { Kysely, PostgresDialect } = await loadKysely();
      const db = new Kysely<SqlDatabase>({
        dialect: new PostgresDialect({
          pool: heldPool(pool) as unknown as ConstructorParameters<typeof PostgresDialect>[0]["pool"],
        }),
      });
      return {
        db,
        close: async () => {
          if (injected) return; // the caller owns the pool
          await sockets.close(db.destroy(), closeGraceMs(settings.queryTimeoutMs));
        },
        queryTimeoutMs: settings.queryTimeoutMs,
        // A checkout that waited poolTimeout for a busy pool, or a new connection the database
        // did not answer within poolTimeout (pg-pool's connect timeout: not retried, as the
        // database is stalled or unreachable, and each try would wait as long again).
        isPoolTimeout: (error) =>
          error instanceof Error &&
          (/connection terminated due to connection timeout/i.test(error.message) ||
            (/timeout exceeded when trying to connect/i.test(error.message) && pool.totalCount >= max)),
      };
    },
    // With an injected pool there is no URL for a dedicated LISTEN client: waiters poll.
    listen: injected
      ? undefined
      : {
          key: `${settings.url}\0${applicationName}`,
          probe: {
            intervalMs: cappedByQueryTimeout(LISTEN_PROBE_MS, settings.queryTimeoutMs),
            timeoutMs: closeGraceMs(settings.queryTimeoutMs),
          },
          async connect(signal?: AbortSignal): Promise<PgListenClient> {
            const pg = await loadPg();
            signal?.throwIfAborted();
            const client = new pg.Client({
              connectionString: settings.url,
              application_name: applicationName,
              connectionTimeoutMillis: settings.poolTimeoutMs,
            });
            client.on("error", () => undefined); // replaced by the listener's own handler
            // (a database that never answers would hold the socket until poolTimeout)
            const cut = () => socketOf(client)?.destroy();
            signal?.addEventListener("abort", cut, { once: true });
            try {
              await client.connect();
            } catch (error) {
              await endPgClient(client, () => client.end(), settings.queryTimeoutMs);
              throw error;
            } finally {
              signal?.removeEventListener("abort", cut);
            }
            // Its end() waits for the server's goodbye: bounded, as a silent link never gives one.
            const end = client.end.bind(client);
            client.end = () => endPgClient(client, end, settings.queryTimeoutMs);
            return client;
          },
        },
  };
}

/** A pooled client, as far as its socket and release are concerned. */
interface PgPooledClient {
  release(error?: unknown): void;
  readonly connection?: { readonly stream?: SocketLike | undefined } | undefined;
}

/** The socket under a `pg` client (`client.connection.stream`), if it has one. */
function socketOf(client: object): SocketLike | undefined {
  return (client as PgPooledClient).connection?.stream;
}

/**
 * `pool` as Kysely sees it, noting each checked-out client's socket as held by the backend
 * operation that asked for it, until it is released (see `sql-sockets.ts`).
 */
function heldPool(pool: PgPoolLike): Pick<PgPoolLike, "connect" | "end"> {
  return {
    async connect() {
      const operation = currentOperation();
      const client = (await pool.connect()) as Awaited<ReturnType<PgPoolLike["connect"]>> & PgPooledClient;
      return adoptCheckout(operation, client, socketOf(client));
    },
    end: () => pool.end(),
  };
}

/** Ends a `pg` client: waits for the server's goodbye (see `closeGraceMs`), then closes its socket. */
async function endPgClient(client: object, end: () => Promise<void>, queryTimeoutMs: number): Promise<void> {
  const sockets = new OpenSockets();
  sockets.add(socketOf(client));
  await sockets.close(end(), closeGraceMs(queryTimeoutMs));
}

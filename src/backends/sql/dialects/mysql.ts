/**
 * MySQL and MariaDB through `mysql2` (imported lazily).
 *
 * URL: `mysql://user:password@host:3306/database` (`mariadb://` too). Connections use
 * utf8mb4 (4-byte UTF-8 round-trips) and the UTC session time zone. mysql2's pool has no
 * checkout timeout and no maximum connection age, so a thin wrapper adds both: a checkout
 * that waits longer than `poolTimeout` fails with `DbPoolExhaustedError`, and a connection
 * older than `poolRecycle` is destroyed instead of being reused. Connections that die
 * (KILL CONNECTION, restart) are dropped by mysql2's pool.
 * @module
 */

import { connect as netConnect, type Socket } from "node:net";
import type { EnvMap } from "../../../core/env.js";
import { maskUrl } from "../../../core/url.js";
import { loadKysely } from "../kysely.js";
import { importDriver } from "../sql-driver.js";
import { resolvePoolSettings, type SqlPoolOptions } from "../sql-options.js";
import { adoptCheckout, closeGraceMs, currentOperation, OpenSockets, type SocketLike } from "../sql-sockets.js";
import type { SqlConnection, SqlDatabase, SqlDialect } from "../sql-types.js";

type Callback<T> = (error: unknown, value: T) => void;

/** A pooled mysql2 connection (callback API), as far as the backend uses it. */
interface MysqlConnectionLike {
  /** Runs a statement (the backend sets the session time zone with it). */
  query(sql: string, callback?: Callback<unknown>): unknown;
  /** Gives the connection back to the pool. */
  release(): void;
  /** Closes the connection instead of giving it back (one older than `poolRecycle`). */
  destroy(): void;
  /** Its socket. */
  readonly stream?: SocketLike | undefined;
}

/** The little of a mysql2 callback pool the backend uses (an injected pool must offer this). */
export interface MysqlPoolLike {
  /** Checks a connection out (the backend adds a `poolTimeout` and a `poolRecycle` check). */
  getConnection(callback: Callback<MysqlConnectionLike>): void;
  /** Closes the pool and its connections. */
  end(callback: (error: unknown) => void): void;
  /** Listens for each new connection (its socket is noted, its time zone set to UTC). */
  on(event: "connection", listener: (connection: MysqlConnectionLike) => void): unknown;
}

interface Mysql2Module {
  createPool(config: Record<string, unknown>): MysqlPoolLike;
}

/** Options of {@link mysqlDialect}. */
export interface MysqlDialectOptions extends SqlPoolOptions {
  /** A ready mysql2 pool (callback API, `utf8mb4`); the caller owns and ends it. */
  pool?: MysqlPoolLike | undefined;
  /** Environment to read `CHICORY_BACKEND_MYSQL_*` from (default `process.env`). */
  env?: EnvMap | undefined;
}

/** The error a checkout gets when no connection was free within the pool timeout. */
export class MysqlPoolTimeoutError extends Error {
  override readonly name = "MysqlPoolTimeoutError";
}

/** A MySQL / MariaDB database for {@link SqlBackend}. */
export function mysqlDialect(options: MysqlDialectOptions = {}): SqlDialect {
  const settings = resolvePoolSettings("mysql", options, options.env ?? process.env);
  const injected = options.pool;
  return {
    flavor: "mysql",
    displayUrl: injected ? "mysql (injected pool)" : maskUrl(settings.url),
    async connect(): Promise<SqlConnection> {
      let pool = injected;
      const sockets = new OpenSockets();
      if (pool === undefined) {
        const mysql = await importDriver<Mysql2Module>("mysql2@3", "the MySQL result backend", () => import("mysql2"));
        const url = settings.url.replace(/^mariadb:/i, "mysql:");
        pool = mysql.createPool({
          uri: url,
          connectionLimit: settings.poolSize + settings.maxOverflow,
          maxIdle: settings.poolSize,
          idleTimeout: 10_000,
          waitForConnections: true,
          queueLimit: 0,
          charset: "UTF8MB4_UNICODE_CI",
          supportBigNumbers: true,
          enableKeepAlive: true,
          connectTimeout: settings.poolTimeoutMs,
          // Its socket noted from the start: a connection the database never answers (a stalled
          // server) is closed by close() at once, not left open until poolTimeout.
          stream: (opts: { config: MysqlSocketConfig }) => {
            const socket = openMysqlSocket(opts.config);
            sockets.add(socket);
            return socket;
          },
        });
      }
      const born = new WeakMap<object, number>();
      pool.on("connection", (connection) => {
        born.set(connection, Date.now());
        sockets.add(connection.stream);
        connection.query("set time_zone = '+00:00'", () => undefined);
      });
      const timed = timedPool(pool, settings.poolTimeoutMs, settings.poolRecycleMs, born);
      const { Kysely, MysqlDialect } = await loadKysely();
      const db = new Kysely<SqlDatabase>({
        dialect: new MysqlDialect({ pool: timed as unknown as ConstructorParameters<typeof MysqlDialect>[0]["pool"] }),
      });
      return {
        db,
        close: async () => {
          if (injected) return;
          // mysql2's end() waits for every connection's goodbye: a silent link never gives one.
          await sockets.close(db.destroy(), closeGraceMs(settings.queryTimeoutMs));
        },
        queryTimeoutMs: settings.queryTimeoutMs,
        isPoolTimeout: (error) => error instanceof MysqlPoolTimeoutError,
      };
    },
  };
}

/**
 * Wraps a mysql2 pool with a checkout timeout and a maximum connection age, and notes each
 * checked-out connection's socket as held by the backend operation that asked for it, until it
 * is released (see `sql-sockets.ts`).
 */
function timedPool(
  pool: MysqlPoolLike,
  timeoutMs: number,
  recycleMs: number,
  born: WeakMap<object, number>,
): Pick<MysqlPoolLike, "getConnection" | "end"> {
  return {
    getConnection(callback) {
      const operation = currentOperation();
      let isSettled = false;
      const timer = setTimeout(() => {
        isSettled = true;
        callback(new MysqlPoolTimeoutError(`no connection within ${timeoutMs} ms`), undefined as never);
      }, timeoutMs);
      const attempt = () =>
        pool.getConnection((error, connection) => {
          if (isSettled) {
            connection?.release();
            return;
          }
          const age = connection ? Date.now() - (born.get(connection) ?? Date.now()) : 0;
          if (!error && connection && recycleMs > 0 && age > recycleMs) {
            connection.destroy();
            attempt();
            return;
          }
          isSettled = true;
          clearTimeout(timer);
          if (error || !connection) {
            callback(error, connection);
            return;
          }
          let adopted: MysqlConnectionLike;
          try {
            adopted = adoptCheckout(operation, connection, connection.stream);
          } catch (abandoned) {
            callback(abandoned, undefined as never);
            return;
          }
          callback(null, adopted);
        });
      attempt();
    },
    end(callback) {
      pool.end(callback);
    },
  };
}

/** What mysql2 passes a `stream` factory of the connection's settings. */
interface MysqlSocketConfig {
  readonly host?: string | undefined;
  readonly port?: number | undefined;
  readonly socketPath?: string | undefined;
  readonly enableKeepAlive?: boolean | undefined;
  readonly keepAliveInitialDelay?: number | undefined;
}

/** The socket mysql2 would open for `config` (TCP: no delay, keep-alive when asked). */
function openMysqlSocket(config: MysqlSocketConfig): Socket {
  if (config.socketPath) return netConnect(config.socketPath);
  const socket = netConnect(config.port ?? 3306, config.host ?? "localhost");
  socket.setNoDelay(true);
  if (config.enableKeepAlive) socket.on("connect", () => socket.setKeepAlive(true, config.keepAliveInitialDelay));
  return socket;
}

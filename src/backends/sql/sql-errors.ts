/**
 * Classification of driver errors (pg, mysql2, better-sqlite3, tedious) into what the
 * backend does about them: retry once on a fresh connection, retry a deadlock, or wrap.
 * @module
 */
import { BackendConnectionError, ChicoryError, DbPoolExhaustedError } from "../../errors.js";

interface DriverErrorLike {
  code?: unknown;
  errno?: unknown;
  number?: unknown;
  fatal?: unknown;
  message?: unknown;
}

const PG_CONNECTION_CODES = new Set(["57P01", "57P02", "57P03", "08000", "08003", "08006", "08001", "08004"]);
const NET_CODES = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENOTFOUND",
  "PROTOCOL_CONNECTION_LOST",
  "ER_CONNECTION_KILLED",
  "ESOCKET",
  "ECLOSE",
  "ECONNCLOSED",
]);
const CONNECTION_MESSAGES = [
  "connection terminated",
  "not queryable",
  "connection is in closed state",
  "connection lost",
  "server closed the connection",
  "socket hang up",
  "pool is closed", // mysql2: a checkout still queued when the pool ended
  "cannot use a pool after calling end on the pool", // pg: the same, asked after end()
  "connection is closed",
];

/** True when the error means the connection died (killed, reset, server restart). */
export function isConnectionError(error: unknown): boolean {
  if (error === null || typeof error !== "object") return false;
  const e = error as DriverErrorLike;
  if (typeof e.code === "string" && (PG_CONNECTION_CODES.has(e.code) || NET_CODES.has(e.code))) return true;
  if (e.fatal === true) return true;
  // MariaDB 1927 ER_CONNECTION_KILLED, MySQL 2013 lost connection, 2006 server gone away.
  if (e.errno === 1927 || e.errno === 2013 || e.errno === 2006) return true;
  const message = typeof e.message === "string" ? e.message.toLowerCase() : "";
  return CONNECTION_MESSAGES.some((m) => message.includes(m));
}

/** True for deadlocks and lock-wait timeouts that a retry of the same statement resolves. */
export function isTransientConflict(error: unknown): boolean {
  if (error === null || typeof error !== "object") return false;
  const e = error as DriverErrorLike;
  if (e.code === "40P01" || e.code === "40001") return true; // PostgreSQL deadlock / serialization
  if (e.errno === 1213 || e.errno === 1205) return true; // MySQL deadlock / lock wait timeout
  if (e.number === 1205) return true; // SQL Server deadlock victim
  return e.code === "SQLITE_BUSY" || e.code === "SQLITE_LOCKED";
}

/** Wraps a driver error as a Chicory error (kept as `cause`). */
export function wrapSqlError(error: unknown, what: string, displayUrl: string, isPoolTimeout: boolean): ChicoryError {
  if (error instanceof ChicoryError) return error;
  const detail = error instanceof Error ? error.message : String(error);
  if (isPoolTimeout) {
    return new DbPoolExhaustedError(
      `${what}: no connection from the pool of ${displayUrl} within the pool timeout: the database did not answer a new connection in time (unreachable or stalled?), or every connection stayed busy (then raise POOL_SIZE/MAX_OVERFLOW or POOL_TIMEOUT)`,
      { cause: error },
    );
  }
  return new BackendConnectionError(`${what} failed on ${displayUrl}: ${detail}`, { cause: error });
}

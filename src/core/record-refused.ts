/**
 * Recognizes a result backend's server refusing a record for its size: MySQL/MariaDB's
 * `max_allowed_packet`, Redis's `proto-max-bulk-len`, PostgreSQL's and SQLite's size limits.
 * Unlike a lost connection or a server restarting, the same record is refused again however
 * often it is sent, so the worker does not send it again (see `worker/executor.ts`).
 * @module
 */

interface ErrorLike {
  readonly code?: unknown;
  readonly errno?: unknown;
  readonly message?: unknown;
  readonly cause?: unknown;
}

/**
 * Redis's reply to an argument longer than `proto-max-bulk-len` (it then closes the
 * connection), and to an `APPEND` that would make a string longer than that.
 */
const REDIS_BULK_TOO_LONG = /protocol error: invalid bulk length|string exceeds maximum allowed size/i;

/**
 * The server's words when `error` (or an error in its `cause` chain: the adapters wrap driver
 * errors) says the server refused a record for its size; undefined for any other error. The
 * innermost such error's words: a wrapper's message names the server's address.
 */
export function recordRefusal(error: unknown): string | undefined {
  let found: string | undefined;
  let current = error;
  for (let depth = 0; depth < 8 && current !== null && typeof current === "object"; depth++) {
    const { code, errno, message, cause } = current as ErrorLike;
    const text = typeof message === "string" ? message : "";
    if (
      // MySQL/MariaDB: ER_NET_PACKET_TOO_LARGE, ER_WARN_ALLOWED_PACKET_OVERFLOWED
      errno === 1153 ||
      errno === 1301 ||
      code === "ER_NET_PACKET_TOO_LARGE" ||
      // PostgreSQL program_limit_exceeded; SQLite's string or blob too big
      code === "54000" ||
      code === "SQLITE_TOOBIG" ||
      REDIS_BULK_TOO_LONG.test(text)
    ) {
      found = text || String(code ?? errno);
    }
    current = cause;
  }
  return found;
}

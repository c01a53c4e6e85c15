/**
 * The logger seen by Chicory's core: the subset of pino's API it uses. Any pino logger
 * fits; {@link silentLogger} drops everything.
 * @module
 */

/** A log method: `(fields, message)` or `(message)`. */
export interface LogFn {
  (fields: Record<string, unknown>, message?: string): void;
  (message: string): void;
}

/** A structured logger (pino-compatible). */
export interface Logger {
  debug: LogFn;
  info: LogFn;
  warn: LogFn;
  error: LogFn;
  /** A logger that adds `fields` to every line. */
  child(fields: Record<string, unknown>): Logger;
}

/** Log levels, as in Chicory (`CHICORY_WORKER_LOG_LEVEL`). */
export type LogLevel = "DEBUG" | "INFO" | "WARNING" | "ERROR" | "CRITICAL";

/** All log levels. */
export const LOG_LEVELS: readonly LogLevel[] = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"];

const noop = (): void => {};

/** A logger that writes nothing. */
export const silentLogger: Logger = {
  debug: noop,
  info: noop,
  warn: noop,
  error: noop,
  child: () => silentLogger,
};

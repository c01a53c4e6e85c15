/**
 * The logger seen by Chicory's core: the subset of pino's API it uses. Any pino logger
 * fits; {@link silentLogger} drops everything.
 * @module
 */
import { ConfigurationError } from "../errors.js";
import { toStoredError } from "./stored-error.js";

/** A log method: `(fields, message)` or `(message)`. */
export interface LogFn {
  /** Logs a line with structured `fields` and an optional message. */
  (fields: Record<string, unknown>, message?: string): void;
  /** Logs a message alone. */
  (message: string): void;
}

/** A structured logger (pino-compatible). */
export interface Logger {
  /** Logs at debug level. */
  debug: LogFn;
  /** Logs at info level. */
  info: LogFn;
  /** Logs at warn level (Chicory's `WARNING`). */
  warn: LogFn;
  /** Logs at error level. */
  error: LogFn;
  /** A logger that adds `fields` to every line. */
  child(fields: Record<string, unknown>): Logger;
}

/** Log levels, as in Chicory (`CHICORY_WORKER_LOG_LEVEL`). */
export type LogLevel = "DEBUG" | "INFO" | "WARNING" | "ERROR" | "CRITICAL";

/** All log levels. */
export const LOG_LEVELS: readonly LogLevel[] = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"];

/**
 * A log level as it may be written: {@link LogLevel} in upper or lower case, or pino's `warn`
 * and `fatal` (for `WARNING` and `CRITICAL`). At run time any case is taken (`Warning`, from a
 * variable say).
 */
export type LogLevelName = LogLevel | Lowercase<LogLevel> | "warn" | "WARN" | "fatal" | "FATAL";

/** Pino's names of two levels, taken as Chicory's. */
const LEVEL_ALIASES: Readonly<Record<string, LogLevel>> = { WARN: "WARNING", FATAL: "CRITICAL" };

/**
 * The {@link LogLevel} of `value`, in any case, `warn` and `fatal` included; undefined for
 * anything else (the caller names the setting in its error).
 */
export function toLogLevel(value: unknown): LogLevel | undefined {
  if (typeof value !== "string") return undefined;
  const upper = value.trim().toUpperCase();
  const level = LEVEL_ALIASES[upper] ?? upper;
  return (LOG_LEVELS as readonly string[]).includes(level) ? (level as LogLevel) : undefined;
}

/** The levels as an error message lists them. */
export const LOG_LEVELS_TEXT = `${LOG_LEVELS.join(", ")} (any case; warn and fatal also do)`;

/**
 * {@link toLogLevel}, or a `ConfigurationError` naming the setting `name`.
 * @throws ConfigurationError for anything else than a level
 */
export function checkLogLevel(value: unknown, name: string): LogLevel {
  const level = toLogLevel(value);
  if (level !== undefined) return level;
  const shown = typeof value === "string" ? JSON.stringify(value.slice(0, 40)) : typeof value;
  throw new ConfigurationError(`${name}: expected one of ${LOG_LEVELS_TEXT}, got ${shown}`);
}

const noop = (): void => {};

/** A logger that writes nothing. */
export const silentLogger: Logger = {
  debug: noop,
  info: noop,
  warn: noop,
  error: noop,
  child: () => silentLogger,
};

/** The methods of a {@link Logger} that write a line. */
type LineMethod = "debug" | "info" | "warn" | "error";

/**
 * `logger`, whose lines can never throw: a line the logger fails to write (a logger that throws,
 * or a serializer reading an error whose getters throw) is written again as its message alone,
 * with what went wrong; should that fail too, it is dropped. The worker logs through it, so that
 * no log line can break what it was doing (a stop, a job's settling). The methods are looked
 * up at each call, so a level changed on the logger (pino's `logger.level = …`) applies.
 */
export function neverThrowing(logger: Logger): Logger {
  const line =
    (method: LineMethod): LogFn =>
    (fieldsOrMessage: Record<string, unknown> | string, message?: string): void => {
      try {
        if (typeof fieldsOrMessage === "string") logger[method](fieldsOrMessage);
        else logger[method](fieldsOrMessage, message);
      } catch (error) {
        const text = typeof fieldsOrMessage === "string" ? fieldsOrMessage : (message ?? "");
        try {
          logger[method](`${text} (the line's fields could not be logged: ${toStoredError(error).message})`);
        } catch {
          // nothing more can be done with this logger
        }
      }
    };
  return {
    debug: line("debug"),
    info: line("info"),
    warn: line("warn"),
    error: line("error"),
    child: (fields) => {
      try {
        return neverThrowing(logger.child(fields));
      } catch {
        return neverThrowing(logger);
      }
    },
  };
}

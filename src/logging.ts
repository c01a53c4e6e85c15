/**
 * The default logger: pino, JSON lines when stdout is not a TTY (or `CHICORY_LOG_FORMAT=json`),
 * readable lines through pino-pretty on a TTY when it is installed.
 * @module
 */
import { createRequire } from "node:module";
import { type EnvMap, loadEnv } from "./core/env.js";
import { checkLogLevel, type Logger, type LogLevel, type LogLevelName } from "./core/logger.js";
import { ConfigurationError } from "./errors.js";

/** The little of pino this module uses (loaded on first use: an app with its own logger never pays for it). */
interface PinoLike {
  (options: Record<string, unknown>, destination?: unknown): unknown;
  destination(options: { fd: number; sync: boolean }): unknown;
}

const require = createRequire(import.meta.url);

const PINO_LEVEL: Record<LogLevel, string> = {
  DEBUG: "debug",
  INFO: "info",
  WARNING: "warn",
  ERROR: "error",
  CRITICAL: "fatal",
};

/** Options of {@link createLogger}. */
export interface CreateLoggerOptions {
  /** Minimum level (default `INFO`; any case, and pino's `warn`/`fatal`, as `logLevel` in the config). */
  level?: LogLevelName | undefined;
  /**
   * `json`, `pretty`, or `auto` (pretty on a TTY when pino-pretty is installed); default:
   * `CHICORY_LOG_FORMAT` of `env`, else `auto`.
   */
  format?: "json" | "pretty" | "auto" | undefined;
  /** Where `CHICORY_LOG_FORMAT` is read (default: `process.env` over the `.env` file, as the app's config). */
  env?: EnvMap | undefined;
  /** Fields added to every line. */
  base?: Record<string, unknown> | undefined;
  /** Write to standard error instead of standard output. */
  toStderr?: boolean | undefined;
}

function hasPretty(): boolean {
  try {
    require.resolve("pino-pretty");
    return true;
  } catch {
    return false;
  }
}

/**
 * `process.env` over the `.env` file, as the app's config reads them; `process.env` alone when
 * the file cannot be read (a logger is made anyway: the app's own config says what is wrong).
 */
function envOrProcess(): EnvMap {
  if (process.env.CHICORY_LOG_FORMAT !== undefined) return process.env;
  try {
    return loadEnv();
  } catch {
    return process.env;
  }
}

/** `CHICORY_LOG_FORMAT` (`json`, `pretty` or `auto`; unset: `auto`). */
function logFormatFromEnv(value: string | undefined): "json" | "pretty" | "auto" {
  if (value === undefined || value === "") return "auto";
  const format = value.trim().toLowerCase();
  if (format === "json" || format === "pretty" || format === "auto") return format;
  throw new ConfigurationError(
    `CHICORY_LOG_FORMAT: ${JSON.stringify(value.slice(0, 40))} is invalid: use json, pretty or auto`,
  );
}

/** Creates a pino logger configured for Chicory. */
export function createLogger(options: CreateLoggerOptions = {}): Logger {
  const level = PINO_LEVEL[options.level === undefined ? "INFO" : checkLogLevel(options.level, "createLogger: level")];
  const fd = options.toStderr ? 2 : 1;
  const format = options.format ?? logFormatFromEnv((options.env ?? envOrProcess()).CHICORY_LOG_FORMAT);
  const isTty = fd === 1 ? process.stdout.isTTY : process.stderr.isTTY;
  if (format === "pretty" && !hasPretty()) {
    // else pino's own "unable to determine transport target" is all the user sees
    throw new ConfigurationError(
      'log format "pretty" (CHICORY_LOG_FORMAT) needs the package "pino-pretty": run npm install pino-pretty',
    );
  }
  const pretty = format === "pretty" || (format === "auto" && isTty && hasPretty());
  const base = { ...options.base };
  const pino = require("pino") as PinoLike;
  if (pretty) {
    return pino({
      level,
      base,
      transport: { target: "pino-pretty", options: { destination: fd, colorize: isTty, ignore: "pid,hostname" } },
    }) as unknown as Logger;
  }
  return pino({ level, base }, pino.destination({ fd, sync: true })) as unknown as Logger;
}

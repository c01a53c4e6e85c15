/**
 * Option value parsers shared by the commands. A bad value throws commander's
 * `InvalidArgumentError`, which the CLI reports on one line with exit code 2.
 * @module
 */
import { type Command, InvalidArgumentError, Option } from "commander";
import { toSeconds } from "../core/duration.js";
import { LOG_LEVELS_TEXT, type LogLevel, toLogLevel } from "../core/logger.js";

/** Parses a whole number >= `min`. */
export function intAtLeast(min: number, max = Number.MAX_SAFE_INTEGER): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!/^\s*\d+\s*$/.test(value) || !Number.isSafeInteger(n) || n < min || n > max) {
      const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `from ${min} to ${max}`;
      throw new InvalidArgumentError(`expected a whole number ${range}, got "${value}"`);
    }
    return n;
  };
}

/** Parses a duration in seconds: `30`, `1.5`, `"250ms"`, `"10s"`, `"5m"`, `"1h"`. */
export function seconds(value: string): number {
  try {
    return toSeconds(value);
  } catch {
    throw new InvalidArgumentError(
      `expected seconds (30) or a duration with a unit ("250ms", "10s", "5m"), got "${value}"`,
    );
  }
}

/** Parses a duration in seconds that must be > 0. */
export function positiveSeconds(value: string): number {
  const s = seconds(value);
  if (s <= 0) throw new InvalidArgumentError(`expected a duration > 0, got "${value}"`);
  return s;
}

/** Parses a log level, case-insensitively (`debug`, `INFO`, `warn`...). */
export function logLevel(value: string): LogLevel {
  const level = toLogLevel(value);
  if (level === undefined) throw new InvalidArgumentError(`expected one of ${LOG_LEVELS_TEXT}, got "${value}"`);
  return level;
}

/** Collects a repeatable option; each value may also be a comma-separated list. */
export function collect(value: string, previous: string[] | undefined): string[] {
  const items = value
    .split(",")
    .map((item) => item.trim())
    .filter(Boolean);
  if (items.length === 0) throw new InvalidArgumentError(`expected a name, got "${value}"`);
  return [...(previous ?? []), ...items];
}

/** Options every command accepts. */
export interface CommonOptions {
  /** Log level; `DEBUG` also prints stack traces of errors. */
  logLevel?: LogLevel;
}

/** Adds `--log-level` to a command. */
export function withLogLevel(command: Command, defaultNote?: string): Command {
  const note = defaultNote === undefined ? "" : `; default: ${defaultNote}`;
  return command.addOption(
    new Option(
      "--log-level <level>",
      `DEBUG, INFO, WARNING, ERROR or CRITICAL (DEBUG also prints stack traces${note})`,
    ).argParser(logLevel),
  );
}

/** Adds `-q, --queue <name>` (repeatable) to a command. */
export function withQueues(command: Command, description: string): Command {
  return command.option("-q, --queue <name>", description, collect);
}

/** True when `argv` asks for DEBUG (`--log-level debug`), so errors include their stacks. */
export function wantsStack(argv: readonly string[]): boolean {
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? "";
    if (arg.toLowerCase().startsWith("--log-level=") && toLogLevel(arg.slice("--log-level=".length)) === "DEBUG") {
      return true;
    }
    if (arg === "--log-level" && toLogLevel(argv[i + 1]) === "DEBUG") return true;
  }
  return false;
}

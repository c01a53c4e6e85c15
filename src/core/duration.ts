import { ConfigurationError, ValidationError } from "../errors.js";

/**
 * A duration: a number of seconds, or a string with a unit (`"250ms"`, `"10s"`, `"5m"`, `"1h"`).
 * A bare numeric string is seconds.
 */
export type Duration = number | string;

/** The longest delay a message can be given (a countdown, an eta, a retry): ten years, in seconds. */
export const MAX_DELAY_SECONDS = 10 * 366 * 24 * 3600;

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const PATTERN = /^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h|d)?\s*$/;

/**
 * Parses a {@link Duration} into milliseconds.
 * @param value seconds, or a string with a unit
 * @param what the option or variable name, used in the error message
 * @throws ConfigurationError when the value is not a finite, non-negative duration
 */
export function toMs(value: Duration, what = "duration"): number {
  if (typeof value === "number") {
    if (!Number.isFinite(value * 1000) || value < 0) {
      throw new ConfigurationError(`${what}: expected a non-negative number of seconds, got ${String(value)}`);
    }
    return value * 1000;
  }
  const match = PATTERN.exec(String(value));
  if (!match) {
    throw new ConfigurationError(
      `${what}: "${String(value).slice(0, 50)}" is not a duration: use seconds (30) or a unit string ("250ms", "10s", "5m", "1h")`,
    );
  }
  const amount = Number(match[1]);
  const unit = match[2] ?? "s";
  const ms = amount * (UNIT_MS[unit] ?? 1000);
  if (!Number.isFinite(ms)) throw new ConfigurationError(`${what}: "${String(value).slice(0, 50)}" is too large`);
  return ms;
}

/** Parses a {@link Duration} into seconds. */
export function toSeconds(value: Duration, what = "duration"): number {
  return toMs(value, what) / 1000;
}

/**
 * The `staleSeconds` of a stale-client cleanup (`cleanupStaleClients`), in whole milliseconds.
 * @throws ValidationError when it is not a finite number of seconds >= 0 (a `NaN` would
 *   otherwise remove nothing, or everything, without a word)
 */
export function staleMs(staleSeconds: number): number {
  if (typeof staleSeconds !== "number" || !Number.isFinite(staleSeconds * 1000) || staleSeconds < 0) {
    throw new ValidationError(
      `cleanupStaleClients: staleSeconds must be a number of seconds >= 0, got ${typeof staleSeconds === "number" ? String(staleSeconds) : typeof staleSeconds}`,
    );
  }
  return Math.round(staleSeconds * 1000);
}

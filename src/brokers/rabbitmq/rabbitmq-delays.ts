/**
 * Delayed delivery without head-of-line blocking (RELIABILITY C14): one delay queue per
 * (target queue, level) with a per-QUEUE `x-message-ttl`, so every message in a delay queue
 * expires in arrival order and a short delay never waits behind a long one. A delay is
 * rounded UP to the next level (never early, late by at most the gap to that level); a
 * delay longer than the top level waits the top level and carries the rest in
 * {@link REMAINING_DELAY_HEADER}, and the consumer delays it again on arrival. Relative
 * milliseconds only: no clock of any client is involved, only the broker's TTL timer.
 * Pure.
 * @module
 */
import { ConfigurationError } from "../../errors.js";

/** Header carrying the delay still to wait (ms) after the current level. */
export const REMAINING_DELAY_HEADER = "x-chicory-delay-remaining-ms";

const S = 1000;
const M = 60 * S;
const H = 60 * M;

/** Default delay levels: 1 s, 2 s, 5 s, 10 s, 20 s, 30 s, 1 m, 2 m, 5 m, 10 m, 15 m, 30 m, 1 h, 2 h, 6 h, 12 h, 1 d. */
export const DEFAULT_DELAY_LEVELS_MS: readonly number[] = [
  S,
  2 * S,
  5 * S,
  10 * S,
  20 * S,
  30 * S,
  M,
  2 * M,
  5 * M,
  10 * M,
  15 * M,
  30 * M,
  H,
  2 * H,
  6 * H,
  12 * H,
  24 * H,
];

/**
 * Sorts, deduplicates and checks delay levels (whole milliseconds, at least 1 ms, at most 30 levels).
 * @throws ConfigurationError when the list is empty or a level is out of range
 */
export function checkDelayLevels(levelsMs: readonly number[]): readonly number[] {
  const levels = [...new Set(levelsMs.map((level) => Math.ceil(level)))].sort((a, b) => a - b);
  if (levels.length === 0 || levels.length > 30) {
    throw new ConfigurationError("delayLevels: give 1 to 30 delay levels");
  }
  const first = levels[0] ?? 0;
  const last = levels[levels.length - 1] ?? 0;
  if (first < 1 || last > 0xffffffff) {
    throw new ConfigurationError("delayLevels: each level must be from 1 ms to 49 days");
  }
  return levels;
}

/** Which delay queue a message waits in, and what is left after it. */
export interface DelayPlan {
  /** TTL of the delay queue to use, in milliseconds. */
  readonly levelMs: number;
  /** Delay still to wait after this level (0 when this level is the last hop). */
  readonly remainingMs: number;
}

/**
 * Plans a delay: the smallest level >= `delayMs`, or the top level plus a remainder.
 * Returns null when there is nothing to wait (`delayMs` <= 0).
 */
export function planDelay(delayMs: number, levelsMs: readonly number[]): DelayPlan | null {
  const wantMs = Math.ceil(delayMs);
  if (!(wantMs > 0)) return null;
  const levelMs = levelsMs.find((level) => level >= wantMs);
  if (levelMs !== undefined) return { levelMs, remainingMs: 0 };
  const topMs = levelsMs[levelsMs.length - 1] ?? wantMs;
  return { levelMs: topMs, remainingMs: wantMs - topMs };
}

/** Reads the remaining delay of an arriving message; 0 when absent or malformed. */
export function remainingDelayMs(headers: Record<string, unknown> | undefined): number {
  const value = headers?.[REMAINING_DELAY_HEADER];
  const ms = typeof value === "number" ? value : typeof value === "string" ? Number(value) : 0;
  return Number.isFinite(ms) && ms > 0 ? Math.ceil(ms) : 0;
}

/**
 * The current time as an ISO string, formatted once per millisecond (a busy worker stamps many
 * records within the same millisecond).
 * @module
 */

let lastMs = Number.NaN;
let lastIso = "";

/** `new Date().toISOString()`, cached for the current millisecond. */
export function isoNow(): string {
  const ms = Date.now();
  if (ms !== lastMs) {
    lastMs = ms;
    lastIso = new Date(ms).toISOString();
  }
  return lastIso;
}

/** Wall clock minus monotonic clock at start, ms. */
const driftAtStartMs = Date.now() - performance.now();
/** How far the wall clock has run ahead of the monotonic clock since start, at most, ms. */
let aheadMs = 0;

/**
 * `performance.now()`, plus the time this process's host was suspended (a laptop asleep, a
 * paused VM): the monotonic clock does not count that time, and a lease in Redis does. Measured
 * as how far the wall clock has run ahead of the monotonic one since the process started; a
 * step of the wall clock forward counts too (a lease then looks older than it is, which only
 * makes a consumer check it sooner), one backward does not. Never goes back.
 */
export function awakeNow(): number {
  const now = performance.now();
  const ahead = Date.now() - now - driftAtStartMs;
  if (ahead > aheadMs) aheadMs = ahead;
  return now + aheadMs;
}

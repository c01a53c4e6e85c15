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

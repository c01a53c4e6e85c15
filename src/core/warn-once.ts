/**
 * Process warnings about a risky setup (shown on stderr by default, catchable with
 * `process.on("warning")`), each emitted once per process for the same subject.
 * @module
 */

const emitted = new Set<string>();

/** Emits `message` as a process warning with `code`, unless one was already emitted for `key`. */
export function warnOnce(key: string, message: string, code: string): void {
  if (emitted.has(key)) return;
  emitted.add(key);
  process.emitWarning(message, { code });
}

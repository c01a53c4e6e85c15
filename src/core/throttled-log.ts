/**
 * Warnings that an outage would repeat for every job (a step that fails, a state that cannot be
 * stored): at most one per logger and kind every few seconds, the lines between logged at debug
 * and counted in the next warning.
 * @module
 */
import type { Logger } from "./logger.js";

/** Per kind, per logger: when it last warned, and how many it did not since. */
export class ThrottledWarning {
  readonly #everyMs: number;
  readonly #countField: string;
  readonly #last = new WeakMap<Logger, { atMs: number; notWarned: number }>();

  /**
   * @param everyMs shortest time between two warnings of one logger
   * @param countField the field of a warning that counts the lines logged at debug since the last
   */
  constructor(everyMs: number, countField: string) {
    this.#everyMs = everyMs;
    this.#countField = countField;
  }

  /** Warns `message`, or logs it at debug when this logger warned of it less than `everyMs` ago. */
  warn(logger: Logger, fields: Record<string, unknown>, message: string): void {
    const now = performance.now();
    let last = this.#last.get(logger);
    if (last === undefined) {
      last = { atMs: Number.NEGATIVE_INFINITY, notWarned: 0 };
      this.#last.set(logger, last);
    }
    if (now - last.atMs < this.#everyMs) {
      last.notWarned++;
      logger.debug(fields, message);
      return;
    }
    logger.warn({ ...fields, ...(last.notWarned > 0 ? { [this.#countField]: last.notWarned } : {}) }, message);
    last.atMs = now;
    last.notWarned = 0;
  }
}

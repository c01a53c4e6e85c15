/**
 * Process warnings about a risky setup (shown on stderr by default, catchable with
 * `process.on("warning")`), each emitted once per process for the same subject.
 * @module
 */

import type { LogFn, Logger } from "./logger.js";

const emitted = new Set<string>();

/** Emits `message` as a process warning with `code`, unless one was already emitted for `key`. */
export function warnOnce(key: string, message: string, code: string): void {
  if (emitted.has(key)) return;
  emitted.add(key);
  process.emitWarning(message, { code });
}

/**
 * The logger of an adapter built without one (from a URL, say): its warnings and errors become
 * process warnings with `code`, each message once per process (with the `err` field of its
 * first occurrence); debug and info lines are dropped. Give the adapter a logger to get them all.
 */
export function processWarningLogger(code: string): Logger {
  const warn: LogFn = (fieldsOrMessage: Record<string, unknown> | string, message?: string) => {
    const text = typeof fieldsOrMessage === "string" ? fieldsOrMessage : (message ?? "");
    const err = typeof fieldsOrMessage === "string" ? undefined : fieldsOrMessage.err;
    warnOnce(`${code} ${text}`, typeof err === "string" && err !== "" ? `${text}: ${err}` : text, code);
  };
  const logger: Logger = { debug: noop, info: noop, warn, error: warn, child: () => logger };
  return logger;
}

function noop(): void {}

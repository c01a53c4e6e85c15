/**
 * Process warnings about a risky setup (shown on stderr by default, catchable with
 * `process.on("warning")`), each emitted once per process for the same subject.
 * @module
 */

import type { LogFn, Logger } from "./logger.js";

/**
 * State shared by every copy of this module in the process, kept on `globalThis`: the CLI
 * loads a TypeScript app through tsx, which gives the app's `import "chicory"` its own copy of
 * the package, so a module-level value here would not be seen by the CLI's worker (the app's
 * broker and backend would never find the worker's logger).
 */
function shared<T>(name: string, create: () => T): T {
  const store = globalThis as unknown as Record<symbol, T | undefined>;
  const key = Symbol.for(`chicory.${name}`);
  store[key] ??= create();
  return store[key];
}

const emitted = shared("emittedWarnings", () => new Set<string>());

/** Emits `message` as a process warning with `code`, unless one was already emitted for `key`. */
export function warnOnce(key: string, message: string, code: string): void {
  if (emitted.has(key)) return;
  emitted.add(key);
  process.emitWarning(message, { code });
}

/** The loggers of the running workers, latest last: adapters without one log through it. */
const routes = shared<Logger[]>("unownedLogRoutes", () => []);

/**
 * Sends the lines of every adapter built without a logger to `logger` (all levels, with a
 * `component` field naming the adapter) instead of process warnings, until the returned
 * function is called. A worker does this while it runs, so that a broker or backend built from
 * a URL logs in the worker's log, not as a `(node:PID) Warning` line in the middle of it.
 */
export function routeUnownedLogs(logger: Logger): () => void {
  routes.push(logger);
  let isRouting = true;
  return () => {
    if (!isRouting) return;
    isRouting = false;
    routes.splice(routes.lastIndexOf(logger), 1);
  };
}

/**
 * The logger of an adapter built without one (from a URL, say): while a worker runs, its lines go
 * to the worker's logger ({@link routeUnownedLogs}); otherwise its warnings and errors become
 * process warnings with `code`, each message once per process (with the `err` field of its
 * first occurrence), and debug and info lines are dropped. Give the adapter a logger to get
 * them all.
 */
export function processWarningLogger(code: string, bindings: Record<string, unknown> = {}): Logger {
  const at =
    (level: keyof Omit<Logger, "child">): LogFn =>
    (fieldsOrMessage: Record<string, unknown> | string, message?: string) => {
      const fields = typeof fieldsOrMessage === "string" ? {} : fieldsOrMessage;
      const text = typeof fieldsOrMessage === "string" ? fieldsOrMessage : (message ?? "");
      const routed = routes.at(-1);
      if (routed !== undefined) {
        routed[level]({ component: code, ...bindings, ...fields }, text);
        return;
      }
      if (level === "debug" || level === "info") return;
      const err = fields.err;
      warnOnce(`${code} ${text}`, typeof err === "string" && err !== "" ? `${text}: ${err}` : text, code);
    };
  return {
    debug: at("debug"),
    info: at("info"),
    warn: at("warn"),
    error: at("error"),
    child: (more) => processWarningLogger(code, { ...bindings, ...more }),
  };
}

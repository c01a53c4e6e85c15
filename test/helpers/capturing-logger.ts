/**
 * A logger for tests that keeps every line (level, fields, message) and can await one.
 * @module
 */
import type { Logger } from "../../src/index.js";

/** One captured log line. */
export interface Line {
  readonly level: "debug" | "info" | "warn" | "error";
  readonly fields: Record<string, unknown>;
  readonly message: string;
}

/** A logger that keeps its lines and resolves `until(pattern)` once a line matches. */
export function capturingLogger(): {
  logger: Logger;
  lines: Line[];
  until(pattern: RegExp): Promise<Line>;
} {
  const lines: Line[] = [];
  const waiting: Array<{ pattern: RegExp; resolve: (line: Line) => void }> = [];
  const at =
    (level: Line["level"]) =>
    (fieldsOrMessage: Record<string, unknown> | string, message?: string): void => {
      const line =
        typeof fieldsOrMessage === "string"
          ? { level, fields: {}, message: fieldsOrMessage }
          : { level, fields: fieldsOrMessage, message: message ?? "" };
      lines.push(line);
      for (const w of [...waiting]) {
        if (!w.pattern.test(line.message)) continue;
        waiting.splice(waiting.indexOf(w), 1);
        w.resolve(line);
      }
    };
  const logger = loggerOf(at);
  const until = (pattern: RegExp): Promise<Line> => {
    const seen = lines.find((line) => pattern.test(line.message));
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve) => waiting.push({ pattern, resolve }));
  };
  return { logger, lines, until };
}

/** A logger that keeps its lines as text, `level: message (err)`; `visible()`: those above debug. */
export function textLogger(): { logger: Logger; lines: string[]; visible(): string[] } {
  const lines: string[] = [];
  const logger = loggerOf((level) => (fields, message) => {
    if (typeof fields === "string") lines.push(`${level}: ${fields}`);
    else lines.push(`${level}: ${message ?? ""}${fields.err === undefined ? "" : ` (${String(fields.err)})`}`);
  });
  return { logger, lines, visible: () => lines.filter((line) => !line.startsWith("debug")) };
}

/** A logger whose every level writes through `at(level)`; its children are itself. */
function loggerOf(
  at: (level: Line["level"]) => (fields: Record<string, unknown> | string, message?: string) => void,
): Logger {
  const logger: Logger = {
    debug: at("debug"),
    info: at("info"),
    warn: at("warn"),
    error: at("error"),
    child: () => logger,
  };
  return logger;
}

/**
 * CLI output: tables, JSON, and the one-line error report with its exit code
 * (0 success, 1 runtime failure, 2 usage error). Every line that can carry a URL goes
 * through {@link maskSecrets}, so passwords never reach the terminal.
 * @module
 */
import { maskUrlsIn } from "../core/url.js";

/** Exit code of a successful command. */
export const EXIT_OK = 0;
/** Exit code of a runtime failure (unreachable broker, failed task, timeout...). */
export const EXIT_FAILURE = 1;
/** Exit code of a usage error (bad option, missing module or export, invalid configuration). */
export const EXIT_USAGE = 2;

/** A usage error: reported on one line, exit code 2. */
export class CliUsageError extends Error {
  /** Stable code. */
  readonly code = "CLI_USAGE";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "CliUsageError";
  }
}

/** A runtime failure the CLI reports itself: one line, exit code 1. */
export class CliFailure extends Error {
  /** Stable code. */
  readonly code = "CLI_FAILURE";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "CliFailure";
  }
}

/** Error codes (of ChicoryError, duck-typed) that mean the user's input or configuration is wrong. */
const USAGE_CODES: ReadonlySet<string> = new Set(["CLI_USAGE", "CONFIGURATION", "VALIDATION_ERROR"]);

/** Masks every `scheme://user:password@` and `password=` occurrence in `text` ({@link maskUrlsIn}). */
export function maskSecrets(text: string): string {
  return maskUrlsIn(text);
}

/** The `code` of a thrown value (ChicoryError's, a driver's), when it has a string one. */
export function codeOf(error: unknown): string | undefined {
  if (typeof error === "object" && error !== null && "code" in error) {
    const code = (error as { code: unknown }).code;
    return typeof code === "string" ? code : undefined;
  }
  return undefined;
}

/** The exit code for an error thrown by a command. */
export function exitCodeFor(error: unknown): number {
  const code = codeOf(error);
  return code !== undefined && USAGE_CODES.has(code) ? EXIT_USAGE : EXIT_FAILURE;
}

// Control characters other than newlines and tabs (ESC starts the sequences that move the
// cursor, recolour, retitle the terminal): text from queues, stored errors and task ids is
// anyone's, and is printed as escapes instead.
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching them is the point
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g;

/** `text` with its control characters (not newlines or tabs) shown as `\xHH` escapes. */
export function printable(text: string): string {
  return text.replace(CONTROL, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
}

/** One line describing `error` (and its cause when that adds information), secrets masked. */
export function errorLine(error: unknown): string {
  const parts: string[] = [];
  let current: unknown = error;
  for (let depth = 0; depth < 3 && current !== undefined && current !== null; depth++) {
    const message = current instanceof Error ? current.message : String(current);
    // a cause whose text (its first sentence) the line already holds adds nothing
    const head = message.split(/(?<=\.)\s|\s\(/)[0] ?? message;
    if (message && !parts.some((part) => part.includes(head))) parts.push(message);
    current = current instanceof Error ? current.cause : undefined;
  }
  const line = parts.join(": ").replace(/\s*\n\s*/g, "; ");
  return printable(maskSecrets(line || "unknown error"));
}

/** Prints `chicory: <message>` to stderr, plus the stack (masked) when `withStack`. */
export function reportError(error: unknown, withStack: boolean): void {
  process.stderr.write(`chicory: ${errorLine(error)}\n`);
  if (!withStack) return;
  let current: unknown = error;
  for (let depth = 0; depth < 3 && current instanceof Error; depth++) {
    if (current.stack) process.stderr.write(`${depth > 0 ? "caused by: " : ""}${maskSecrets(current.stack)}\n`);
    current = current.cause;
  }
}

/** Writes a line to stdout. */
export function printLine(line = ""): void {
  process.stdout.write(`${maskSecrets(line)}\n`);
}

/** Writes a line to stderr (banners, progress). */
export function printInfo(line = ""): void {
  process.stderr.write(`${maskSecrets(line)}\n`);
}

/** Writes `value` as pretty JSON to stdout. */
export function printJson(value: unknown): void {
  // each string masked before it is escaped: a password in a URL inside a task's argument or a
  // stored value becomes ***, and the JSON stays valid
  process.stdout.write(`${JSON.stringify(value, maskStrings, 2)}\n`);
}

/** A `JSON.stringify` replacer that masks every string value ({@link maskSecrets}). */
function maskStrings(_key: string, value: unknown): unknown {
  return typeof value === "string" ? maskSecrets(value) : value;
}

/** Shortens `text` to `max` characters with an ellipsis, on one line. */
export function truncate(text: string, max: number): string {
  const flat = printable(text.replace(/\s*\n\s*/g, " "));
  return flat.length <= max ? flat : `${flat.slice(0, Math.max(0, max - 1))}…`;
}

/** A table cell: on one line, control characters, newlines and tabs as escapes. */
function tableCell(text: string): string {
  // masked here, before the columns are padded (masked later, a line would lose its alignment)
  return printable(maskSecrets(text)).replace(/\n/g, "\\n").replace(/\t/g, "\\t");
}

/** A plain-text table: header row, then rows; columns padded to their widest cell. */
export function formatTable(headers: readonly string[], shownRows: readonly (readonly string[])[]): string {
  const rows = shownRows.map((row) => row.map(tableCell));
  const widths = headers.map((header, i) => Math.max(header.length, ...rows.map((row) => (row[i] ?? "").length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  return [line(headers), ...rows.map(line)].join("\n");
}

/** Prints a table, or `empty` when there are no rows. */
export function printTable(headers: readonly string[], rows: readonly (readonly string[])[], empty: string): void {
  // (the cells are masked by formatTable: not the whole lines again)
  process.stdout.write(`${rows.length === 0 ? maskSecrets(empty) : formatTable(headers, rows)}\n`);
}

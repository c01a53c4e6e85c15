/**
 * The stored form of an error (what results, logs and the DLQ keep of anything a task threw).
 * @module
 */
import { types } from "node:util";
import type { StoredError } from "../backends/backend.js";
import { toError } from "../errors.js";
import { maskUrlsIn } from "./url.js";

/** Longest message or stack kept of an error. */
export const MAX_STORED_TEXT = 8192;

/** The stored type of a thrown value that is not an error (a string, a number, a plain object). */
export const NON_ERROR_TYPE = "NonError";

/**
 * An Error, or an object that looks like one (a string `message` and a string `name` or
 * `stack`: an error of another realm, or a library's error-shaped object).
 */
export function isErrorLike(value: unknown): boolean {
  if (isError(value)) return true;
  if (value === null || typeof value !== "object") return false;
  const { message, name, stack } = value as { message?: unknown; name?: unknown; stack?: unknown };
  return typeof message === "string" && (typeof name === "string" || typeof stack === "string");
}

/**
 * Converts anything thrown into the stored form of an error. Never throws, whatever was
 * thrown (a `name` or `stack` that is not a string, getters that throw, a Proxy...).
 */
export function toStoredError(thrown: unknown): StoredError {
  try {
    if (!isErrorLike(thrown)) {
      // `throw "oops"`, `throw 42`, `throw { status: 500 }`: its text, typed as what it is; no
      // stack (one made up here would point into Chicory, not where it was thrown)
      return { type: NON_ERROR_TYPE, message: maskUrlsIn(cut(toError(thrown).message)) };
    }
    // an error of another realm or an error-shaped object is read as it is; a part that
    // cannot be read (a getter that throws) is left out, not the error
    const error = thrown as Error;
    const name: unknown = readOr(() => error.name, undefined);
    const constructorName: unknown = isError(thrown) ? readOr(() => error.constructor?.name, undefined) : undefined;
    const type =
      typeof name === "string" && name !== "" && name !== "Error"
        ? name
        : typeof constructorName === "string" && constructorName !== ""
          ? constructorName
          : "Error";
    const stack = readOr(() => withCauses(error, error.stack), undefined);
    const code = codeOf(error);
    // passwords of URLs in error texts never reach logs, results or the DLQ (RELIABILITY A10)
    return {
      type: type.slice(0, 200),
      message: maskUrlsIn(cut(readOr(() => String(error.message), "(the error's message cannot be read)"))),
      stack: typeof stack === "string" ? maskUrlsIn(stack.slice(0, MAX_STORED_TEXT)) : undefined,
      ...(code === undefined ? {} : { code }),
    };
  } catch {
    return { type: NON_ERROR_TYPE, message: "the task threw a value that cannot be read as an error" };
  }
}

/** An Error of any realm, told before any property is read (a getter may throw). */
function isError(value: unknown): boolean {
  return value instanceof Error || types.isNativeError(value);
}

/** What `read` returns, or `fallback` when it throws. */
function readOr<T, F>(read: () => T, fallback: F): T | F {
  try {
    return read();
  } catch {
    return fallback;
  }
}

/** `text` cut to {@link MAX_STORED_TEXT} characters, ending with `…` when it was cut. */
function cut(text: string): string {
  return text.length > MAX_STORED_TEXT ? `${text.slice(0, MAX_STORED_TEXT - 1)}…` : text;
}

/** Longest `code` kept of an error. */
const MAX_CODE_LENGTH = 200;

/**
 * The error's `code` as a string when it is a non-empty string or a finite number (Node's
 * `"ECONNREFUSED"`, a driver's `"23505"` or `1062`); undefined otherwise, or when reading it throws.
 */
function codeOf(error: Error): string | undefined {
  try {
    const code: unknown = (error as { code?: unknown }).code;
    if (typeof code === "number" && Number.isFinite(code)) return String(code);
    if (typeof code === "string" && code !== "") return maskUrlsIn(code.slice(0, MAX_CODE_LENGTH));
  } catch {
    // a getter that throws: no code
  }
  return undefined;
}

/** Most causes (and inner errors of an `AggregateError`) written after a stack. */
const MAX_CAUSES = 5;

/**
 * `stack` followed by the error's `cause` chain and, for an `AggregateError`, its inner errors,
 * as Node prints them ("Caused by: …", "[errors[0]] …"); `stack` as it is when there are none.
 */
function withCauses(error: Error, stack: unknown): unknown {
  // Never at the cost of the error itself: a cause or `errors` getter that throws, a Proxy…
  // leave the stack as it is.
  try {
    const inner = error instanceof AggregateError && Array.isArray(error.errors) ? error.errors : [];
    if (error.cause === undefined && inner.length === 0) return stack;
    let text = typeof stack === "string" ? stack : `${String(error.name)}: ${String(error.message)}`;
    inner.slice(0, MAX_CAUSES).forEach((e: unknown, i: number) => {
      text += `\n[errors[${i}]] ${describeThrown(e)}`;
    });
    const seen = new Set<unknown>([error]);
    let cause: unknown = error.cause;
    for (let depth = 0; cause !== undefined && depth < MAX_CAUSES && !seen.has(cause); depth++) {
      if (text.length >= MAX_STORED_TEXT) break;
      seen.add(cause);
      text += `\nCaused by: ${describeThrown(cause)}`;
      cause = cause instanceof Error ? cause.cause : undefined;
    }
    return text;
  } catch {
    return stack;
  }
}

/** An error's own stack; a value that is not an Error as its text alone (no stack of ours). */
function describeThrown(thrown: unknown): string {
  if (thrown instanceof Error) {
    return typeof thrown.stack === "string" ? thrown.stack : `${String(thrown.name)}: ${String(thrown.message)}`;
  }
  return toError(thrown).message;
}

/** An error nobody caught, for the log: its stack (or text), URL passwords masked. */
export function strayText(error: unknown): string {
  let text: string;
  try {
    text = describeThrown(error);
  } catch {
    text = "(a value that cannot be shown)"; // e.g. a getter that throws
  }
  return maskUrlsIn(text);
}

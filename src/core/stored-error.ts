/**
 * The stored form of an error (what results, logs and the DLQ keep of anything a task threw).
 * @module
 */
import type { StoredError } from "../backends/backend.js";
import { toError } from "../errors.js";
import { maskUrlsIn } from "./url.js";

/** Longest message or stack kept of an error. */
export const MAX_STORED_TEXT = 8192;

/**
 * Converts anything thrown into the stored form of an error. Never throws, whatever was
 * thrown (a `name` or `stack` that is not a string, getters that throw, a Proxy...).
 */
export function toStoredError(thrown: unknown): StoredError {
  try {
    const error = toError(thrown);
    const name: unknown = error.name;
    const constructorName: unknown = error.constructor?.name;
    const type =
      typeof name === "string" && name !== "" && name !== "Error"
        ? name
        : typeof constructorName === "string" && constructorName !== ""
          ? constructorName
          : "Error";
    const stack: unknown = error.stack;
    // passwords of URLs in error texts never reach logs, results or the DLQ (RELIABILITY A10)
    return {
      type: type.slice(0, 200),
      message: maskUrlsIn(String(error.message).slice(0, MAX_STORED_TEXT)),
      stack: typeof stack === "string" ? maskUrlsIn(stack.slice(0, MAX_STORED_TEXT)) : undefined,
    };
  } catch {
    return { type: "Error", message: "the task threw a value that cannot be read as an error" };
  }
}

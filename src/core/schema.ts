/**
 * Standard Schema validation (zod, valibot, arktype...): one function that awaits async
 * validators and turns issues into a {@link ValidationError}.
 * @module
 */
import type { StandardSchemaV1 } from "@standard-schema/spec";
import { ValidationError, type ValidationIssue } from "../errors.js";
import { toStoredError } from "./stored-error.js";
import { isThenable } from "./thenable.js";

/**
 * Validates `value` against `schema` and returns the (possibly coerced) output.
 * @param what names the validated thing in the error, e.g. `task "send_email" arguments`
 * @throws ValidationError listing the issues, or naming what the schema threw (its `cause`)
 */
export async function validateWithSchema<S extends StandardSchemaV1>(
  schema: S,
  value: unknown,
  what: string,
): Promise<StandardSchemaV1.InferOutput<S>> {
  let result: unknown;
  try {
    const returned: unknown = schema["~standard"].validate(value);
    result = isThenable(returned) ? await returned : returned; // (a promise of another realm too)
  } catch (thrown) {
    // A schema that throws (a zod `.transform` or `.refine` that throws instead of adding an
    // issue) fails validation as well: not retried in the worker, a ValidationError at delay().
    const { type, message } = toStoredError(thrown); // (never throws, whatever was thrown)
    throw new ValidationError(`${what} failed validation: the schema threw ${type}: ${message}`, [], {
      cause: thrown,
    });
  }
  let issues: ValidationIssue[];
  try {
    if (result === null || typeof result !== "object") throw new TypeError(`got ${describeValue(result)}`);
    const reported: unknown = (result as { issues?: unknown }).issues;
    if (reported === undefined || reported === null) {
      if (!("value" in result)) throw new TypeError("it has neither a value nor issues");
      return (result as { value: StandardSchemaV1.InferOutput<S> }).value;
    }
    if (!Array.isArray(reported)) throw new TypeError(`its issues are ${describeValue(reported)}, not an array`);
    issues = reported.map(issueOf);
  } catch (bad) {
    // A schema library's bug (or a hand-written schema's) is no reason to run the task again.
    throw new ValidationError(
      `${what} failed validation: the schema's answer is not a Standard Schema result ({ value } or { issues: [...] }): ${toStoredError(bad).message}`,
      [],
      { cause: bad },
    );
  }
  const detail =
    issues
      .slice(0, 5)
      .map((i) => (i.path?.length ? `${i.path.map(String).join(".")}: ${i.message}` : i.message))
      .join("; ") || "the schema reported no issue it could describe";
  throw new ValidationError(`${what} failed validation: ${detail}`, issues);
}

/** One issue as a {@link ValidationError} keeps it: its message, and its path's keys. */
function issueOf(issue: unknown): ValidationIssue {
  if (issue === null || typeof issue !== "object") throw new TypeError(`an issue is ${describeValue(issue)}`);
  const { message, path } = issue as { message?: unknown; path?: unknown };
  if (path !== undefined && !Array.isArray(path)) throw new TypeError(`an issue's path is ${describeValue(path)}`);
  return {
    message: typeof message === "string" ? message : describeValue(message),
    path: path?.map((p: unknown) => {
      const key = p !== null && typeof p === "object" ? (p as { key?: unknown }).key : p;
      return typeof key === "string" || typeof key === "number" || typeof key === "symbol" ? key : describeValue(key);
    }),
  };
}

/** A short description of a value that is not what was expected (for errors); never throws. */
export function describeValue(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value.slice(0, 50));
  if (typeof value === "function") return "a function";
  if (value === null || typeof value !== "object") return String(value);
  return Array.isArray(value) ? "an array" : "an object";
}

/**
 * Standard Schema validation (zod, valibot, arktype...): one function that awaits async
 * validators and turns issues into a {@link ValidationError}.
 * @module
 */
import type { StandardSchemaV1 } from "@standard-schema/spec";
import { ValidationError } from "../errors.js";

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
  let result: StandardSchemaV1.Result<StandardSchemaV1.InferOutput<S>>;
  try {
    const returned = schema["~standard"].validate(value);
    result = returned instanceof Promise ? await returned : returned;
  } catch (thrown) {
    // A schema that throws (a zod `.transform` or `.refine` that throws instead of adding an
    // issue) fails validation as well: not retried in the worker, a ValidationError at delay().
    const reason = thrown instanceof Error ? `${thrown.name}: ${thrown.message}` : String(thrown);
    throw new ValidationError(`${what} failed validation: the schema threw ${reason}`, [], { cause: thrown });
  }
  if (result.issues) {
    const issues = result.issues.map((issue) => ({
      message: issue.message,
      path: issue.path?.map((p) => (typeof p === "object" ? p.key : p)),
    }));
    const detail = issues
      .slice(0, 5)
      .map((i) => (i.path?.length ? `${i.path.map(String).join(".")}: ${i.message}` : i.message))
      .join("; ");
    throw new ValidationError(`${what} failed validation: ${detail}`, issues);
  }
  return result.value as StandardSchemaV1.InferOutput<S>;
}

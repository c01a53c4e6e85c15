import { ValidationError } from "../errors.js";

const NAME = /^[A-Za-z0-9._:-]{1,128}$/;

/** True when `name` is a valid queue or task name: 1-128 of `[A-Za-z0-9._:-]`. */
export function isValidName(name: unknown): name is string {
  return typeof name === "string" && NAME.test(name);
}

/**
 * Throws a {@link ValidationError} unless `name` is a valid queue or task name.
 * @param kind "queue" or "task", used in the message
 */
export function assertValidName(name: unknown, kind: "queue" | "task"): asserts name is string {
  if (!isValidName(name)) {
    const shown =
      typeof name === "string" ? JSON.stringify(name.slice(0, 140)) : name === null ? "null" : String(typeof name);
    throw new ValidationError(`${kind} name ${shown} is invalid: use 1-128 of [A-Za-z0-9._:-]`);
  }
}

/** The stored form of what a task threw: causes and inner errors are kept in its stack text. */
import { runInNewContext } from "node:vm";
import { describe, expect, it } from "vitest";
import { MAX_STORED_TEXT, toStoredError } from "../../src/core/stored-error.js";

describe("toStoredError", () => {
  it("keeps an error's cause chain after its stack, as Node prints it", () => {
    const root = new TypeError("socket hang up: redis://app:s3cret@db:6379/0");
    const error = new Error("charge failed", { cause: new Error("gateway timeout", { cause: root }) });
    const stored = toStoredError(error);
    expect(stored.type).toBe("Error");
    expect(stored.message).toBe("charge failed");
    expect(stored.stack).toMatch(/^Error: charge failed\n/);
    expect(stored.stack).toMatch(/\nCaused by: Error: gateway timeout\n[\s\S]*\nCaused by: TypeError: socket hang up/);
    expect(stored.stack).not.toContain("s3cret"); // masked in causes too
  });

  it("keeps the inner errors of an AggregateError, and a cause that is not an Error", () => {
    const stored = toStoredError(new AggregateError([new RangeError("a"), "b"], "all failed", { cause: { code: 7 } }));
    expect(stored.type).toBe("AggregateError");
    expect(stored.stack).toMatch(/\n\[errors\[0\]\] RangeError: a\n/);
    expect(stored.stack).toMatch(/\n\[errors\[1\]\] b$/m);
    // a value that is not an Error: its text alone, not a stack made up here
    expect(stored.stack).toMatch(/\nCaused by: \{"code":7\}$/);
  });

  it("a thrown value that is not an error is stored as NonError with its text and no stack", () => {
    expect(toStoredError("card declined")).toEqual({ type: "NonError", message: "card declined" });
    expect(toStoredError(42)).toEqual({ type: "NonError", message: "42" });
    expect(toStoredError({ status: 500, url: "redis://u:pw@h" })).toEqual({
      type: "NonError",
      message: '{"status":500,"url":"redis://u:***@h"}',
    });
    expect(toStoredError(undefined)).toEqual({ type: "NonError", message: "undefined" });
    // error-shaped objects (another realm's errors, libraries' own) keep their name and stack
    expect(toStoredError({ name: "HttpError", message: "502", stack: "HttpError: 502\n    at x" })).toEqual({
      type: "HttpError",
      message: "502",
      stack: "HttpError: 502\n    at x",
    });
    expect(toStoredError({ name: "Error", message: "plain" })).toMatchObject({ type: "Error", message: "plain" });
  });

  it("keeps an error's string or number code, and no other kind", () => {
    const refused = Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), { code: "ECONNREFUSED" });
    expect(toStoredError(refused).code).toBe("ECONNREFUSED");
    expect(toStoredError(Object.assign(new Error("dup"), { code: 1062 })).code).toBe("1062");
    for (const code of [undefined, "", { nested: true }, Number.NaN, ["x"]]) {
      expect(toStoredError(Object.assign(new Error("x"), { code }))).not.toHaveProperty("code");
    }
    const throwing = new Error("outer");
    Object.defineProperty(throwing, "code", {
      get() {
        throw new Error("getter");
      },
    });
    expect(toStoredError(throwing)).toEqual({ type: "Error", message: "outer", stack: throwing.stack });
    expect(toStoredError(Object.assign(new Error("x"), { code: "E".repeat(500) })).code).toHaveLength(200);
  });

  it("keeps the error when reading its cause throws", () => {
    const error = new Error("outer");
    Object.defineProperty(error, "cause", {
      get() {
        throw new Error("getter");
      },
    });
    expect(toStoredError(error)).toEqual({ type: "Error", message: "outer", stack: error.stack });
  });

  it("keeps an Error's type and stack when reading its message or name throws", () => {
    class QuotaError extends Error {}
    const error = new QuotaError("hidden");
    const stack = error.stack;
    for (const field of ["message", "name"]) {
      Object.defineProperty(error, field, {
        get() {
          throw new Error("getter");
        },
      });
    }
    // before, the whole error became a NonError "cannot be read"
    expect(toStoredError(error)).toEqual({
      type: "QuotaError",
      message: "(the error's message cannot be read)",
      stack,
    });
    // the same for an Error of another realm
    const foreign = runInNewContext("class QuotaError extends Error {}; new QuotaError('hidden')") as Error;
    Object.defineProperty(foreign, "message", {
      get() {
        throw new Error("getter");
      },
    });
    expect(toStoredError(foreign)).toMatchObject({
      type: "QuotaError",
      message: "(the error's message cannot be read)",
    });
  });

  it("ends on a cyclic cause chain and stays within the stored length", () => {
    const a = new Error("a");
    const b = new Error("b", { cause: a });
    (a as { cause?: unknown }).cause = b;
    const stored = toStoredError(a);
    expect(stored.stack?.match(/Caused by/g)).toHaveLength(1);
    const long = new Error("x".repeat(MAX_STORED_TEXT), { cause: new Error("y".repeat(MAX_STORED_TEXT)) });
    expect(toStoredError(long).stack?.length).toBeLessThanOrEqual(MAX_STORED_TEXT);
  });

  it("marks a message it cut: it ends with an ellipsis; one that fits is kept whole", () => {
    const cut = toStoredError(new Error("x".repeat(MAX_STORED_TEXT + 1))).message;
    expect(cut).toHaveLength(MAX_STORED_TEXT);
    expect(cut.endsWith("x…")).toBe(true);
    expect(toStoredError("y".repeat(MAX_STORED_TEXT * 2)).message.endsWith("…")).toBe(true);
    expect(toStoredError(new Error("z".repeat(MAX_STORED_TEXT))).message).toBe("z".repeat(MAX_STORED_TEXT));
  });

  it("leaves an error without causes as it was", () => {
    const error = new Error("plain");
    expect(toStoredError(error)).toEqual({ type: "Error", message: "plain", stack: error.stack });
  });
});

import { describe, expect, it } from "vitest";
import { TaskContext } from "../../src/context.js";
import { ConfigurationError, MaxRetriesExceededError, RetryError, ValidationError } from "../../src/errors.js";
import { Chicory, type TaskOptions } from "../../src/index.js";
import { RetryPolicy, type RetryPolicyOptions } from "../../src/retry.js";

describe("RetryPolicy", () => {
  it("has the SPEC defaults", () => {
    const p = new RetryPolicy();
    expect([p.maxRetries, p.retryDelay, p.backoff, p.maxDelay, p.jitter]).toEqual([3, 1, "exponential", 3600, true]);
  });

  it("computes fixed, linear and exponential delays capped by maxDelay", () => {
    const base = { retryDelay: 2, jitter: false, maxDelay: 10 } as const;
    const fixed = new RetryPolicy({ ...base, backoff: "fixed" });
    const linear = new RetryPolicy({ ...base, backoff: "linear" });
    const exp = new RetryPolicy({ ...base, backoff: "exponential" });
    expect([1, 2, 3, 4].map((n) => fixed.calculateDelay(n))).toEqual([2, 2, 2, 2]);
    expect([1, 2, 3, 4, 9].map((n) => linear.calculateDelay(n))).toEqual([2, 4, 6, 8, 10]);
    expect([1, 2, 3, 4].map((n) => exp.calculateDelay(n))).toEqual([2, 4, 8, 10]);
  });

  it("gives a number for any attempt: no NaN past 2 ** 1024, with a zero delay, or for NaN", () => {
    const zero = new RetryPolicy({ retryDelay: 0, jitter: false, maxRetries: 5000 });
    const one = new RetryPolicy({ retryDelay: 1, jitter: false, maxDelay: 60 });
    expect([1, 1025, 5000, Number.POSITIVE_INFINITY, Number.NaN].map((n) => zero.calculateDelay(n))).toEqual([
      0, 0, 0, 0, 0,
    ]);
    expect([1025, 5000, Number.POSITIVE_INFINITY].map((n) => one.calculateDelay(n))).toEqual([60, 60, 60]);
    expect(one.calculateDelay(Number.NaN)).toBe(1);
    expect(new RetryPolicy({ retryDelay: 0, backoff: "linear" }).calculateDelay(Number.POSITIVE_INFINITY)).toBe(0);
  });

  it("applies ±25 % jitter", () => {
    const p = new RetryPolicy({ retryDelay: 4, backoff: "fixed" });
    expect(p.calculateDelay(1, () => 0)).toBe(3);
    expect(p.calculateDelay(1, () => 1)).toBe(5);
  });

  it("never lets jitter take a delay past maxDelay", () => {
    const p = new RetryPolicy({ retryDelay: 10, maxDelay: 10, backoff: "fixed" });
    expect(p.calculateDelay(5, () => 1)).toBe(10);
    expect(p.calculateDelay(5, () => 0)).toBe(7.5);
    expect(p.calculateDelay(5, () => 0.5)).toBe(8.75); // spread below the cap, not piled on it
  });

  it("a retryDelay over the default maxDelay raises the default instead of failing", () => {
    const p = new RetryPolicy({ retryDelay: "2h", backoff: "fixed", jitter: false });
    expect([p.retryDelay, p.maxDelay, p.calculateDelay(3)]).toEqual([7200, 7200, 7200]);
    expect(() => new RetryPolicy({ retryDelay: "2h", maxDelay: "1h" })).toThrow(/maxDelay/);
  });

  it("accepts durations with units", () => {
    expect(new RetryPolicy({ retryDelay: "250ms", maxDelay: "1m" }).retryDelay).toBe(0.25);
  });

  it("matches retryOn / ignoreOn by name or constructor, ignoreOn winning", () => {
    class NetworkError extends Error {}
    const p = new RetryPolicy({ retryOn: ["NetworkError", "TypeError"], ignoreOn: ["TypeError"] });
    expect(p.shouldRetry(new NetworkError("x"))).toBe(true);
    expect(p.shouldRetry(new TypeError("x"))).toBe(false);
    expect(p.shouldRetry(new Error("x"))).toBe(false);
    expect(new RetryPolicy().shouldRetry(new Error("x"))).toBe(true);
    expect(new RetryPolicy({ ignoreOn: ["ValidationError"] }).shouldRetry(new ValidationError("x"))).toBe(false);
  });

  it("a thrown value that is not an error answers to NonError, the type its stored error shows", () => {
    const ignoring = new RetryPolicy({ ignoreOn: ["NonError"] });
    const retrying = new RetryPolicy({ retryOn: ["NonError"] });
    for (const thrown of ["card declined", 42, { status: 503 }, null, undefined]) {
      expect(ignoring.shouldRetry(thrown)).toBe(false); // before: true
      expect(retrying.shouldRetry(thrown)).toBe(true); // before: false
    }
    expect(ignoring.shouldRetry(new Error("x"))).toBe(true);
    expect(retrying.shouldRetry(new Error("x"))).toBe(false);
    const { proxy, revoke } = Proxy.revocable({}, {});
    revoke();
    expect(ignoring.shouldRetry(proxy)).toBe(false);
  });

  it("rejects invalid options naming them", () => {
    expect(() => new RetryPolicy({ maxRetries: -1 })).toThrow(/maxRetries/);
    expect(() => new RetryPolicy({ retryDelay: "soon" })).toThrow(ConfigurationError);
    expect(() => new RetryPolicy({ retryDelay: 10, maxDelay: 1 })).toThrow(/maxDelay/);
  });
});

describe("TaskContext", () => {
  const make = (retries: number, policy = new RetryPolicy({ maxRetries: 2 })) =>
    new TaskContext({
      taskId: "id",
      taskName: "t",
      retries,
      retryPolicy: policy,
      signal: new AbortController().signal,
    });

  it("reports its retry budget", () => {
    const ctx = make(1);
    expect([ctx.maxRetries, ctx.remainingRetries, ctx.isLastRetry]).toEqual([2, 1, false]);
    expect(make(2).isLastRetry).toBe(true);
  });

  it("retry() throws RetryError with countdown, or MaxRetriesExceededError when spent", () => {
    try {
      make(0).retry({ countdown: 5 });
    } catch (e) {
      expect(e).toBeInstanceOf(RetryError);
      expect((e as RetryError).countdown).toBe(5);
      expect((e as RetryError).retries).toBe(0);
    }
    expect(() => make(2).retry()).toThrow(MaxRetriesExceededError);
  });

  it("retry({ error }) with no retries left names that error in the message", () => {
    class GatewayDown extends Error {
      override name = "GatewayDown";
    }
    expect(() => make(2).retry({ error: new GatewayDown("502") })).toThrow(
      /no retries left \(2 of 2 done\); last error: GatewayDown: 502$/,
    );
    expect(() => make(2).retry({ error: "plain text" })).toThrow(/last error: NonError: plain text$/);
  });

  it("retry({ error }) rethrows an error the policy does not retry", () => {
    const ctx = make(0, new RetryPolicy({ ignoreOn: ["TypeError"] }));
    const error = new TypeError("no");
    expect(() => ctx.retry({ error })).toThrow(error);
  });

  it("fail() throws the error", () => {
    expect(() => make(0).fail(new Error("bad"))).toThrow("bad");
  });
});

describe("RetryPolicy option checks", () => {
  it("refuses options that would be misread, naming them", () => {
    const bad: Array<[Record<string, unknown>, RegExp]> = [
      // a lone string was spread to its letters: nothing was ever retried
      [{ retryOn: "TypeError" }, /retryPolicy.retryOn: expected an array of error names/],
      [{ ignoreOn: [1] }, /retryPolicy.ignoreOn: expected an array of error names/],
      // "false" is truthy: jitter stayed on
      [{ jitter: "false" }, /retryPolicy.jitter: expected true or false, got "false"/],
      [{ maxRetries: Number.POSITIVE_INFINITY }, /maxRetries: expected an integer from 0 to 1000000, got Infinity/],
      [{ max_retries: 5 }, /retryPolicy: unknown option "max_retries"/],
      // a retry's eta would be past year 9999 (or past Date's range): its settle failed for good
      [{ retryDelay: 5e11 }, /retryPolicy.retryDelay: at most 316224000 s \(ten years\)/],
      [{ retryDelay: 60, maxDelay: 1e13 }, /retryPolicy.maxDelay: at most 316224000 s/],
      // null read as "left out": 3 retries for a caller who meant none
      [{ maxRetries: null }, /retryPolicy.maxRetries: null is not a value; leave the option out/],
      [{ jitter: null }, /retryPolicy.jitter: null is not a value/],
    ];
    for (const [options, message] of bad) {
      expect(() => new RetryPolicy(options as RetryPolicyOptions)).toThrow(ConfigurationError);
      expect(() => new RetryPolicy(options as RetryPolicyOptions)).toThrow(message);
    }
    // a task's retryPolicy or queue of null read as "left out" too
    const app = new Chicory({ broker: "memory", config: { env: {} } });
    expect(() => app.task({ name: "a", retryPolicy: null } as unknown as TaskOptions, async () => 1)).toThrow(
      /task a retryPolicy: null is not a value; leave the option out for its default \(no retries\)/,
    );
    expect(() => app.task({ name: "b", queue: null } as unknown as TaskOptions, async () => 1)).toThrow(
      /task b queue: null is not a value/,
    );
    // a policy copied from another one, and the longest delays, are fine
    const longest = new RetryPolicy({ retryDelay: "3660d", jitter: false, retryOn: ["TimeoutError"] });
    expect(new RetryPolicy(longest).retryOn).toEqual(["TimeoutError"]);
    expect(longest.calculateDelay(40)).toBe(316_224_000);
  });
});

/**
 * Retry policies (SPEC §5): how many retries, how long between them, and which errors
 * deserve one.
 * @module
 */
import { type Duration, MAX_DELAY_SECONDS, toSeconds } from "./core/duration.js";
import { checkChoice, checkFlag, checkInt, checkOptionKeys } from "./core/env.js";
import { isErrorLike, NON_ERROR_TYPE } from "./core/stored-error.js";
import { ConfigurationError } from "./errors.js";

/** How the delay grows between attempts. */
export type BackoffStrategy = "fixed" | "linear" | "exponential";

/** Options of a {@link RetryPolicy}; durations in seconds or unit strings. */
export interface RetryPolicyOptions {
  /** Retries after the first attempt (default 3). */
  maxRetries?: number | undefined;
  /** Base delay (default 1 s). */
  retryDelay?: Duration | undefined;
  /** Growth of the delay (default `exponential`: delay x 2^(attempt-1)). */
  backoff?: BackoffStrategy | undefined;
  /** Upper bound of a delay, jitter included (default 3600 s, or `retryDelay` when longer). */
  maxDelay?: Duration | undefined;
  /** Randomize each delay by ±25 % (default true), never past `maxDelay`. */
  jitter?: boolean | undefined;
  /**
   * Retry only errors with one of these names: `error.name`, or the name of the error's class or
   * of any class it extends (`"Error"` matches every `Error`); `"NonError"` for a thrown value
   * that is not an error (a string, a plain object).
   */
  retryOn?: readonly string[] | undefined;
  /** Never retry errors with one of these names (matched as `retryOn`); wins over `retryOn`. */
  ignoreOn?: readonly string[] | undefined;
}

const BACKOFFS: readonly BackoffStrategy[] = ["fixed", "linear", "exponential"];

const OPTION_NAMES = new Set(["maxRetries", "retryDelay", "backoff", "maxDelay", "jitter", "retryOn", "ignoreOn"]);

/** `retryOn` / `ignoreOn`: an array of error names (a lone string would be spread to letters). */
function errorNameList(value: unknown, name: string): readonly string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || !value.every((n) => typeof n === "string")) {
    throw new ConfigurationError(
      `retryPolicy.${name}: expected an array of error names (["TimeoutError"]), got ${typeof value === "string" ? JSON.stringify(value.slice(0, 40)) : typeof value}`,
    );
  }
  return [...value];
}

/**
 * When and how a failed task is retried.
 * @example
 * new RetryPolicy({ maxRetries: 5, retryDelay: "2s", backoff: "exponential", ignoreOn: ["ValidationError"] })
 */
export class RetryPolicy {
  /** Retries after the first attempt. */
  readonly maxRetries: number;
  /** Base delay in seconds. */
  readonly retryDelay: number;
  /** Growth of the delay. */
  readonly backoff: BackoffStrategy;
  /** Upper bound of a delay in seconds, jitter included. */
  readonly maxDelay: number;
  /** Whether delays are randomized by ±25 %. */
  readonly jitter: boolean;
  /** Error names that are retried (empty: all). */
  readonly retryOn: readonly string[];
  /** Error names that are never retried. */
  readonly ignoreOn: readonly string[];

  /**
   * @throws ConfigurationError naming the option when one is unknown or of the wrong type, a
   * delay is over ten years, or `maxDelay` is below `retryDelay`
   */
  constructor(options: RetryPolicyOptions = {}) {
    if (options === null || typeof options !== "object") {
      throw new ConfigurationError(`retryPolicy: expected an object of options, got ${typeof options}`);
    }
    if (!(options instanceof RetryPolicy)) checkOptionKeys(options, "retryPolicy", OPTION_NAMES);
    for (const name of OPTION_NAMES) {
      // a JavaScript caller's null would read as "left out" (maxRetries: null gave 3 retries)
      if ((options as Record<string, unknown>)[name] === null) {
        throw new ConfigurationError(`retryPolicy.${name}: null is not a value; leave the option out for its default`);
      }
    }
    this.maxRetries = checkInt(options.maxRetries ?? 3, "retryPolicy.maxRetries", 0, 1_000_000);
    this.retryDelay = toSeconds(options.retryDelay ?? 1, "retryPolicy.retryDelay");
    this.backoff = checkChoice(options.backoff ?? "exponential", "retryPolicy.backoff", BACKOFFS);
    // The default bound never undercuts a longer base delay the caller chose.
    this.maxDelay =
      options.maxDelay === undefined
        ? Math.max(3600, this.retryDelay)
        : toSeconds(options.maxDelay, "retryPolicy.maxDelay");
    if (this.maxDelay < this.retryDelay) {
      throw new ConfigurationError("retryPolicy.maxDelay must be >= retryPolicy.retryDelay");
    }
    // a message's retry must be schedulable: its eta is a date, at most ten years ahead
    for (const [name, seconds] of [
      ["retryDelay", this.retryDelay],
      ["maxDelay", this.maxDelay],
    ] as const) {
      if (seconds > MAX_DELAY_SECONDS) {
        throw new ConfigurationError(
          `retryPolicy.${name}: at most ${MAX_DELAY_SECONDS} s (ten years), got ${seconds} s`,
        );
      }
    }
    this.jitter = checkFlag(options.jitter ?? true, "retryPolicy.jitter");
    this.retryOn = errorNameList(options.retryOn, "retryOn");
    this.ignoreOn = errorNameList(options.ignoreOn, "ignoreOn");
  }

  /** A policy that never retries. */
  static none(): RetryPolicy {
    return new RetryPolicy({ maxRetries: 0 });
  }

  /**
   * Delay in seconds before retry number `attempt` (1 = the first retry).
   * @param random source of randomness for the jitter (tests)
   */
  calculateDelay(attempt: number, random: () => number = Math.random): number {
    const n = Number.isNaN(attempt) ? 1 : Math.max(1, Math.floor(attempt));
    let delay: number;
    if (this.backoff === "fixed" || this.retryDelay === 0) delay = this.retryDelay;
    else if (this.backoff === "linear") delay = this.retryDelay * n;
    else delay = this.retryDelay * 2 ** (n - 1);
    // 2 ** 1024 is Infinity: capped, never NaN
    delay = Math.min(delay, this.maxDelay);
    if (this.jitter) {
      // uniform over ±25 %, the part past maxDelay cut off (not piled up on maxDelay: retries
      // capped together still spread)
      const low = delay * 0.75;
      delay = low + random() * (Math.min(delay * 1.25, this.maxDelay) - low);
    }
    return Math.max(0, delay);
  }

  /** Whether `error` may be retried according to `retryOn` / `ignoreOn`. */
  shouldRetry(error: unknown): boolean {
    const names = errorNames(error);
    if (this.ignoreOn.some((n) => names.includes(n))) return false;
    if (this.retryOn.length === 0) return true;
    return this.retryOn.some((n) => names.includes(n));
  }
}

/**
 * The names an error answers to: its `name` and its constructor chain's names (those read
 * before a getter or Proxy trap threw: a thrown value that cannot be read has fewer names);
 * a thrown value that is not an error (`throw "declined"`, `throw { status: 503 }`) answers to
 * `NonError` too, the type its stored error shows.
 */
function errorNames(error: unknown): string[] {
  let isNonError: boolean;
  try {
    isNonError = !isErrorLike(error);
  } catch {
    isNonError = true; // stored as a NonError too
  }
  const names: string[] = isNonError ? [NON_ERROR_TYPE] : [];
  if (error === null || typeof error !== "object") return names;
  try {
    const name = (error as { name?: unknown }).name;
    if (typeof name === "string") names.push(name);
    let proto: unknown = Object.getPrototypeOf(error);
    while (proto && proto !== Object.prototype) {
      const ctorName: unknown = (proto as { constructor?: { name?: unknown } }).constructor?.name;
      if (typeof ctorName === "string" && ctorName !== "") names.push(ctorName);
      proto = Object.getPrototypeOf(proto);
    }
  } catch {
    // a getter or a Proxy trap threw: keep the names read so far
  }
  return names;
}

/**
 * The per-attempt task context (SPEC §5), given to handlers registered with `context: true`.
 * @module
 */
import { type Duration, MAX_DELAY_SECONDS, toSeconds } from "./core/duration.js";
import { checkOptionKeys, keysOf } from "./core/env.js";
import { guardListeners } from "./core/guarded-signal.js";
import { isErrorLike, NON_ERROR_TYPE, toStoredError } from "./core/stored-error.js";
import { MaxRetriesExceededError, RetryError, toError, ValidationError } from "./errors.js";
import type { RetryPolicy } from "./retry.js";

const nonRetryable = new WeakSet<object>();

/** True when `error` was thrown through `ctx.fail()` (never retried). */
export function isMarkedNonRetryable(error: unknown): boolean {
  return error !== null && typeof error === "object" && nonRetryable.has(error);
}

/** `Type: message` of an error given to `ctx.retry`, as it would be stored, bounded. */
export function describeCause(error: unknown): string {
  const { type, message } = toStoredError(error);
  const text = `${type}: ${message}`;
  return text.length > 2000 ? `${text.slice(0, 2000)}…` : text;
}

/** True when `countdown` is a usable retry countdown: seconds, finite, from 0 to ten years. */
export function isRetryCountdown(countdown: unknown): countdown is number {
  return (
    typeof countdown === "number" && Number.isFinite(countdown) && countdown >= 0 && countdown <= MAX_DELAY_SECONDS
  );
}

/** A `ctx.retry` countdown in seconds (a duration string is parsed); a ValidationError naming a bad one. */
function retryCountdownSeconds(countdown: unknown): number | undefined {
  if (countdown === undefined) return undefined;
  let seconds: unknown = countdown;
  if (typeof countdown === "string") {
    try {
      seconds = toSeconds(countdown, "ctx.retry: countdown");
    } catch {
      seconds = Number.NaN;
    }
  }
  if (isRetryCountdown(seconds)) return seconds;
  const shown =
    typeof countdown === "number"
      ? String(countdown)
      : typeof countdown === "string"
        ? JSON.stringify(countdown.slice(0, 40))
        : typeof countdown;
  throw new ValidationError(
    `ctx.retry: countdown must be a duration from 0 to ${MAX_DELAY_SECONDS} seconds (ten years): seconds or a string with a unit ("250ms", "5m"), got ${shown}`,
  );
}

/** Options of {@link TaskContext.retry}. */
export interface RetryOptions {
  /**
   * Time before the next attempt, from 0 to ten years: seconds, or a string with a unit
   * (`"250ms"`, `"5m"`; default: from the policy).
   */
  countdown?: Duration | undefined;
  /** The error that caused the retry; if the policy does not retry it, it is rethrown. */
  error?: unknown;
}

const RETRY_OPTION_KEYS = keysOf<RetryOptions>({ countdown: true, error: true });

/** Information about the running attempt, and control over its outcome. */
export class TaskContext {
  /** Task id. */
  readonly taskId: string;
  /** Registered task name. */
  readonly taskName: string;
  /** Retries done before this attempt (0 on the first attempt). */
  readonly retries: number;
  /** The task's retry policy. */
  readonly retryPolicy: RetryPolicy;
  /**
   * Aborts on the task's timeout, a lost lease (another worker took the message over) or a
   * forced shutdown (a `stop()` past its timeout). In a worker, a listener added to it that
   * throws is logged (error level, with the task's id) and does not end the process; a signal
   * derived from it (`AbortSignal.any`) is a target of its own, whose listeners are not guarded.
   */
  readonly signal: AbortSignal;
  /**
   * @param init.onListenerError when given, an error thrown by a listener added to
   * {@link TaskContext.signal} (or a promise such a listener returns that rejects) is handed to
   * it instead of escaping as an uncaught exception, which would end the process (the worker
   * passes one that logs it)
   */
  constructor(init: {
    taskId: string;
    taskName: string;
    retries: number;
    retryPolicy: RetryPolicy;
    signal: AbortSignal;
    onListenerError?: ((error: unknown) => void) | undefined;
  }) {
    this.taskId = init.taskId;
    this.taskName = init.taskName;
    this.retries = init.retries;
    this.retryPolicy = init.retryPolicy;
    this.signal = init.signal;
    if (init.onListenerError !== undefined) guardListeners(init.signal, init.onListenerError);
  }

  /** The policy's retry budget. */
  get maxRetries(): number {
    return this.retryPolicy.maxRetries;
  }

  /** True when no retry is left after this attempt. */
  get isLastRetry(): boolean {
    return this.retries >= this.maxRetries;
  }

  /** Retries left after this attempt. */
  get remainingRetries(): number {
    return Math.max(0, this.maxRetries - this.retries);
  }

  /**
   * Ends this attempt and schedules another one. Write `return ctx.retry(...)` (or `throw`):
   * TypeScript sees a `never` call end the function only when `ctx` has a written type, and
   * would otherwise add `undefined` to the task's result type.
   * @throws RetryError (the signal the worker acts on), MaxRetriesExceededError when the
   * budget is spent, `options.error` itself when the policy does not retry it, or
   * ValidationError when `countdown` is not a number of seconds from 0 to ten years, or
   * `options` is not an object or has a key other than `countdown` and `error` (the attempt
   * then fails for good, naming the bad value); an `Error` given as `options` is taken as
   * `{ error }`
   */
  retry(options: RetryOptions = {}): never {
    // `ctx.retry(error)` (as Celery's `self.retry(exc=error)`) from JavaScript: the error's own
    // keys (`code`, `errno`) are no options; it is the retry's cause
    if (options instanceof Error) return this.retry({ error: options });
    if (options === null || typeof options !== "object") {
      throw new ValidationError(
        `ctx.retry: options must be an object ({ countdown, error }) or nothing, got ${options === null ? "null" : typeof options}`,
      );
    }
    // (a misspelt key, `{ delay: 60 }`, would otherwise retry on the policy's delay, silently)
    checkOptionKeys(options, "ctx.retry", RETRY_OPTION_KEYS, {}, ValidationError);
    const countdown = retryCountdownSeconds(options.countdown);
    if (options.error !== undefined && !this.retryPolicy.shouldRetry(options.error)) {
      throw options.error;
    }
    if (this.isLastRetry) {
      // The last attempt's own error goes into the message: the stored result and the DLQ
      // entry keep only the message and stack of what was thrown, not its cause.
      const last = options.error === undefined ? "" : `; last error: ${describeCause(options.error)}`;
      throw new MaxRetriesExceededError(
        `task ${this.taskName} (${this.taskId}) has no retries left (${this.retries} of ${this.maxRetries} done)${last}`,
        { cause: options.error },
      );
    }
    throw new RetryError({
      retries: this.retries,
      maxRetries: this.maxRetries,
      countdown,
      reason: options.error,
    });
  }

  /**
   * Fails this attempt for good: no retry, whatever the policy says. The value is stored as a
   * thrown one is: an `Error` (of any realm) or an error-shaped object (a string `message` and
   * `name` or `stack`) with its type, message and stack; anything else (`ctx.fail("card
   * declined")`) as type `NonError`, its text, no stack.
   */
  fail(error: unknown): never {
    let err: object;
    try {
      err = isErrorLike(error) ? (error as object) : nonError(error);
    } catch {
      err = nonError(error); // a value that cannot even be looked at (a revoked Proxy, a throwing getter)
    }
    nonRetryable.add(err);
    throw err;
  }
}

/** A value that is no error, as an `Error` typed `NonError` with its text and no stack. */
function nonError(value: unknown): Error {
  const made = toError(value);
  made.name = NON_ERROR_TYPE;
  delete made.stack; // made up here, it would point into Chicory
  return made;
}

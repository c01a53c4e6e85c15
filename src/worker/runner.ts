/**
 * Runs one delivery up to its {@link Outcome}: decode, verify, find the task, validate,
 * ack first under `at_most_once`, run the handler with its timeout and abort signal,
 * validate the result. Makes no decision about what follows (that is `settle`), and never
 * throws: every problem becomes an outcome.
 * @module
 */
import type { ResultSizeLimit } from "../backends/backend.js";
import type { Delivery } from "../brokers/broker.js";
import { describeCause, isMarkedNonRetryable, isRetryCountdown, TaskContext } from "../context.js";
import { findNonJson } from "../core/json.js";
import { type MessageCodec, peekHead, type TaskMessage } from "../core/message.js";
import { validateWithSchema } from "../core/schema.js";
import { LongTimeout } from "../core/sleep.js";
import { toStoredError } from "../core/stored-error.js";
import { isThenable } from "../core/thenable.js";
import {
  MaxRetriesExceededError,
  RetryError,
  TaskAbortedError,
  TaskNotFoundError,
  TaskTimeoutError,
  ValidationError,
} from "../errors.js";
import type { Task } from "../task.js";
import type { Outcome } from "./settle.js";

/** What the runner needs from its worker. */
export interface RunnerEnv {
  readonly codec: MessageCodec;
  readonly tasks: ReadonlyMap<string, Task<readonly unknown[], unknown>>;
  readonly maxDeliveries: number;
  /** Largest result stored, in bytes of JSON (`maxResultBytes`). */
  readonly maxResultBytes: number;
  /** The result backend's server's own limit, when it binds below `maxResultBytes`. */
  readonly serverResultLimit?: ResultSizeLimit | undefined;
  /** Aborts when a forced shutdown gives up on running tasks. */
  readonly shutdownSignal: AbortSignal;
  /** Why the result backend cannot store records under a task id (see `Backend.taskIdProblem`). */
  taskIdProblem?(taskId: string): string | undefined;
  /**
   * Called once the attempt is about to run the handler (the worker arranges the `STARTED`
   * write). The handler does not wait for it; must not throw.
   */
  onStart(message: TaskMessage): void;
  /**
   * Resolves true when the task already has a final record (for a run whose message the broker
   * no longer holds: another worker that took it over finished it). Absent without a backend.
   */
  isFinished?(taskId: string): Promise<boolean>;
  /**
   * For a message delivered again: the value of an earlier run of that same message (known by
   * {@link Delivery.messageKey}) that succeeded in this worker, or undefined. Must not throw.
   */
  earlierSuccess?(delivery: Delivery, message: TaskMessage): { readonly value: unknown } | undefined;
  /**
   * Told of an error thrown by a listener the handler added to `ctx.signal` (or a rejection of
   * a promise one returned), which would otherwise be an uncaught exception. Must not throw.
   */
  onSignalListenerError?(message: TaskMessage, error: unknown): void;
}

/** The runner's answer for one delivery. */
export interface Attempt {
  readonly outcome: Outcome;
  /** The decoded message, when decoding succeeded. */
  readonly message: TaskMessage | null;
  /** The task, when found. */
  readonly task: Task<readonly unknown[], unknown> | null;
  /** True when the message was acknowledged before the run (`at_most_once`). */
  readonly alreadyAcked: boolean;
  /**
   * Settles when the handler does, when the attempt ended before it (a timeout, a lost lease, a
   * forced shutdown): a handler that does not stop on `ctx.signal` keeps its slot until then.
   */
  readonly lingering?: Promise<void> | undefined;
}

/** Runs one delivery to its outcome. Never throws. */
export async function runDelivery(delivery: Delivery, env: RunnerEnv): Promise<Attempt> {
  if (delivery.problem !== undefined) {
    // malformed as the broker holds it: which body or id to trust is not known
    delivery.markUntrusted?.();
    const error = { type: "MessageRejected", message: delivery.problem };
    return { outcome: { kind: "rejected", error, taskId: null }, message: null, task: null, alreadyAcked: false };
  }
  const decoded = env.codec.decode(delivery.body);
  if (!decoded.ok) {
    // With signing on, a message that is not verified may be forged: it must not settle anything
    // of the task id it claims (without signing, any writer can enqueue anything anyway)
    if (env.codec.isSigning) delivery.markUntrusted?.();
    const error = { type: "MessageRejected", message: `${decoded.reason}: ${decoded.error}` };
    // Too large for this worker's limit (a producer with a higher one), or a task message whose
    // shape this worker refuses (a newer producer's message version, a field of a wrong type),
    // that still names its id: without signing, that id gets the failure, so a get() ends.
    const hasHead = decoded.reason === "too_large" || decoded.reason === "schema_error";
    const head = hasHead && !env.codec.isSigning ? peekHead(delivery.body) : null;
    const outcome: Outcome = head
      ? { kind: "rejected", error, taskId: head.id, taskName: head.name }
      : { kind: "rejected", error, taskId: null };
    return { outcome, message: null, task: null, alreadyAcked: false };
  }
  const message = decoded.message;
  delivery.decodedTaskId?.(message.id);
  const idProblem = env.taskIdProblem?.(message.id);
  if (idProblem !== undefined) {
    // no record can be stored under it: rejected without one (its outcome could never be stored)
    const error = { type: "MessageRejected", message: `task id: ${idProblem}` };
    return { outcome: { kind: "rejected", error, taskId: null }, message: null, task: null, alreadyAcked: false };
  }
  // Delivered again after a run of it succeeded in this worker (its lease was lost meanwhile,
  // e.g. to an event loop blocked by the task, or its ack was lost): done, not run again (nor
  // rejected as poison); that run's result is stored unless the task has a SUCCESS record.
  const earlier = delivery.deliveryCount > 1 ? env.earlierSuccess?.(delivery, message) : undefined;
  if (earlier !== undefined) {
    const done = { kind: "done", value: earlier.value } as const;
    return { outcome: done, message, task: env.tasks.get(message.name) ?? null, alreadyAcked: false };
  }
  if (delivery.deliveryCount > env.maxDeliveries) {
    const error = {
      type: "PoisonMessage",
      message: `delivered ${delivery.deliveryCount} times (maxDeliveries ${env.maxDeliveries}); the worker running it probably crashed, could not store its outcome (see its log: "settling step failed"), had its event loop blocked for longer than the lease (claimMinIdle; on RabbitMQ, past the AMQP heartbeat) by a task, or ran longer than RabbitMQ's consumer_timeout, each time`,
    };
    return { outcome: { kind: "rejected", error, taskId: message.id }, message, task: null, alreadyAcked: false };
  }
  const task = env.tasks.get(message.name);
  if (!task) {
    const notFound = toStoredError(new TaskNotFoundError(message.name));
    // what this worker does register: none at all is a worker whose tasks' module was not imported
    const names = [...env.tasks.keys()];
    const error = {
      ...notFound,
      message: `${notFound.message}${
        names.length === 0
          ? " (this worker registers no task: is the module that registers them imported where the worker is built?)"
          : ` by this worker (it registers ${names.length}: ${names.slice(0, 5).join(", ")}${names.length > 5 ? ", …" : ""})`
      }`,
    };
    return { outcome: { kind: "rejected", error, taskId: message.id }, message, task: null, alreadyAcked: false };
  }
  let alreadyAcked = false;
  if (task.deliveryMode === "at_most_once") {
    try {
      // Confirmed: the broker must have processed the ack before the handler starts.
      await delivery.ack({ confirm: true });
      alreadyAcked = true;
    } catch (thrown) {
      // Not acknowledged, so not run: give it back rather than risk running it twice.
      return { outcome: { kind: "aborted", error: toStoredError(thrown) }, message, task, alreadyAcked: false };
    }
  }
  const run = new AttemptAbort();
  const outcome = await attempt(task, message, env, delivery, run);
  return { outcome, message, task, alreadyAcked, lingering: run.lingering };
}

/**
 * The early end of one attempt: a timeout, a forced shutdown or a lost lease. Until the handler
 * returns, {@link AttemptAbort.abort} only notes the reason (and aborts `ctx.signal`); once the
 * attempt waits for the handler's promise, it also ends that wait. One object per attempt
 * instead of an abort promise, a race and their closures: the worker runs many short attempts.
 */
class AttemptAbort {
  /** Why the attempt ended early, once it has. */
  reason: Error | undefined;
  /** `ctx.signal`'s controller (context tasks only). */
  controller: AbortController | undefined;
  /** Settles with the handler, when the attempt ended before it did. */
  lingering: Promise<void> | undefined;
  #reject: ((reason: Error) => void) | undefined;

  abort(reason: Error): void {
    if (this.reason) return;
    this.reason = reason;
    this.controller?.abort(reason);
    this.#reject?.(reason);
  }

  /** Settles as `pending` does, or rejects with the reason when the attempt ends first. */
  race(pending: PromiseLike<unknown>): Promise<unknown> {
    return new Promise((resolve, reject) => {
      // attached first, ended early or not: a rejection of `pending` is never left unhandled
      pending.then(resolve, reject);
      if (this.reason) {
        reject(this.reason);
        return;
      }
      this.#reject = reject;
    });
  }
}

/** Attempts to abort per shutdown signal: one listener on the signal, not one per attempt. */
const shutdownWatch = new WeakMap<AbortSignal, Set<AttemptAbort>>();

/** Aborts `run` when `signal` aborts (at once when it already has); undo with {@link unwatchShutdown}. */
function watchShutdown(signal: AbortSignal, run: AttemptAbort): void {
  if (signal.aborted) {
    run.abort(new TaskAbortedError(SHUT_DOWN));
    return;
  }
  let runs = shutdownWatch.get(signal);
  if (!runs) {
    const set = new Set<AttemptAbort>();
    runs = set;
    shutdownWatch.set(signal, set);
    signal.addEventListener(
      "abort",
      () => {
        for (const r of [...set]) r.abort(new TaskAbortedError(SHUT_DOWN));
      },
      { once: true },
    );
  }
  runs.add(run);
}

function unwatchShutdown(signal: AbortSignal, run: AttemptAbort): void {
  shutdownWatch.get(signal)?.delete(run);
}

const SHUT_DOWN = "worker shut down before the task ended";
/** The message of a run's {@link TaskAbortedError} when a forced stop aborted it. */
export const ABORTED_BY_STOP = SHUT_DOWN;
/** The message of a run's {@link TaskAbortedError} when another worker finished its task. */
export const ABORTED_FINISHED_ELSEWHERE = "another worker that took this message over finished the task";

function ignore(): void {}

async function attempt(
  task: Task<readonly unknown[], unknown>,
  message: TaskMessage,
  env: RunnerEnv,
  delivery: Delivery,
  run: AttemptAbort,
): Promise<Outcome> {
  // The attempt ends early on timeout, forced shutdown or a lost lease: the wait for the
  // handler rejects, and a context task's `ctx.signal` aborts.
  watchShutdown(env.shutdownSignal, run);
  // A lease lost while the task runs (this process stalled past it, another worker took the
  // message): stop here and leave the job to its new owner. A message the broker no longer holds
  // (ownerless): stop only if another worker that took it over has finished the task; else this
  // run is the job's only one.
  delivery.onLeaseLost?.((reason) => {
    if (reason === "taken") {
      run.abort(new TaskAbortedError("the lease on this message was lost: another worker took it over"));
      return;
    }
    env.isFinished?.(message.id).then(
      (isFinished) => {
        if (isFinished) run.abort(new TaskAbortedError(ABORTED_FINISHED_ELSEWHERE));
      },
      () => undefined, // unknown: the run goes on, and its outcome is stored unless a final one is there
    );
  });
  let timer: LongTimeout<number> | undefined;
  try {
    // The attempt's time runs from here: its validations count, and one that never settles (a
    // schema's async check) ends with the timeout, not never.
    if (task.timeoutMs !== undefined) {
      // (a LongTimeout: a timeout over 24.8 days, setTimeout's longest, is not cut to that)
      timer = new LongTimeout(
        (ms) => run.abort(new TaskTimeoutError(`task ${task.name} exceeded its timeout of ${ms / 1000} s`)),
        task.timeoutMs,
        task.timeoutMs,
      );
    }
    const mode = task.validationMode;
    let args: readonly unknown[] = message.args;
    if (task.argsSchema && (mode === "inputs" || mode === "strict")) {
      const validated = await run.race(validateWithSchema(task.argsSchema, args, `task "${task.name}" arguments`));
      if (!Array.isArray(validated)) {
        throw new ValidationError(`task "${task.name}": the argument schema must produce an array`);
      }
      args = validated;
    }
    // Aborted before the handler started (forced shutdown, lost lease): it does not start.
    if (run.reason) throw run.reason;
    env.onStart(message);
    const handler = task.handler as (...a: unknown[]) => unknown;
    let value: unknown;
    if (task.usesContext) {
      run.controller = new AbortController();
      const ctx = new TaskContext({
        taskId: message.id,
        taskName: task.name,
        retries: message.retries,
        retryPolicy: task.retryPolicy,
        signal: run.controller.signal,
        onListenerError: env.onSignalListenerError && ((error) => env.onSignalListenerError?.(message, error)),
      });
      value = handler(ctx, ...args);
    } else {
      value = handler(...args);
    }
    // A handler that returned a promise (any async one) is waited for unless the attempt ends
    // first; a plain value (a synchronous handler) needs no wait.
    if (isResultThenable(value, task.name)) {
      const pending = value;
      try {
        value = await run.race(pending);
      } catch (thrown) {
        // ended early: the handler may go on (one that ignores ctx.signal); the worker keeps
        // its slot until it settles, so that no more than `concurrency` handlers run at once
        if (thrown === run.reason) run.lingering = Promise.resolve(pending).then(ignore, ignore);
        throw thrown;
      }
    }
    // The schema sees what the handler returned (`undefined` too: `z.void()` accepts it);
    // `undefined` is stored as null.
    if (task.resultSchema && (mode === "outputs" || mode === "strict")) {
      value = await run.race(validateWithSchema(task.resultSchema, value, `task "${task.name}" result`));
    }
    // nothing is stored: a value that is not JSON (a driver's row object, a BigInt) is no failure
    if (task.ignoreResult || value === undefined) return { kind: "success", value: null };
    return storedResult(value, task.name, env);
  } catch (thrown) {
    return failureOutcome(task, message, thrown, run.reason instanceof TaskAbortedError);
  } finally {
    timer?.clear();
    unwatchShutdown(env.shutdownSignal, run);
  }
}

/**
 * The result to store: checked (JSON only, within the size limits) and copied by
 * {@link snapshot}. What its reading throws (a getter, a Proxy's trap, a value that changed
 * between the check and the copy into one the copy refuses, such as a cycle) fails the task as
 * a ValidationError naming the result. A getter that gives the copy another value than the
 * check (a `NaN`, a `Date`) is not caught: the copy has what `JSON.stringify` makes of it.
 */
function storedResult(value: unknown, taskName: string, env: RunnerEnv): Extract<Outcome, { kind: "success" }> {
  try {
    const bad = findNonJson(value, "result");
    if (bad) throw new ValidationError(`task "${taskName}": ${bad}; results must be JSON-representable`);
    return snapshot(value, taskName, env.maxResultBytes, env.serverResultLimit);
  } catch (thrown) {
    if (thrown instanceof ValidationError) throw thrown;
    throw unreadableResult(thrown, taskName);
  }
}

/** The failure of a task whose result threw `thrown` when read (a getter, a Proxy's trap). */
function unreadableResult(thrown: unknown, taskName: string): ValidationError {
  const { type, message } = toStoredError(thrown); // (never throws, whatever was thrown)
  return new ValidationError(`task "${taskName}": its result could not be read as JSON: ${type}: ${message}`, [], {
    cause: thrown,
  });
}

/** `isThenable(value)`, where reading `then` throws (a revoked Proxy) fails the task as {@link storedResult} does. */
function isResultThenable(value: unknown, taskName: string): value is PromiseLike<unknown> {
  try {
    return isThenable(value);
  } catch (thrown) {
    throw unreadableResult(thrown, taskName);
  }
}

/**
 * The result as it was when the handler returned: an object or array is copied through JSON
 * (checked by `findNonJson` first, so this cannot throw), so that a handler changing it later
 * (a cache entry it returned, a timer) cannot change what is stored, or make it unstorable and
 * the job run again. A primitive is its own snapshot.
 *
 * A result over `limit` bytes of JSON is refused here, as a failure of the task: stored, it
 * could exceed what the backend's server takes (Redis's bulk length, MariaDB's
 * `max_allowed_packet`); so is one over the server's own limit (`server`, read as the worker
 * started), counted as the server receives it. One the server refuses all the same (its limit
 * not read) fails the task once the refusal comes back (see `executor.ts`). The exact size is
 * counted only when the text's length could exceed a limit.
 */
function snapshot(
  value: unknown,
  taskName: string,
  limit: number,
  server: ResultSizeLimit | undefined,
): Extract<Outcome, { kind: "success" }> {
  // the most bytes a result of this JSON length can take, per UTF-16 unit: 3 in UTF-8, twice
  // that with quotes escaped on the wire
  const wireLimit =
    server === undefined ? limit : Math.min(limit, server.quotesEscaped ? server.bytes / 2 : server.bytes);
  if (typeof value === "string") {
    // JSON escapes a UTF-16 unit as at most 6 ASCII bytes ("\u001f"), plus the quotes
    const most = value.length * 6 + 2;
    if (most <= wireLimit) return { kind: "success", value };
  } else if (value === null || typeof value !== "object") {
    return { kind: "success", value };
  }
  let text: string;
  try {
    text = JSON.stringify(value);
  } catch (thrown) {
    // longer than the longest string V8 builds
    if (thrown instanceof RangeError) throw resultTooLarge(taskName, `more than ${limit}`, limit, undefined);
    throw thrown;
  }
  if (text.length * 3 > wireLimit) {
    const size = Buffer.byteLength(text);
    if (size > limit) throw resultTooLarge(taskName, String(size), limit, undefined);
    if (server !== undefined) {
      const wire = server.quotesEscaped ? size + countQuotes(text) : size;
      if (wire > server.bytes) throw resultTooLarge(taskName, String(wire), server.bytes, server);
    }
  }
  const copy: unknown = typeof value === "string" ? value : JSON.parse(text);
  return { kind: "success", value: copy };
}

/** The `'`, `"` and `\` in `text` (the MySQL driver escapes each with one more byte). */
function countQuotes(text: string): number {
  let count = 0;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code === 34 || code === 39 || code === 92) count++;
  }
  return count;
}

function resultTooLarge(
  taskName: string,
  size: string,
  limit: number,
  server: ResultSizeLimit | undefined,
): ValidationError {
  const why = server?.source ?? "maxResultBytes, CHICORY_MAX_RESULT_BYTES";
  const what = server?.quotesEscaped ? "bytes as sent (quotes and backslashes escaped)" : "bytes of JSON";
  return new ValidationError(
    `task "${taskName}": its result is ${size} ${what}, over the limit of ${limit} bytes (${why}); store large data elsewhere (a file, object storage) and return a reference to it`,
  );
}

/**
 * The outcome of an attempt that threw `thrown`. `isAborted`: the worker aborted the attempt
 * (shutdown, lost lease); a `TaskAbortedError` is an abort only then, and one a handler throws
 * of its own is a failure as any other (taken for an abort, its message was released
 * uncounted and ran again and again, never reaching `maxDeliveries`).
 */
function failureOutcome(
  task: Task<readonly unknown[], unknown>,
  message: TaskMessage,
  thrown: unknown,
  isAborted: boolean,
): Outcome {
  try {
    return classifyFailure(task, message, thrown, isAborted);
  } catch {
    // A thrown value that cannot be inspected (`instanceof` throws on a revoked Proxy): an
    // ordinary failure, retried as the policy says, never a crash of the worker's job loop.
    const error = toStoredError(thrown);
    if (message.retries >= task.retryPolicy.maxRetries) return { kind: "failure", error };
    return { kind: "retry", error, delayMs: task.retryPolicy.calculateDelay(message.retries + 1) * 1000 };
  }
}

function classifyFailure(
  task: Task<readonly unknown[], unknown>,
  message: TaskMessage,
  thrown: unknown,
  isAborted: boolean,
): Outcome {
  if (isAborted && thrown instanceof TaskAbortedError) return { kind: "aborted", error: toStoredError(thrown) };
  if (thrown instanceof RetryError) {
    const reason = thrown.reason === undefined ? thrown : thrown.reason;
    // `ctx.retry` checks the budget and the policy before it throws; a RetryError thrown by
    // hand gets the same checks here (else it would retry past `maxRetries`, forever).
    if (thrown.reason !== undefined && !task.retryPolicy.shouldRetry(thrown.reason)) {
      return { kind: "failure", error: toStoredError(thrown.reason) };
    }
    if (message.retries >= task.retryPolicy.maxRetries) {
      const last = thrown.reason === undefined ? "" : `; last error: ${describeCause(thrown.reason)}`;
      const spent = new MaxRetriesExceededError(
        `task ${task.name} (${message.id}) has no retries left (${message.retries} of ${task.retryPolicy.maxRetries} done)${last}`,
      );
      return { kind: "failure", error: toStoredError(spent) };
    }
    // `ctx.retry` checks its countdown; a RetryError made by hand may carry anything.
    const delaySeconds = isRetryCountdown(thrown.countdown)
      ? thrown.countdown
      : task.retryPolicy.calculateDelay(message.retries + 1);
    return { kind: "retry", error: toStoredError(reason), delayMs: Math.max(0, delaySeconds * 1000) };
  }
  const error = toStoredError(thrown);
  const final =
    thrown instanceof MaxRetriesExceededError ||
    thrown instanceof ValidationError ||
    isMarkedNonRetryable(thrown) ||
    message.retries >= task.retryPolicy.maxRetries ||
    !task.retryPolicy.shouldRetry(thrown);
  if (final) return { kind: "failure", error };
  return { kind: "retry", error, delayMs: task.retryPolicy.calculateDelay(message.retries + 1) * 1000 };
}

/**
 * Handles on task results (SPEC §4).
 * @module
 */
import type { Backend, TaskRecord, TaskState } from "./backends/backend.js";
import { connectedBackend, isTerminalState } from "./backends/backend.js";
import { type Duration, toMs } from "./core/duration.js";
import { checkOptionKeys, keysOf } from "./core/env.js";
import type { JsonArg, NotJson } from "./core/json.js";
import { MAX_TASK_ID_LENGTH } from "./core/message.js";
import { settlesWithin } from "./core/sleep.js";
import {
  BackendNotConfiguredError,
  ConfigurationError,
  TaskFailedError,
  TaskIdConflictError,
  TimeoutError,
  ValidationError,
} from "./errors.js";

/**
 * Bounds of the wait for the read a timed-out `get()` makes before it gives up: a tenth of the
 * timeout, at least {@link LAST_READ_MIN_MS} (a read on a loaded host) and at most
 * {@link LAST_READ_MAX_MS}. A backend that does not answer (an outage) makes `get()` late by that
 * much at most.
 */
const LAST_READ_MIN_MS = 250;
const LAST_READ_MAX_MS = 1000;
/** How much earlier than asked a timer may fire (rounding to whole milliseconds). */
const EARLY_TIMER_MS = 2;

/** Options of {@link AsyncResult.get}. */
export interface GetOptions {
  /**
   * Give up after this long (seconds or a unit string) with a `TimeoutError`; 0 reads the
   * result once, as it is now, without waiting (a backend that does not answer within 0.25 s
   * gives a `TimeoutError` too); `null` or `Infinity` waits as long as it takes.
   */
  timeout?: Duration | null | undefined;
  /** Interval of the fallback poll (seconds or a unit string). */
  pollInterval?: Duration | undefined;
  /** Aborts the wait with a `TimeoutError` whose `cause` is the signal's reason. */
  signal?: AbortSignal | undefined;
}

const GET_OPTION_KEYS = keysOf<GetOptions>({ timeout: true, pollInterval: true, signal: true });

/** Defaults an {@link AsyncResult} inherits from its app. */
export interface ResultDefaults {
  /** Fallback poll interval in seconds. */
  pollInterval?: number | undefined;
  /** Default `get()` timeout in seconds, or null for none. */
  defaultTimeout?: number | null | undefined;
  /**
   * @internal How many workers consume `queue` (the app's broker): a `get()` that timed out on
   * a task sent to a queue nobody consumes says so.
   */
  countConsumers?: ((queue: string) => Promise<number>) | undefined;
  /**
   * @internal Where the app's broker is (its display URL, with a Redis key prefix): the note
   * of a `get()` that timed out on an unconsumed queue names it, to compare with the worker's.
   */
  brokerLocation?: string | undefined;
}

/** The defaults of the app each backend belongs to (see {@link bindResultDefaults}). */
const appDefaults = new WeakMap<Backend, ResultDefaults>();

/**
 * @internal Makes `defaults` the ones of every {@link AsyncResult} built on `backend` without
 * defaults of its own (`new AsyncResult(taskId, app.backend)`), as of those `delay()` returns.
 * The app calls it for its backend.
 */
export function bindResultDefaults(backend: Backend, defaults: ResultDefaults): void {
  appDefaults.set(backend, defaults);
}

/**
 * The result type of a task whose handler returns `R`: results are stored as JSON, so a handler
 * that returns nothing (`void`, `undefined`) gives `null` to `get()`, and a part of `R` that is
 * not JSON (a `Date`, a `Map`...) is a {@link NotJson} naming why: such a result fails the task
 * when it runs, and using it as a `Date` does not compile.
 */
export type StoredResult<R> = R extends void ? null : JsonArg<R>; // undefined extends void too

/**
 * The eventual result of a task.
 * @example
 * const r = await sendEmail.delay("a@b.c", "Hi", "Welcome");
 * const value = await r.get({ timeout: 30 });
 * // or later, elsewhere: new AsyncResult(taskId, app.backend).state()
 */
export class AsyncResult<R = unknown> {
  /** Task id. */
  readonly taskId: string;
  readonly #backend: Backend | null;
  readonly #defaults: ResultDefaults;
  readonly #queue: string | undefined;
  readonly #taskName: string | undefined;
  /** When it was made (`performance.now()`): a server restart since is named by a timed-out `get()`. */
  readonly #madeAt = performance.now();

  /**
   * @param defaults `get()`'s defaults; without them, those of the app whose backend this is
   *   (`CHICORY_RESULT_DEFAULT_TIMEOUT`, `CHICORY_RESULT_POLL_INTERVAL`), as for the results
   *   `delay()` returns
   * @param queue the queue the task was sent to, when known (`delay()` gives it): a `get()` that
   *   times out says when no worker consumes it
   * @param taskName the task's name, when known (`delay()` gives it): `get()` refuses a record
   *   that another task stored under the same id, rather than return a value of another type
   */
  constructor(taskId: string, backend: Backend | null, defaults?: ResultDefaults, queue?: string, taskName?: string) {
    // (a cheap check: an id from a request or a CLI argument that is empty or no string at all
    // would otherwise read as a task still PENDING)
    if (typeof taskId !== "string" || taskId.length === 0 || taskId.length > MAX_TASK_ID_LENGTH) {
      throw new ValidationError(
        `AsyncResult: taskId must be a string of 1-${MAX_TASK_ID_LENGTH} characters, got ${typeof taskId === "string" ? `${taskId.length} characters` : typeof taskId}`,
      );
    }
    this.taskId = taskId;
    this.#backend = backend;
    this.#queue = queue;
    this.#taskName = taskName;
    this.#defaults = defaults ?? (backend === null ? undefined : appDefaults.get(backend)) ?? {};
  }

  #requireBackend(): Backend {
    if (!this.#backend) throw new BackendNotConfiguredError();
    return this.#backend;
  }

  /**
   * The backend, connected: an AsyncResult built from an id in a process that never connected
   * its app (`new AsyncResult(id, app.backend)`) opens it on first use, as `delay()` does.
   */
  #backendReady(): Backend | Promise<Backend> {
    const backend = this.#requireBackend();
    // connected (every get() after a delay()): no promise, no extra turn; else connect, or
    // wait for the connect under way (several first calls at once)
    return connectedBackend(backend);
  }

  /**
   * Waits for a terminal state and returns the value. Without a timeout it waits as long as it
   * takes, through a backend outage too: it resolves once the backend answers again and the
   * record is there. Such a wait is not silent: the Redis and SQL backends warn (their logger,
   * else a process warning) when their waiters' reads have failed or gone unanswered for 5 s,
   * once per outage however many `get()`s wait, and say when they can be read again.
   * @throws TaskFailedError when the task failed or was dead-lettered
   * @throws TimeoutError when `timeout` passes first
   * @throws BackendNotConfiguredError without a backend
   * @throws ConfigurationError when `options` is not an object, has an unknown key, or a
   * duration that is not one
   * @throws ChicoryError naming the key when the stored record cannot be read (corrupt or
   * foreign data; Redis backend), a BackendConnectionError when the Redis user may not read it
   * (`NOPERM`), at once rather than at the timeout
   * @throws TaskIdConflictError when another task's record holds this id (a caller-chosen
   * `taskId` used for two tasks; only on a result `delay()` returned)
   */
  async get(options: GetOptions = {}): Promise<R> {
    // (a JavaScript caller's `get(5)` or `get({ timout: 5 })` would otherwise wait for ever)
    if (options === null || typeof options !== "object") {
      throw new ConfigurationError(
        `get: options must be an object ({ timeout, pollInterval, signal }) or nothing, got ${options === null ? "null" : typeof options}${typeof options === "number" ? ` (for a timeout: get({ timeout: ${options} }))` : ""}`,
      );
    }
    checkOptionKeys(options, "get", GET_OPTION_KEYS);
    const timeout = options.timeout === undefined ? this.#defaults.defaultTimeout : options.timeout;
    const timeoutMs =
      timeout === null || timeout === undefined || timeout === Number.POSITIVE_INFINITY
        ? undefined
        : toMs(timeout, "timeout");
    const pollIntervalMs =
      options.pollInterval === undefined
        ? (this.#defaults.pollInterval ?? 0.5) * 1000
        : toMs(options.pollInterval, "pollInterval");
    const startedAt = performance.now();
    const ready = this.#backendReady();
    let backend: Backend;
    let waitMs = timeoutMs;
    if (ready instanceof Promise) {
      // A backend not connected yet (an AsyncResult made from an id) connects within the
      // wait's time, as the wait itself (a timeout of 0: within a last read's bound); the wait
      // then has what is left
      const limitMs = timeoutMs === 0 ? LAST_READ_MIN_MS : (timeoutMs ?? Number.POSITIVE_INFINITY);
      if (!(await settlesWithin(ready, limitMs, options.signal))) {
        if (options.signal?.aborted) throw abortedWait(this.taskId, options.signal);
        throw new TimeoutError(`task ${this.taskId}: the backend did not connect within ${limitMs / 1000} s`);
      }
      backend = await ready;
      if (timeoutMs) waitMs = Math.max(1, timeoutMs - (performance.now() - startedAt));
    } else {
      backend = ready;
    }
    const readNow = () =>
      backend.getResult(this.taskId).then((found) => (found && isTerminalState(found.state) ? found : null));
    // A zero timeout asks for the result as it is now: one read, no wait. A wait that timed out
    // reads once more before it gives up: its timer may have fired before its first read's
    // reply (a short timeout, a slow link), and the record may be there already.
    let record: TaskRecord | null;
    if (timeoutMs === 0) {
      // bounded as a timed-out wait's last read: a backend that is down (a client queueing
      // commands while it reconnects) must not turn "as it is now" into seconds
      const now = readNow();
      if (!(await settlesWithin(now, LAST_READ_MIN_MS))) {
        now.catch(() => undefined);
        throw new TimeoutError(
          `task ${this.taskId}: the backend did not answer within ${LAST_READ_MIN_MS / 1000} s (timeout 0: no wait)`,
        );
      }
      record = await now;
    } else {
      record = await backend.waitForResult(this.taskId, { timeoutMs: waitMs, pollIntervalMs, signal: options.signal });
    }
    // why the last read found nothing, when the backend is the reason (said in the TimeoutError),
    // or when no worker consumes the task's queue
    let backendNote = "";
    if (record === null && timeoutMs !== undefined && timeoutMs > 0 && !options.signal?.aborted) {
      // bounded, and a failing read changes nothing: the wait timed out
      const last = readNow().catch((error: unknown) => {
        backendNote = ` (the backend is unreachable: ${error instanceof Error ? error.message : String(error)})`;
        return null;
      });
      const queue = this.#queue;
      const count = this.#defaults.countConsumers;
      // (in the same bound: a slow or unreachable broker adds nothing to the wait or the message)
      const consumers =
        queue === undefined || count === undefined
          ? undefined
          : Promise.resolve()
              .then(() => count(queue))
              .catch(() => Number.NaN);
      const boundMs = Math.min(LAST_READ_MAX_MS, Math.max(LAST_READ_MIN_MS, timeoutMs / 10));
      const lastReadAt = performance.now();
      if (await settlesWithin(last, boundMs)) record = await last;
      else backendNote = ` (the backend did not answer within ${boundMs / 1000} s: unreachable?)`;
      if (record === null && backendNote === "" && consumers !== undefined) {
        const leftMs = boundMs - (performance.now() - lastReadAt);
        if (leftMs > 0 && (await settlesWithin(consumers, leftMs)) && (await consumers) === 0) {
          const where = this.#defaults.brokerLocation;
          backendNote = ` (the broker${where === undefined ? "" : ` at ${where}`} counts no consumer of queue "${queue}": is a worker running for it, on this broker?)`;
        }
      }
      // (after the consumers: with no worker, that is the reason whatever the backend lost)
      const changedAt = backend.serverChangedAt;
      if (record === null && backendNote === "" && changedAt !== undefined && changedAt >= this.#madeAt) {
        backendNote = ` (the backend's server restarted or failed over since this result was made: one that keeps no data lost the results it held, and the jobs too when it is the broker's server)`;
      }
    }
    if (record === null) {
      if (options.signal?.aborted) throw abortedWait(this.taskId, options.signal);
      // Cut short, neither aborted nor timed out: the backend closed (disconnected) meanwhile.
      const isCutShort = timeoutMs === undefined || performance.now() - startedAt < timeoutMs - EARLY_TIMER_MS;
      const waited = isCutShort
        ? "the wait ended before a result came (the backend disconnected)"
        : `no result after ${timeoutMs / 1000} s${backendNote}`;
      throw new TimeoutError(`task ${this.taskId}: ${waited}`);
    }
    if (this.#taskName !== undefined && record.taskName !== undefined && record.taskName !== this.#taskName) {
      throw new TaskIdConflictError({ taskId: this.taskId, expectedTask: this.#taskName, foundTask: record.taskName });
    }
    return unwrap<R>(record);
  }

  /** Current state; `PENDING` when the backend knows nothing of the task. */
  async state(): Promise<TaskState> {
    const record = await (await this.#backendReady()).getResult(this.taskId);
    return record?.state ?? "PENDING";
  }

  /** True when the task reached a terminal state. */
  async ready(): Promise<boolean> {
    return isTerminalState(await this.state());
  }

  /** True when the task failed (`FAILURE` or `DEAD_LETTERED`). */
  async failed(): Promise<boolean> {
    const state = await this.state();
    return state === "FAILURE" || state === "DEAD_LETTERED";
  }

  /** Deletes the stored result. */
  async forget(): Promise<void> {
    await (await this.#backendReady()).deleteResult(this.taskId);
  }

  /** The stored record, or null (for tools that want the error details without throwing). */
  async record(): Promise<TaskRecord | null> {
    return (await this.#backendReady()).getResult(this.taskId);
  }
}

/** The error of a wait its signal aborted: a `TimeoutError` whose `cause` is the signal's reason. */
function abortedWait(taskId: string, signal: AbortSignal): TimeoutError {
  return new TimeoutError(`task ${taskId}: the wait was aborted`, { cause: signal.reason });
}

/** Returns a terminal record's value or throws its error. */
export function unwrap<R>(record: TaskRecord): R {
  if (record.state === "SUCCESS") return record.result as R;
  const error = record.error;
  throw new TaskFailedError({
    taskId: record.taskId,
    errorType: error?.type ?? record.state,
    message: error?.message ?? `task ended in state ${record.state}`,
    remoteStack: error?.stack,
    remoteCode: error?.code,
  });
}

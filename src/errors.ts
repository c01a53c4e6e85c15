/**
 * Errors raised by Chicory. Every error extends {@link ChicoryError} and carries a
 * stable string `code`; wrapped driver errors are kept as `cause`.
 * @module
 */

/** Options accepted by every Chicory error constructor. */
export interface ChicoryErrorOptions {
  /** The underlying error, kept for debugging. */
  cause?: unknown;
}

/** Base class of every error Chicory throws. `code` is stable across releases. */
export class ChicoryError extends Error {
  /** Stable machine-readable code, e.g. `"TASK_NOT_FOUND"`. */
  readonly code: string = "CHICORY_ERROR";

  constructor(message: string, options?: ChicoryErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
  }
}

/** No task is registered under the requested name. */
export class TaskNotFoundError extends ChicoryError {
  /** {@inheritDoc ChicoryError.code} */
  override readonly code = "TASK_NOT_FOUND";
  /** The name that was looked up. */
  readonly taskName: string;
  constructor(taskName: string, options?: ChicoryErrorOptions) {
    super(`task "${taskName.slice(0, 200)}" is not registered`, options);
    this.taskName = taskName;
  }
}

/** A single problem found by validation. */
export interface ValidationIssue {
  /** Human-readable description. */
  message: string;
  /** Path to the offending value, e.g. `["args", 0, "email"]`. */
  path?: ReadonlyArray<PropertyKey> | undefined;
}

/** Arguments, a result, a name or a message failed validation. Never retried. */
export class ValidationError extends ChicoryError {
  /** {@inheritDoc ChicoryError.code} */
  override readonly code = "VALIDATION_ERROR";
  /** Individual issues, when a schema reported several. */
  readonly issues: readonly ValidationIssue[];
  constructor(message: string, issues: readonly ValidationIssue[] = [], options?: ChicoryErrorOptions) {
    super(message, options);
    this.issues = issues;
  }
}

/**
 * Control-flow signal thrown by `ctx.retry()`: the worker schedules another attempt.
 * It is not a failure and is never stored as one.
 */
export class RetryError extends ChicoryError {
  /** {@inheritDoc ChicoryError.code} */
  override readonly code = "RETRY";
  /** Retries already done before this one. */
  readonly retries: number;
  /** The policy's retry budget. */
  readonly maxRetries: number;
  /** Delay before the next attempt, in seconds (`undefined`: from the policy). */
  readonly countdown: number | undefined;
  /** The error that caused the retry, if any. */
  readonly reason: unknown;
  constructor(
    init: { retries: number; maxRetries: number; countdown?: number | undefined; reason?: unknown },
    options?: ChicoryErrorOptions,
  ) {
    super(`retry ${init.retries + 1} of ${init.maxRetries} requested`, options);
    this.retries = init.retries;
    this.maxRetries = init.maxRetries;
    this.countdown = init.countdown;
    this.reason = init.reason;
  }
}

/** A retry was requested but the policy's budget is spent. */
export class MaxRetriesExceededError extends ChicoryError {
  /** {@inheritDoc ChicoryError.code} */
  override readonly code = "MAX_RETRIES_EXCEEDED";
}

/** A result accessor was used on an app configured without a result backend. */
export class BackendNotConfiguredError extends ChicoryError {
  /** {@inheritDoc ChicoryError.code} */
  override readonly code = "BACKEND_NOT_CONFIGURED";
  constructor(
    message = "no result backend is configured: give the app `backend` (a URL or a backend object) or set CHICORY_BACKEND_URL (an app given a broker object, or a broker kind that keeps no results such as RabbitMQ, has none unless one is given)",
    options?: ChicoryErrorOptions,
  ) {
    super(message, options);
  }
}

/** Options of a {@link BrokerConnectionError}. */
export interface BrokerConnectionErrorOptions extends ChicoryErrorOptions {
  /** The id of the task whose publish failed, when the error answers a publish. */
  taskId?: string;
  /** The broker's server refused it before writing anything (see {@link BrokerConnectionError.isRefused}). */
  isRefused?: boolean;
}

/**
 * The broker cannot be reached or refused an operation. When it answers a publish
 * (`delay()`/`applyAsync()`), `taskId` names the task whose message it was: a publish whose
 * outcome is unknown may still land, and its job can be looked up by that id.
 */
export class BrokerConnectionError extends ChicoryError {
  /** {@inheritDoc ChicoryError.code} */
  override readonly code = "BROKER_CONNECTION";
  /** The id of the task whose publish failed; undefined when the error answers no publish. */
  readonly taskId: string | undefined;
  /**
   * True when the broker's server refused the operation before it wrote anything (Redis: out
   * of memory, a read-only replica, too few replicas; see the Redis broker's docs): a publish so
   * refused was not enqueued, and sending it again adds no second copy. False when its outcome
   * is unknown (the connection closed, no answer in time, or an error that may come after a
   * first write, such as Redis's `WRONGTYPE` for a key of another type under the prefix).
   */
  readonly isRefused: boolean;
  constructor(message: string, options?: BrokerConnectionErrorOptions) {
    super(message, options);
    this.taskId = options?.taskId;
    this.isRefused = options?.isRefused === true;
  }
}

/**
 * A queue's dead-letter queue is at its configured cap (`CHICORY_BROKER_REDIS_DLQ_MAX_LENGTH`):
 * nothing was moved to it (a DLQ is never trimmed). A worker does not retry the move at once:
 * the message stays in its queue and comes back after its lease.
 */
export class DeadLetterQueueFullError extends BrokerConnectionError {}

/**
 * A publish was refused because its queue is at its configured backlog limit
 * (`CHICORY_BROKER_REDIS_MAX_STREAM_LENGTH`): nothing was published. Sending it again at once
 * meets the same limit; wait for workers to drain the queue (a `BrokerConnectionError`, so
 * code that catches those still catches it; its `isRefused` is true).
 */
export class QueueFullError extends BrokerConnectionError {}

/** Options of a {@link BackendConnectionError}. */
export interface BackendConnectionErrorOptions extends ChicoryErrorOptions {
  /** The backend's server refused it for a state of its own (see {@link BackendConnectionError.isRefused}). */
  isRefused?: boolean;
}

/** The result backend cannot be reached or refused an operation. */
export class BackendConnectionError extends ChicoryError {
  /** {@inheritDoc ChicoryError.code} */
  override readonly code = "BACKEND_CONNECTION";
  /**
   * True when the backend's server refused the operation for a state of its own, and takes it
   * again once that state ends (Redis: out of memory under
   * `maxmemory-policy noeviction`, a read-only replica, too few replicas, a failed save): a
   * worker holds a record so refused, with fetching paused, until the server takes it. False
   * otherwise (no answer, a closed connection, a refusal of the record itself or of the user's
   * rights).
   */
  readonly isRefused: boolean;
  constructor(message: string, options?: BackendConnectionErrorOptions) {
    super(message, options);
    this.isRefused = options?.isRefused === true;
  }
}

/** The error a task raised remotely, as seen by the caller of `AsyncResult.get()`. */
export class TaskFailedError extends ChicoryError {
  /** {@inheritDoc ChicoryError.code} */
  override readonly code = "TASK_FAILED";
  /** Id of the failed task. */
  readonly taskId: string;
  /** `name` of the remote error (e.g. `"TypeError"`). */
  readonly errorType: string;
  /** Stack of the remote error, when it was stored. */
  readonly remoteStack: string | undefined;
  /** `code` of the remote error (e.g. `"ECONNREFUSED"`), when it had one. */
  readonly remoteCode: string | undefined;
  constructor(init: {
    taskId: string;
    errorType: string;
    message: string;
    remoteStack?: string | undefined;
    remoteCode?: string | undefined;
  }) {
    super(`task ${init.taskId} failed: ${init.errorType}: ${init.message}`);
    this.taskId = init.taskId;
    this.errorType = init.errorType;
    this.remoteStack = init.remoteStack;
    this.remoteCode = init.remoteCode;
    this.remoteMessage = init.message;
  }
  /** The remote error's own message. */
  readonly remoteMessage: string;
}

/**
 * The record `AsyncResult.get()` found under its task id was stored by another task: a
 * caller-chosen `taskId` was used for two tasks (a second `delay()` with it while the first job
 * was queued or running enqueued nothing; on another queue both ran, and the later result
 * replaced the other).
 */
export class TaskIdConflictError extends ChicoryError {
  /** {@inheritDoc ChicoryError.code} */
  override readonly code = "TASK_ID_CONFLICT";
  /** The task id. */
  readonly taskId: string;
  /** The task the result was awaited for. */
  readonly expectedTask: string;
  /** The task whose record holds the id. */
  readonly foundTask: string;
  constructor(init: { taskId: string; expectedTask: string; foundTask: string }) {
    super(
      `task id "${init.taskId}" holds a result of task "${init.foundTask}", not of "${init.expectedTask}": a caller-chosen taskId names one job across every task and queue (a second delay() with that id while the first job was queued or running enqueued nothing; on another queue, both ran and the later result replaced the other)`,
    );
    this.taskId = init.taskId;
    this.expectedTask = init.expectedTask;
    this.foundTask = init.foundTask;
  }
}

/** A task attempt exceeded its `timeout`; retryable per the task's policy. */
export class TaskTimeoutError extends ChicoryError {
  /** {@inheritDoc ChicoryError.code} */
  override readonly code = "TASK_TIMEOUT";
}

/** Waiting (e.g. `AsyncResult.get({ timeout })`) took longer than allowed. */
export class TimeoutError extends ChicoryError {
  /** {@inheritDoc ChicoryError.code} */
  override readonly code = "TIMEOUT";
}

/** Invalid configuration; the message names the variable or option. */
export class ConfigurationError extends ChicoryError {
  /** {@inheritDoc ChicoryError.code} */
  override readonly code = "CONFIGURATION";
}

/** Options of {@link MessageTooLargeError}. */
export interface MessageTooLargeErrorOptions extends ChicoryErrorOptions {
  /** Whose limit it is, shown in brackets; default `"CHICORY_MAX_MESSAGE_BYTES"`. */
  source?: string;
  /** The task whose message it is, named first when given. */
  taskName?: string;
}

/**
 * An encoded message is larger than `maxMessageBytes`, or than the broker's server takes (a
 * Redis server's `proto-max-bulk-len`; the message names the source).
 */
export class MessageTooLargeError extends ChicoryError {
  /** {@inheritDoc ChicoryError.code} */
  override readonly code = "MESSAGE_TOO_LARGE";
  /** Encoded size in bytes. */
  readonly size: number;
  /** The limit in bytes. */
  readonly limit: number;
  /** Whose limit it is (`"CHICORY_MAX_MESSAGE_BYTES"`, or the broker's server's). */
  readonly source: string;
  /** The task whose message it is, when known. */
  readonly taskName: string | undefined;
  constructor(size: number, limit: number, options?: MessageTooLargeErrorOptions) {
    super(
      `${options?.taskName === undefined ? "" : `task "${options.taskName}": `}message is ${size} bytes, over the limit of ${limit} bytes (${options?.source ?? "CHICORY_MAX_MESSAGE_BYTES"})`,
      options,
    );
    this.size = size;
    this.limit = limit;
    this.source = options?.source ?? "CHICORY_MAX_MESSAGE_BYTES";
    this.taskName = options?.taskName;
  }
}

/**
 * A SQL backend's connection pool gave no connection within its timeout: every connection
 * stayed busy, or the database did not answer a new one in time.
 */
export class DbPoolExhaustedError extends ChicoryError {
  /** {@inheritDoc ChicoryError.code} */
  override readonly code = "DB_POOL_EXHAUSTED";
}

/** A driver package needed by the configured broker/backend is not installed. */
export class DriverNotInstalledError extends ChicoryError {
  /** {@inheritDoc ChicoryError.code} */
  override readonly code = "DRIVER_NOT_INSTALLED";
  /** @param pkg the package to install, or several separated by spaces */
  constructor(pkg: string, what: string, options?: ChicoryErrorOptions) {
    const names = pkg.split(" ");
    super(
      `${what} needs the package${names.length > 1 ? "s" : ""} ${names.map((name) => `"${name}"`).join(" and ")}: run npm install ${pkg}`,
      options,
    );
  }
}

/**
 * A DLQ replay moved its entry back to the queue, but the task's old `FAILURE` /
 * `DEAD_LETTERED` record could not be deleted: `get()` returns that record until the new run
 * ends (`AsyncResult.forget()` deletes it). The replay itself is done.
 */
export class ReplayRecordKeptError extends ChicoryError {
  /** {@inheritDoc ChicoryError.code} */
  override readonly code = "REPLAY_RECORD_KEPT";
}

/** A task was aborted because its worker is shutting down. */
export class TaskAbortedError extends ChicoryError {
  /** {@inheritDoc ChicoryError.code} */
  override readonly code = "TASK_ABORTED";
}

/** Converts anything thrown into an `Error`. */
export function toError(value: unknown): Error {
  try {
    if (value instanceof Error) return value;
  } catch {
    // (a revoked Proxy: even `instanceof` throws)
    return new Error("a value that cannot be read (a revoked Proxy?)");
  }
  return new Error(typeof value === "string" ? value : safeString(value));
}

function safeString(value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    try {
      return String(value);
    } catch {
      return `a value of type ${typeof value} that cannot be read`;
    }
  }
}

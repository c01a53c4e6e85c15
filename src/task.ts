/**
 * Tasks (SPEC §3): a registered handler plus the ways to dispatch it.
 * @module
 */
import type { StandardSchemaV1 } from "@standard-schema/spec";
import { type Backend, connectedBackend, isTerminalState, resultStampOf, type TaskRecord } from "./backends/backend.js";
import type { Broker, OutgoingMessage } from "./brokers/broker.js";
import { DELIVERY_MODES, type DeliveryMode, VALIDATION_MODES, type ValidationMode } from "./config.js";
import type { TaskContext } from "./context.js";
import { type Duration, MAX_DELAY_SECONDS, toMs } from "./core/duration.js";
import { checkChoice, checkFlag, checkInt, checkOptionKeys } from "./core/env.js";
import { newTaskId } from "./core/ids.js";
import { findNonJson, type JsonValue } from "./core/json.js";
import { isValidTaskId, MAX_TASK_ID_LENGTH, type MessageCodec, type TaskMessage } from "./core/message.js";
import { assertValidName } from "./core/names.js";
import { describeValue, validateWithSchema } from "./core/schema.js";
import { settlesWithin } from "./core/sleep.js";
import { BrokerConnectionError, ConfigurationError, MessageTooLargeError, ValidationError } from "./errors.js";
import { AsyncResult, type ResultDefaults } from "./result.js";
import { RetryPolicy, type RetryPolicyOptions } from "./retry.js";

/** The keys of {@link TaskOptions}: any other is refused (a typo would be ignored silently). */
const TASK_OPTION_KEYS: ReadonlySet<string> = new Set([
  "name",
  "retryPolicy",
  "ignoreResult",
  "validationMode",
  "deliveryMode",
  "args",
  "result",
  "context",
  "queue",
  "timeout",
  "priority",
]);

/** Why an option of the SPEC that Chicory does not have is refused. */
const UNSUPPORTED_TASK_OPTIONS = {
  isolate:
    ": not supported (a handler runs on the worker's event loop; run CPU-heavy work in a worker_threads pool of your own)",
};

/** Options of a task (SPEC §3). */
export interface TaskOptions {
  /** Unique task name (default: the function's name). */
  name?: string | undefined;
  /** Retries (default: none). */
  retryPolicy?: RetryPolicy | RetryPolicyOptions | undefined;
  /**
   * Store only the state, not the return value: `get()` resolves to `undefined`. Given as a
   * literal `true`, the task's result type is `undefined` too.
   */
  ignoreResult?: boolean | undefined;
  /** When arguments and results are validated (default: the app's). */
  validationMode?: ValidationMode | undefined;
  /** Ack before running (`at_most_once`) or after the outcome is stored (default: the app's). */
  deliveryMode?: DeliveryMode | undefined;
  /**
   * A Standard Schema for the argument list: its input is what `delay()` takes, its output (an
   * array or a tuple; any other output type is a compile error at `app.task()`) is what the
   * handler receives.
   *
   * The handler's parameter types assume the arguments are validated in the worker, validation
   * mode `inputs` (the default) or `strict`. Under `none` or `outputs` the handler receives the
   * arguments as published (not coerced or transformed by the schema), whatever its parameter
   * types say; the types cannot tell, as the mode may come from the app or the environment
   * (`CHICORY_VALIDATION_MODE`).
   */
  args?: StandardSchemaV1 | undefined;
  /** A Standard Schema for the return value. */
  result?: StandardSchemaV1 | undefined;
  /** Pass a {@link TaskContext} as the handler's first parameter. */
  context?: boolean | undefined;
  /** Queue the task is published to (default `"default"`). */
  queue?: string | undefined;
  /** Per-attempt time limit (seconds or a unit string). */
  timeout?: Duration | undefined;
  /** Default priority 0-255, higher first where the broker supports it. */
  priority?: number | undefined;
}

/** Options of {@link Task.applyAsync}. */
export interface ApplyOptions {
  /** Run after this many seconds (or a unit string). */
  countdown?: Duration | undefined;
  /** Run at or after this time. */
  eta?: Date | undefined;
  /** Queue to publish to instead of the task's. */
  queue?: string | undefined;
  /** Priority 0-255 for this message. */
  priority?: number | undefined;
  /**
   * Caller-chosen task id (1-255 characters). Publishing an id that is still queued, delayed or running on the same
   * queue does not create a second job (idempotent enqueue, where the broker supports it:
   * SQLite and Redis); the returned result refers to the existing one.
   */
  taskId?: string | undefined;
}

/** What a task needs from its app (implemented by `Chicory`). */
export interface TaskRuntime {
  /** The broker `delay()` publishes to. */
  readonly broker: Broker;
  /** The result backend, or null (fire-and-forget). */
  readonly backend: Backend | null;
  /** The message codec (size limit, signing). */
  readonly codec: MessageCodec;
  /** Validation mode of a task that sets none (the app's `config.validationMode`). */
  readonly defaultValidationMode: ValidationMode;
  /** Delivery mode of a task that sets none (the app's `config.deliveryMode`). */
  readonly defaultDeliveryMode: DeliveryMode;
  /** Defaults of the results of `delay()` (one object shared by every result). */
  readonly resultDefaults: ResultDefaults;
  /** True once the broker is connected: `delay()` skips {@link TaskRuntime.ensureConnected}. */
  readonly isConnected: boolean;
  /** Connects the app on first use (a backend that fails to connect does not stop a publish). */
  ensureConnected(): Promise<void>;
}

/** A handler as stored by the registry: context first when `context` is on. */
export type AnyHandler = (...args: never[]) => unknown;

/**
 * A registered task. `A` is the argument tuple of `delay()`, `R` the (awaited) return type.
 * @example
 * const add = app.task(async function add(a: number, b: number) { return a + b; });
 * const result = await add.delay(1, 2);
 * console.log(await result.get({ timeout: 10 })); // 3
 */
export class Task<A extends readonly unknown[] = unknown[], R = unknown> {
  /** Unique task name. */
  readonly name: string;
  /** Queue the task is published to. */
  readonly queue: string;
  /** The retry policy (maxRetries 0 when none was given). */
  readonly retryPolicy: RetryPolicy;
  /** Whether only the state is stored. */
  readonly ignoreResult: boolean;
  /** Whether the handler receives a {@link TaskContext} first. */
  readonly usesContext: boolean;
  /** Per-attempt time limit in milliseconds, or undefined. */
  readonly timeoutMs: number | undefined;
  /** Default priority, or undefined. */
  readonly priority: number | undefined;
  /** The argument schema, if any. */
  readonly argsSchema: StandardSchemaV1 | undefined;
  /** The result schema, if any. */
  readonly resultSchema: StandardSchemaV1 | undefined;
  /** The handler as registered. */
  readonly handler: AnyHandler;
  readonly #validationMode: ValidationMode | undefined;
  readonly #deliveryMode: DeliveryMode | undefined;
  readonly #runtime: TaskRuntime;
  /**
   * Rethrows a failed publish: a size refusal naming this task, a broker error naming the task
   * id (one function for every publish).
   */
  readonly #publishFailed = (error: unknown, taskId: string): never => {
    throw namingTask(error, this.name, taskId);
  };

  /** Not for direct use: tasks are made by `app.task()`, which registers them. */
  constructor(runtime: TaskRuntime, name: string, options: TaskOptions, handler: AnyHandler) {
    assertValidName(name, "task");
    checkOptionKeys(options, `task ${name}`, TASK_OPTION_KEYS, UNSUPPORTED_TASK_OPTIONS);
    this.#runtime = runtime;
    this.name = name;
    // null (a JavaScript caller's "none") is not taken for "left out": said, as applyAsync does
    for (const key of ["queue", "retryPolicy"] as const) {
      if ((options[key] as unknown) === null) {
        throw new ConfigurationError(
          `task ${name} ${key}: null is not a value; leave the option out for its default${key === "retryPolicy" ? " (no retries)" : ' ("default")'}`,
        );
      }
    }
    this.queue = options.queue ?? "default";
    assertValidName(this.queue, "queue");
    const policy = options.retryPolicy;
    this.retryPolicy =
      policy instanceof RetryPolicy ? policy : policy === undefined ? RetryPolicy.none() : new RetryPolicy(policy);
    this.ignoreResult = optionalFlag(options.ignoreResult, `task ${name} ignoreResult`);
    this.usesContext = optionalFlag(options.context, `task ${name} context`);
    this.timeoutMs = options.timeout === undefined ? undefined : toMs(options.timeout, `task ${name} timeout`);
    if (this.timeoutMs === 0) {
      throw new ConfigurationError(`task ${name} timeout: must be more than 0 (leave it out for no time limit)`);
    }
    this.priority =
      options.priority === undefined ? undefined : checkInt(options.priority, `task ${name} priority`, 0, 255);
    this.argsSchema = optionalSchema(options.args, `task ${name} args`);
    this.resultSchema = optionalSchema(options.result, `task ${name} result`);
    this.handler = handler;
    // left out: the app's default applies
    this.#validationMode =
      options.validationMode === undefined
        ? undefined
        : checkChoice(options.validationMode, `task ${name} validationMode`, VALIDATION_MODES);
    this.#deliveryMode =
      options.deliveryMode === undefined
        ? undefined
        : checkChoice(options.deliveryMode, `task ${name} deliveryMode`, DELIVERY_MODES);
  }

  /** Effective validation mode (task's, else the app's). */
  get validationMode(): ValidationMode {
    return this.#validationMode ?? this.#runtime.defaultValidationMode;
  }

  /** Effective delivery mode (task's, else the app's). */
  get deliveryMode(): DeliveryMode {
    return this.#deliveryMode ?? this.#runtime.defaultDeliveryMode;
  }

  /**
   * Dispatches the task and returns a handle on its result. The arguments must be JSON: for a
   * task made by `app.task()`, one whose type is not (a `Date`, a `Map`...) fails to compile
   * (`A` is the handler's parameters through `JsonArgs`), and one that is not at run time (a
   * class instance, `NaN`) is refused with a `ValidationError`.
   */
  delay(...args: A): Promise<AsyncResult<R>> {
    return this.applyAsync(args);
  }

  /** Dispatches the task without keeping a result handle; returns the task id. */
  async send(...args: A): Promise<string> {
    const result = await this.applyAsync(args);
    return result.taskId;
  }

  /** Dispatches the task with options: delay, queue, priority, caller-chosen id. */
  applyAsync(args: Readonly<A>, options: ApplyOptions = NO_OPTIONS): Promise<AsyncResult<R>> {
    // Not an `async` function: a suspended one would keep all its locals (the message, its
    // JSON, the options) alive while the publish is pending, for every one of many concurrent
    // dispatches. Every check still reports through the returned promise, never by throwing.
    try {
      let list = Array.isArray(args) ? (args as readonly unknown[]) : null;
      if (list === null) throw new ValidationError(`task "${this.name}": arguments must be an array`);
      // Trailing `undefined`s are optional parameters left out (`f(1, undefined)` is `f(1)`).
      let count = list.length;
      while (count > 0 && list[count - 1] === undefined) count--;
      if (count < list.length) list = list.slice(0, count);
      for (let i = 0; i < list.length; i++) {
        const bad = findNonJson(list[i], `argument ${i + 1}`);
        if (bad) {
          throw new ValidationError(
            `task "${this.name}": ${bad}; arguments must be JSON-representable${list[i] === undefined ? " (pass null)" : ""}`,
          );
        }
      }
      const mode = this.validationMode;
      if (this.argsSchema !== undefined && (mode === "inputs" || mode === "strict")) {
        return this.#dispatchValidated(this.argsSchema, list, options);
      }
      return this.#dispatch(list, options, false);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  async #dispatchValidated(
    schema: StandardSchemaV1,
    list: readonly unknown[],
    options: ApplyOptions,
  ): Promise<AsyncResult<R>> {
    await validateWithSchema(schema, list, `task "${this.name}" arguments`);
    return this.#dispatch(list, options, true);
  }

  /** Builds, encodes and publishes the message; throws on bad options (callers turn it into a rejection). */
  #dispatch(list: readonly unknown[], options: ApplyOptions, validated: boolean): Promise<AsyncResult<R>> {
    const runtime = this.#runtime;
    // an untyped caller's typo (`countdwn`) would otherwise run the job at once
    if (options !== NO_OPTIONS) checkOptionKeys(options, "applyAsync", APPLY_OPTION_KEYS, {}, ValidationError);
    // (a `null` option is refused as any other value of the wrong type, not taken for "left out")
    const queue = options.queue === undefined ? this.queue : options.queue;
    if (options.queue !== undefined) assertValidName(queue, "queue");
    const priority = options.priority === undefined ? this.priority : options.priority;
    if (priority !== undefined && !(Number.isInteger(priority) && priority >= 0 && priority <= 255)) {
      const got = typeof priority === "string" ? JSON.stringify(priority) : String(priority);
      throw new ValidationError(`applyAsync: priority: expected an integer from 0 to 255, got ${got}`);
    }
    const delayMs = delayOf(options);
    const taskId = options.taskId === undefined ? newTaskId() : options.taskId;
    if (options.taskId !== undefined && !isValidTaskId(taskId)) {
      throw new ValidationError(
        `taskId must be a well-formed string of 1-${MAX_TASK_ID_LENGTH} characters (no lone surrogates)`,
      );
    }
    const idProblem = options.taskId === undefined ? undefined : runtime.backend?.taskIdProblem?.(taskId);
    if (idProblem !== undefined) throw new ValidationError(`taskId: ${idProblem}`);
    const message: TaskMessage = {
      v: 1,
      id: taskId,
      name: this.name,
      args: list as JsonValue[],
      retries: 0,
      eta: delayMs > 0 ? new Date(Date.now() + delayMs).toISOString() : null,
      priority: priority ?? null,
      firstFailureAt: null,
      lastError: null,
    };
    // Built above in canonical order from checked parts (the name was checked at registration);
    // a schema may have touched the arguments meanwhile, so they are checked again after one.
    let body: string;
    try {
      body = validated ? runtime.codec.encode(message) : runtime.codec.encodeChecked(message);
    } catch (error) {
      // named here, where the caller reads it (a worker's retry names the task apart)
      throw namingTask(error, this.name, taskId);
    }
    const outgoing: OutgoingMessage = {
      id: taskId,
      body,
      delayMs: delayMs > 0 ? delayMs : undefined,
      priority: priority ?? null,
      unique: options.taskId !== undefined,
    };
    const result = new AsyncResult<R>(taskId, runtime.backend, runtime.resultDefaults, queue, this.name);
    // A caller-chosen id may name a job that exists already (idempotent enqueue) and whose
    // record may have been announced before now: only a new id's announcement is still to come.
    const isNewId = options.taskId === undefined;
    if (!runtime.isConnected) {
      return runtime.ensureConnected().then(
        () => publishFor(runtime, queue, outgoing, isNewId, result, this.#publishFailed),
        // named, as a publish's failure is (an un-awaited delay() cut by a disconnect() is
        // otherwise an unhandled rejection that names nothing of the caller's)
        (error: unknown) => {
          throw namingTask(error, this.name, taskId);
        },
      );
    }
    return publishFor(runtime, queue, outgoing, isNewId, result, this.#publishFailed);
  }
}

/**
 * Publishes `outgoing`, then resolves with `result` (a function of its own: its two closures, one
 * for each outcome, keep only `result`, and `outgoing` and `refused`).
 */
function publishFor<R>(
  runtime: TaskRuntime,
  queue: string,
  outgoing: OutgoingMessage,
  isNewId: boolean,
  result: AsyncResult<R>,
  refused: (error: unknown, taskId: string) => never,
): Promise<AsyncResult<R>> {
  // (`refused`: a size refusal by the broker's server, RabbitMQ's max_message_size or Redis's
  // proto-max-bulk-len, names the task, as one by the local limit does; a broker error names
  // the task id, by which a publish whose outcome is unknown can be looked up)
  const failed = (error: unknown) => refused(error, outgoing.id);
  if (!isNewId) return publishReusedId(runtime, queue, outgoing).then(() => result, failed);
  runtime.backend?.expectResult?.(outgoing.id);
  return runtime.broker.publish(queue, outgoing).then(() => result, failed);
}

/**
 * `error`, or when it is a {@link MessageTooLargeError} that does not name its task, one that
 * does; when it is a {@link BrokerConnectionError} that names no task id, one of the same class
 * that does (a new error: a broker may reject a whole batch of publishes with one).
 */
function namingTask(error: unknown, taskName: string, taskId: string): unknown {
  if (error instanceof BrokerConnectionError) {
    if (error.taskId !== undefined) return error;
    const Class = error.constructor as typeof BrokerConnectionError;
    return new Class(`${error.message} (task ${taskName}, id ${taskId})`, {
      cause: error,
      taskId,
      isRefused: error.isRefused,
    });
  }
  if (!(error instanceof MessageTooLargeError) || error.taskName !== undefined) return error;
  return new MessageTooLargeError(error.size, error.limit, { taskName, source: error.source, cause: error });
}

/**
 * How long the publish of a caller-chosen id waits for the backend, the read before it and the
 * delete after it together (the delete at least {@link PREVIOUS_RUN_DELETE_MS}).
 */
const PREVIOUS_RUN_MS = 1000;
const PREVIOUS_RUN_DELETE_MS = 250;

/**
 * Publishes a message whose id the caller chose, which may name a job that ran before (once
 * that run has finished, the same id enqueues a new one). The id's record is read first (only
 * its state and time where the backend can); when the publish enqueues a new run and that
 * record is a finished run's, it is deleted if it is still the same record, so `get()` and
 * `state()` follow the new run instead of returning the old outcome (a record the new run
 * wrote meanwhile is kept). Best effort, and bounded by {@link PREVIOUS_RUN_MS}: a backend that
 * fails or does not answer in time leaves the old outcome visible until the new run ends (a
 * late delete still happens); the publish itself always goes ahead.
 */
async function publishReusedId(runtime: TaskRuntime, queue: string, outgoing: OutgoingMessage): Promise<void> {
  const backend = runtime.backend;
  let seen: Pick<TaskRecord, "state" | "updatedAt"> | null = null;
  const startedAt = performance.now();
  if (backend?.deleteResultIf) {
    // (the first delay() waits for the backend's connect at most 250 ms: it may still be
    // connecting, and its connect counts within the same bound)
    const reading = (async () => resultStampOf(await connectedBackend(backend), outgoing.id))().catch(
      () => null, // unreadable or unreachable: nothing to compare, nothing deleted
    );
    if (await settlesWithin(reading, PREVIOUS_RUN_MS)) seen = await reading;
  }
  const { published } = await runtime.broker.publish(queue, outgoing);
  if (!published || seen === null || !isTerminalState(seen.state) || !backend?.deleteResultIf) return;
  const deleting = backend.deleteResultIf(outgoing.id, seen).catch(() => false);
  const left = Math.max(PREVIOUS_RUN_DELETE_MS, PREVIOUS_RUN_MS - (performance.now() - startedAt));
  await settlesWithin(deleting, left);
}

/** The keys of {@link ApplyOptions}. */
const APPLY_OPTION_KEYS: ReadonlySet<string> = new Set(["countdown", "eta", "queue", "priority", "taskId"]);
/** The options of a `delay()` (none: nothing to check, no object per call). */
const NO_OPTIONS: ApplyOptions = Object.freeze({});

function delayOf(options: ApplyOptions): number {
  if (options.countdown !== undefined && options.eta !== undefined) {
    throw new ValidationError("applyAsync: pass countdown or eta, not both");
  }
  if (options.countdown !== undefined) {
    let ms: number;
    try {
      ms = toMs(options.countdown, "applyAsync: countdown");
    } catch (error) {
      // a bad call argument, like a bad eta: a ValidationError, not a configuration one
      throw new ValidationError((error as Error).message);
    }
    if (ms > MAX_DELAY_SECONDS * 1000) {
      throw new ValidationError(`applyAsync: countdown: at most ten years, got ${String(options.countdown)}`);
    }
    return ms;
  }
  if (options.eta !== undefined) {
    const at = options.eta instanceof Date ? options.eta.getTime() : Number.NaN;
    if (Number.isNaN(at)) throw new ValidationError("applyAsync: eta must be a valid Date");
    const ms = Math.max(0, at - Date.now());
    if (ms > MAX_DELAY_SECONDS * 1000) {
      throw new ValidationError(`applyAsync: eta: at most ten years ahead, got ${options.eta.toISOString()}`);
    }
    return ms;
  }
  return 0;
}

/** A boolean task option: `false` when left out; anything but a boolean is refused. */
function optionalFlag(value: unknown, what: string): boolean {
  return value === undefined ? false : checkFlag(value, what);
}

/** A Standard Schema task option (an object with `~standard.validate`), or undefined. */
function optionalSchema(value: unknown, what: string): StandardSchemaV1 | undefined {
  if (value === undefined) return undefined;
  const standard =
    value !== null && (typeof value === "object" || typeof value === "function")
      ? (value as { "~standard"?: { validate?: unknown } })["~standard"]
      : undefined;
  if (typeof standard?.validate !== "function") {
    throw new ConfigurationError(
      `${what}: expected a Standard Schema (zod, valibot, arktype...: an object with "~standard".validate), got ${describeValue(value)}`,
    );
  }
  return value as StandardSchemaV1;
}

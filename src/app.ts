/**
 * The application (SPEC §2): configuration, the task registry, the broker and the backend.
 * @module
 */

import type { StandardSchemaV1 } from "@standard-schema/spec";
import type { Backend, TaskRecord } from "./backends/backend.js";
import type { Broker } from "./brokers/broker.js";
import {
  type ChicoryConfig,
  type ChicoryConfigInput,
  type DeliveryMode,
  givenSpec,
  resolveConfig,
  type ValidationMode,
} from "./config.js";
import type { TaskContext } from "./context.js";
import { DisconnectGate } from "./core/disconnect-gate.js";
import { checkOptionKeys, type EnvMap, keysOf } from "./core/env.js";
import type { JsonArgs } from "./core/json.js";
import { describeLocation } from "./core/location.js";
import { MessageCodec } from "./core/message.js";
import { isValidName } from "./core/names.js";
import { sharedWithin } from "./core/shared-calls.js";
import { settlesWithin } from "./core/sleep.js";
import { warnOnce } from "./core/warn-once.js";
import {
  type BackendType,
  type BrokerType,
  createBackend,
  createBackendBeside,
  createBackendBesideObject,
  createBroker,
  createDefaultBackend,
  DEFAULT_BROKER_SPEC,
} from "./drivers.js";
import {
  BackendConnectionError,
  BrokerConnectionError,
  ChicoryError,
  ConfigurationError,
  DriverNotInstalledError,
  ReplayRecordKeptError,
  TaskNotFoundError,
} from "./errors.js";
import { bindResultDefaults, type ResultDefaults, type StoredResult } from "./result.js";
import { type AnyHandler, Task, type TaskOptions, type TaskRuntime } from "./task.js";

/**
 * Longest wait of a `delay()` that connects the app for the result backend's connect (a
 * healthy one takes milliseconds): past it, the publish goes ahead (see #connectForPublish).
 */
const BACKEND_CONNECT_WAIT_MS = 250;
/** Longest wait for the backend's record before a DLQ replay gives up (nothing replayed). */
const REPLAY_READ_TIMEOUT_MS = 10_000;

/** Options of {@link Chicory}. */
export interface ChicoryOptions {
  /** A kind (`"redis"`), a URL (`"redis://..."`) or a broker instance. Default: `CHICORY_BROKER_URL`, else `sqlite:chicory.db`. */
  broker?: BrokerType | (string & {}) | Broker | undefined;
  /** A kind, a URL, a backend instance, or null for none. Default: `CHICORY_BACKEND_URL`, else the broker's location when it can hold results. */
  backend?: BackendType | (string & {}) | Backend | null | undefined;
  /** Configuration (over environment variables and `.env`). */
  config?: ChicoryConfigInput | undefined;
  /** App default validation mode (wins over `config`). */
  validationMode?: ValidationMode | undefined;
  /** App default delivery mode (wins over `config`). */
  deliveryMode?: DeliveryMode | undefined;
}

const CHICORY_OPTION_KEYS = keysOf<ChicoryOptions>({
  broker: true,
  backend: true,
  config: true,
  validationMode: true,
  deliveryMode: true,
});

/** A lifecycle hook run by each worker process. */
export type WorkerHook = () => void | Promise<void>;

type Awaitable<T> = T | Promise<T>;
type SchemaIn<S> = S extends StandardSchemaV1 ? StandardSchemaV1.InferInput<S> : never;
type SchemaOut<S> = S extends StandardSchemaV1 ? StandardSchemaV1.InferOutput<S> : never;
type Tuple<T> = T extends readonly unknown[] ? T : never;

/** An argument schema: its output is the handler's argument list (a tuple or an array). */
type ArgsSchema = StandardSchemaV1<unknown, readonly unknown[]>;
/** `delay()`'s arguments for an argument schema: its input, or any list when its input is `unknown`. */
type ArgsIn<S> = unknown extends SchemaIn<S> ? unknown[] : Tuple<SchemaIn<S>>;
/** A handler's return type. */
type ReturnOf<F> = F extends (...args: never) => infer R ? R : never;
/**
 * The result type of a task: `undefined` when `ignoreResult` is literally `true` (nothing is
 * stored), else the handler's, with `null` for nothing (JSON; see {@link StoredResult}).
 */
type ResultOf<I, R, RS = undefined> = [I] extends [true]
  ? undefined
  : [ResultSchemaOut<RS>] extends [R]
    ? StoredResult<R>
    : StoredResult<R | ResultSchemaOut<RS>>;
/**
 * What a result schema adds to the result type: its output (stored in place of the handler's
 * value when the validation mode checks results, `outputs` or `strict`); nothing without a
 * schema, or for one whose output type is `unknown`.
 */
type ResultSchemaOut<RS> = [RS] extends [StandardSchemaV1]
  ? unknown extends SchemaOut<RS>
    ? never
    : SchemaOut<RS>
  : never;
/**
 * What the task overloads require of a result schema `RS` given a handler returning `R`: that
 * `R` fits the schema's input (its check would refuse it otherwise), when that input is known.
 */
type ResultCheck<RS, R> = [RS] extends [StandardSchemaV1]
  ? unknown extends SchemaIn<RS>
    ? unknown
    : unknown extends R // (not inferred yet: a handler whose parameters come from the context)
      ? unknown
      : [R] extends [SchemaIn<RS>]
        ? unknown
        : { result: "the handler's return type does not fit this result schema's input" }
  : unknown;

/** An option's type in `O`, or `undefined` when `O` leaves it out. */
type OptionOf<O, K extends keyof TaskOptions> = K extends keyof O ? O[K] : undefined;
/** Whether `O` fixes `context`: `"on"` (`true`), `"off"` (`false` or left out), else `"unknown"` (a `boolean`). */
type ContextKind<O> = [OptionOf<O, "context">] extends [true]
  ? "on"
  : [OptionOf<O, "context">] extends [false | undefined]
    ? "off"
    : "unknown";
/**
 * Whether `O` fixes `args`: `"none"` (left out), `"known"` (a schema of known output), else
 * `"unknown"` (a schema that may be left out, or one typed `StandardSchemaV1` whose output is `unknown`).
 */
type ArgsKind<O> = [OptionOf<O, "args">] extends [undefined]
  ? "none"
  : [OptionOf<O, "args">] extends [StandardSchemaV1]
    ? unknown extends SchemaOut<OptionOf<O, "args">>
      ? "unknown"
      : "known"
    : "unknown";
/**
 * What the general overload requires of options `O` besides `TaskOptions`: no key that is not an
 * option (a misspelt option is an error, as in an object literal), and an argument schema whose
 * output is an argument list when its output is known.
 */
type OptionsCheck<O> = { [K in Exclude<keyof O, keyof TaskOptions>]: never } & (ArgsKind<O> extends "known"
  ? [SchemaOut<OptionOf<O, "args">>] extends [readonly unknown[]]
    ? unknown
    : { args: ArgsSchema }
  : unknown);
/**
 * A handler whose parameters are not checked: any handler fits (a method's parameters are compared
 * both ways), and an unannotated parameter is `unknown`.
 */
type UncheckedHandler = { handler(...args: unknown[]): unknown }["handler"];
/** As {@link UncheckedHandler}, but its first parameter must take a {@link TaskContext}. */
type UncheckedContextHandler = { handler(ctx: TaskContext, ...args: unknown[]): unknown }["handler"];
/**
 * The handlers the general overload accepts for options `O`: checked against the context and the
 * argument schema's output as far as the types of `O` fix them (as the precise overloads do when
 * they fix both), and not checked where they do not.
 */
type HandlerFor<O> =
  ContextKind<O> extends "unknown"
    ? UncheckedHandler
    : ArgsKind<O> extends "known"
      ? ContextKind<O> extends "on"
        ? (ctx: TaskContext, ...args: Tuple<SchemaOut<OptionOf<O, "args">>>) => unknown
        : (...args: Tuple<SchemaOut<OptionOf<O, "args">>>) => unknown
      : ContextKind<O> extends "on"
        ? UncheckedContextHandler
        : UncheckedHandler;
/**
 * What a handler registered without `context: true` must also be: one whose first parameter is
 * a {@link TaskContext} would get the first argument there (the context is passed only with
 * that option); the type says so at the registration, not at each `delay()`. (`any` passes.)
 */
type NoContextFirst<A extends readonly unknown[]> = A extends readonly [(infer First)?, ...unknown[]]
  ? 0 extends 1 & First
    ? unknown
    : IsContext<Exclude<First, undefined | null>> extends true
      ? { "its first parameter is a TaskContext: register it with the option { context: true }": never }
      : unknown
  : unknown;
/** Whether `T` (a first parameter's type, optional or not) is a {@link TaskContext}; `never` is not. */
type IsContext<T> = [T] extends [never] ? false : [T] extends [TaskContext] ? true : false;

/**
 * `delay()`'s arguments under the general overload: the argument schema's input when it is known,
 * else the handler's parameters (after the context) when `O` fixes `context`, each through
 * {@link JsonArgs}; else any list.
 */
type ArgsFor<O, F> =
  ArgsKind<O> extends "known"
    ? JsonArgs<ArgsIn<OptionOf<O, "args">>>
    : ContextKind<O> extends "on"
      ? F extends (ctx: never, ...args: infer A) => unknown
        ? JsonArgs<A>
        : never
      : ContextKind<O> extends "off"
        ? F extends (...args: infer A) => unknown
          ? JsonArgs<A>
          : never
        : unknown[];

/**
 * A read-only view of a map: the map's own methods that read, none that change it (a cast of
 * `app.tasks` to `Map` must not unregister a task).
 */
class ReadonlyMapView<K, V> implements ReadonlyMap<K, V> {
  readonly #map: ReadonlyMap<K, V>;

  constructor(map: ReadonlyMap<K, V>) {
    this.#map = map;
  }

  get size(): number {
    return this.#map.size;
  }

  get(key: K): V | undefined {
    return this.#map.get(key);
  }

  has(key: K): boolean {
    return this.#map.has(key);
  }

  forEach(callback: (value: V, key: K, map: ReadonlyMap<K, V>) => void, thisArg?: unknown): void {
    for (const [key, value] of this.#map) callback.call(thisArg, value, key, this);
  }

  entries(): MapIterator<[K, V]> {
    return this.#map.entries();
  }

  keys(): MapIterator<K> {
    return this.#map.keys();
  }

  values(): MapIterator<V> {
    return this.#map.values();
  }

  [Symbol.iterator](): MapIterator<[K, V]> {
    return this.#map.entries();
  }
}

/** `hook` when it is a function; else a ConfigurationError naming `method` (a JavaScript caller's mistake). */
function checkHook(hook: WorkerHook, method: string): WorkerHook {
  if (typeof hook !== "function") {
    throw new ConfigurationError(
      `app.${method}(): a hook must be a function, got ${hook === null ? "null" : typeof hook}`,
    );
  }
  return hook;
}

/** Runs `create`; a ConfigurationError it throws names `variable` (where the bad value came from). */
function namingVariable<T>(variable: string | undefined, create: () => T): T {
  try {
    return create();
  } catch (error) {
    // (an error that names its own variable, e.g. CHICORY_BROKER_REDIS_BLOCK_MS, or an option
    // and its variable, "tablePrefix (CHICORY_BACKEND_POSTGRES_TABLE_PREFIX): ", is not this one's)
    if (
      variable === undefined ||
      !(error instanceof ConfigurationError) ||
      /^(CHICORY_[A-Z0-9_]+|\w+ \(CHICORY_[A-Z0-9_]+\)): /.test(error.message)
    ) {
      throw error;
    }
    throw new ConfigurationError(`${variable}: ${error.message}`, { cause: error });
  }
}

/**
 * A Chicory application: register tasks, dispatch them, run workers.
 * @example
 * import { Chicory, Worker } from "chicory";
 * const app = new Chicory({ broker: "redis://127.0.0.1:6379" });
 * export const add = app.task(async function add(a: number, b: number) { return a + b; });
 * // producer:  const r = await add.delay(1, 2); await r.get({ timeout: 10 });
 * // worker:    await new Worker(app, { concurrency: 16 }).run();
 */
export class Chicory {
  /** The resolved configuration. */
  readonly config: ChicoryConfig;
  /** The broker (data plane and administration). */
  readonly broker: Broker;
  /** The result backend, or null (fire-and-forget). */
  readonly backend: Backend | null;
  /** The message codec (size limit, signing). */
  readonly codec: MessageCodec;
  readonly #tasks = new Map<string, Task<readonly unknown[], unknown>>();
  readonly #tasksView = new ReadonlyMapView(this.#tasks);
  readonly #startupHooks: WorkerHook[] = [];
  readonly #shutdownHooks: WorkerHook[] = [];
  #connecting: { readonly broker: Promise<void>; readonly all: Promise<void> } | null = null;
  /** The `disconnect()` under way, if any. */
  readonly #disconnecting = new DisconnectGate();
  /** Counts `disconnect()` calls: a connect that one overtook does not mark the app connected. */
  #connectEpoch = 0;
  /**
   * True once the broker is connected, by {@link Chicory.connect} or a `delay()` (see
   * #connectForPublish), until `disconnect`: a `delay()` then publishes at once.
   */
  #isPublishReady = false;
  /** Whether the broker is the embedded SQLite default (no `broker` option, no `CHICORY_BROKER_URL`). */
  readonly #isDefaultBroker: boolean;
  /** DLQ replays running (see #guardReplay). */
  #replaysRunning = 0;
  /** Whether a running replay opened the backend, which the last replay then closes. */
  #replayOpenedBackend = false;
  readonly #runtime: TaskRuntime;

  constructor(options: ChicoryOptions = {}) {
    checkOptionKeys(options, "Chicory", CHICORY_OPTION_KEYS);
    const input: ChicoryConfigInput = { ...options.config };
    if (options.validationMode) input.validationMode = options.validationMode;
    if (options.deliveryMode) input.deliveryMode = options.deliveryMode;
    this.config = resolveConfig(input);
    this.codec = new MessageCodec({
      maxMessageBytes: this.config.maxMessageBytes,
      signingKey: this.config.signingKey,
    });
    const context = { env: this.config.env };
    // a kind, a URL or an instance; a JavaScript caller's null or number is refused, not taken
    // for "left out" (the embedded default, silently)
    const givenBroker: string | Broker | undefined =
      options.broker === undefined || (typeof options.broker === "object" && options.broker !== null)
        ? options.broker
        : givenSpec(options.broker, "broker");
    const givenBackend: string | Backend | null | undefined =
      options.backend === undefined || typeof options.backend === "object"
        ? options.backend
        : givenSpec(options.backend, "backend");
    const brokerSpec = typeof givenBroker === "string" ? givenBroker : (this.config.brokerUrl ?? DEFAULT_BROKER_SPEC);
    this.#isDefaultBroker = givenBroker === undefined && this.config.brokerUrl === undefined;
    if (this.#isDefaultBroker) warnUnusedBrokerVariables(this.config.env);
    // a URL read from CHICORY_BROKER_URL / CHICORY_BACKEND_URL: its errors name the variable
    const brokerVariable =
      givenBroker === undefined && input.brokerUrl === undefined && this.config.brokerUrl !== undefined
        ? "CHICORY_BROKER_URL"
        : undefined;
    const backendVariable =
      givenBackend === undefined && input.backendUrl === undefined && this.config.backendUrl !== undefined
        ? "CHICORY_BACKEND_URL"
        : undefined;
    this.broker =
      typeof givenBroker === "object"
        ? givenBroker
        : namingVariable(brokerVariable, () => createBroker(brokerSpec, context));
    this.broker.bind({ codec: this.codec, guardReplay: (taskId, move) => this.#guardReplay(taskId, move) });
    if (givenBackend === null) this.backend = null;
    else if (typeof givenBackend === "object") this.backend = givenBackend;
    else {
      // The backend defaults to the broker's own location; for SQLite that is the file the
      // broker resolved (CHICORY_BROKER_SQLITE_PATH included), so both share one file.
      const spec = givenBackend ?? this.config.backendUrl;
      if (spec !== undefined) {
        this.backend = namingVariable(backendVariable, () =>
          typeof givenBroker === "object"
            ? createBackendBesideObject(spec, givenBroker, context)
            : createBackendBeside(spec, brokerSpec, context),
        );
      } else if (typeof givenBroker === "object") this.backend = null;
      else if (this.broker.kind === "sqlite") this.backend = createBackend(this.broker.displayUrl, context);
      else this.backend = createDefaultBackend(brokerSpec, context) ?? null;
    }
    const app = this;
    const resultDefaults: ResultDefaults = {
      pollInterval: this.config.resultPollInterval,
      defaultTimeout: this.config.resultDefaultTimeout,
      // shared by the get()s that time out together (one count per queue per 100 ms, not one each)
      countConsumers: sharedWithin(100, (queue) => this.broker.getConsumerCount(queue)),
      get brokerLocation() {
        return describeLocation(app.broker);
      },
    };
    if (this.backend) bindResultDefaults(this.backend, resultDefaults);
    this.#runtime = {
      get broker() {
        return app.broker;
      },
      get backend() {
        return app.backend;
      },
      get codec() {
        return app.codec;
      },
      get defaultValidationMode() {
        return app.config.validationMode;
      },
      get defaultDeliveryMode() {
        return app.config.deliveryMode;
      },
      get resultDefaults() {
        return resultDefaults;
      },
      get isConnected() {
        return app.#isPublishReady;
      },
      ensureConnected: () => this.#connectForPublish(),
    };
  }

  /** Registers a handler named after the function. */
  task<A extends unknown[], R>(
    fn: ((...args: A) => Awaitable<R>) & NoContextFirst<A>,
  ): Task<JsonArgs<A>, StoredResult<Awaited<R>>>;
  /**
   * Registers a handler with an argument schema (whose output is its argument list) and a context.
   * A `result` schema must take what the handler returns; the result type then includes its
   * output (stored instead when the validation mode checks results).
   */
  task<S extends ArgsSchema, R, I extends boolean = false, RS extends StandardSchemaV1 | undefined = undefined>(
    options: TaskOptions & { args: S; context: true; ignoreResult?: I | undefined; result?: RS } & ResultCheck<
        RS,
        NoInfer<Awaited<R>>
      >,
    fn: (ctx: TaskContext, ...args: Tuple<SchemaOut<S>>) => Awaitable<R>,
  ): Task<JsonArgs<ArgsIn<S>>, ResultOf<I, Awaited<R>, RS>>;
  /** Registers a handler with an argument schema (whose output is its argument list); `result` as above. */
  task<S extends ArgsSchema, R, I extends boolean = false, RS extends StandardSchemaV1 | undefined = undefined>(
    options: TaskOptions & { args: S; context?: false; ignoreResult?: I | undefined; result?: RS } & ResultCheck<
        RS,
        NoInfer<Awaited<R>>
      >,
    fn: (...args: Tuple<SchemaOut<S>>) => Awaitable<R>,
  ): Task<JsonArgs<ArgsIn<S>>, ResultOf<I, Awaited<R>, RS>>;
  /** Registers a handler that receives a {@link TaskContext} first; `result` as above. */
  task<A extends unknown[], R, I extends boolean = false, RS extends StandardSchemaV1 | undefined = undefined>(
    options: TaskOptions & { context: true; args?: undefined; ignoreResult?: I | undefined; result?: RS } & ResultCheck<
        RS,
        NoInfer<Awaited<R>>
      >,
    fn: (ctx: TaskContext, ...args: A) => Awaitable<R>,
  ): Task<JsonArgs<A>, ResultOf<I, Awaited<R>, RS>>;
  /** Registers a handler with options; `result` as above. */
  task<A extends unknown[], R, I extends boolean = false, RS extends StandardSchemaV1 | undefined = undefined>(
    options: TaskOptions & {
      context?: false;
      args?: undefined;
      ignoreResult?: I | undefined;
      result?: RS;
    } & ResultCheck<RS, NoInfer<Awaited<R>>>,
    fn: ((...args: A) => Awaitable<R>) & NoContextFirst<A>,
  ): Task<JsonArgs<A>, ResultOf<I, Awaited<R>, RS>>;
  /**
   * Registers a handler with options whose types leave `context` or `args` open (a variable typed
   * `TaskOptions`, spread `Partial<TaskOptions>` defaults, `{ context: boolean }`, an argument
   * schema typed `StandardSchemaV1`). The handler is checked as far as those types go: its first
   * parameter against `TaskContext` when `context` is literally `true`, its parameters against the
   * argument schema's output when that is known; the rest is not checked, and an unannotated
   * parameter is `unknown`. `delay()` takes the schema's input when it is known, else the
   * handler's parameters (after the context) when `context` is literally `true` or `false`, else
   * any arguments (`unknown[]`: only the run-time checks apply). The result type is the handler's
   * (`undefined` with a literal `ignoreResult: true`). Options whose types fix both are checked
   * exactly as by the overloads above; an unknown option key is an error.
   * @example
   * const defaults: TaskOptions = { queue: "mail", retryPolicy: { maxRetries: 3 } };
   * const notify = app.task({ ...defaults, name: "notify" }, async (to: string) => to); // Task<unknown[], string>
   * // typed delay(): defaults written with `satisfies` keep their literal types
   * const typed = { queue: "mail", retryPolicy: { maxRetries: 3 } } satisfies TaskOptions;
   * const notify2 = app.task({ ...typed, name: "notify2" }, async (to: string) => to); // Task<[to: string], string>
   */
  task<const O extends TaskOptions, F extends HandlerFor<O>>(
    options: O & OptionsCheck<O> & ResultCheck<OptionOf<O, "result">, NoInfer<Awaited<ReturnOf<F>>>>,
    fn: F & (ContextKind<O> extends "off" ? NoContextFirst<Parameters<F>> : unknown),
  ): Task<ArgsFor<O, F>, ResultOf<OptionOf<O, "ignoreResult">, Awaited<ReturnOf<F>>, OptionOf<O, "result">>>;
  task(optionsOrFn: TaskOptions | AnyHandler, maybeFn?: AnyHandler): Task<readonly unknown[], unknown> {
    // (from JavaScript: the arguments swapped, or a name given alone, would otherwise register a
    // task without its options, or under a misleading error)
    if (typeof optionsOrFn === "function" && maybeFn !== undefined) {
      throw new ConfigurationError("app.task(): the options go first: app.task(options, fn)");
    }
    if (typeof optionsOrFn !== "function" && (optionsOrFn === null || typeof optionsOrFn !== "object")) {
      const got = optionsOrFn === null ? "null" : typeof optionsOrFn;
      const hint =
        typeof optionsOrFn === "string" ? ` (for a name: app.task({ name: ${JSON.stringify(optionsOrFn)} }, fn))` : "";
      throw new ConfigurationError(`app.task(): options must be an object, got ${got}${hint}`);
    }
    const options: TaskOptions = typeof optionsOrFn === "function" ? {} : optionsOrFn;
    const fn = typeof optionsOrFn === "function" ? optionsOrFn : maybeFn;
    if (typeof fn !== "function") throw new ConfigurationError("app.task(): a handler function is required");
    // a name given (not null, as options read from JSON may hold) is checked by the task as
    // it is, an empty one too: only a missing one falls back to the function's
    const name = options.name ?? fn.name;
    if (options.name == null && !name) {
      throw new ConfigurationError("app.task(): an anonymous function needs options.name");
    }
    if (options.name == null && !isValidName(name)) {
      // e.g. "bound f" (from f.bind()): the function's name is no task name, but one can be given
      throw new ConfigurationError(
        `app.task(): the function's name "${fn.name.slice(0, 130)}" is no valid task name (1-128 of [A-Za-z0-9._:-]): give one as options.name`,
      );
    }
    if (this.#tasks.has(name)) throw new ConfigurationError(`app.task(): a task named "${name}" is already registered`);
    const task = new Task(this.#runtime, name, options, fn);
    this.#tasks.set(name, task);
    return task;
  }

  /**
   * The task registered under `name`.
   * @throws TaskNotFoundError
   */
  getTask(name: string): Task<readonly unknown[], unknown> {
    const task = this.#tasks.get(name);
    if (!task) throw new TaskNotFoundError(name);
    return task;
  }

  /** Registered tasks by name (read-only: a view of the registry, which `app.task()` alone adds to). */
  get tasks(): ReadonlyMap<string, Task<readonly unknown[], unknown>> {
    return this.#tasksView;
  }

  /**
   * Registers a hook run after connecting, before any job (open pools, warm caches): once per
   * process by the first worker of this app to start, however many serve it.
   */
  onWorkerStartup(hook: WorkerHook): void {
    this.#startupHooks.push(checkHook(hook, "onWorkerStartup"));
  }

  /**
   * Registers a hook run before disconnecting, once the startup hooks have run: by the last
   * worker of this app in the process to leave (stopping, or failing its start) with no other
   * running or starting.
   */
  onWorkerShutdown(hook: WorkerHook): void {
    this.#shutdownHooks.push(checkHook(hook, "onWorkerShutdown"));
  }

  /** @internal Hooks for the worker. */
  get workerHooks(): { startup: readonly WorkerHook[]; shutdown: readonly WorkerHook[] } {
    return { startup: this.#startupHooks, shutdown: this.#shutdownHooks };
  }

  /**
   * Around the move of a DLQ replay (`app.broker.replayFromDlq`, `chicory dlq replay`): reads
   * the task's stored record first, and once the entry is back in its queue deletes that
   * record if it still is the failure read (`FAILURE` or `DEAD_LETTERED`, same time). A
   * `get()` after the replay then waits for the new run instead of returning the old failure;
   * a record a newer run wrote meanwhile is kept.
   * @throws ChicoryError (BackendConnectionError when unreachable) when the record cannot be read: nothing is replayed
   * @throws ReplayRecordKeptError when the entry was replayed but its old record could not be deleted
   */
  async #guardReplay(taskId: string | undefined, move: () => Promise<boolean>): Promise<boolean> {
    const backend = this.backend;
    if (!backend || !hasDeleteIf(backend) || taskId === undefined) return move();
    // A backend nobody opened (neither the app nor its caller: `backend.connect()`, another app
    // sharing it) is opened for the replays running, and closed after the last (an admin
    // script that connected just the broker must still be able to exit).
    if (this.#connecting === null && backend.isOpen !== true) this.#replayOpenedBackend = true;
    this.#replaysRunning++;
    try {
      return await this.#replayClearing(backend, taskId, move);
    } finally {
      if (--this.#replaysRunning === 0 && this.#replayOpenedBackend) {
        this.#replayOpenedBackend = false;
        if (this.#connecting === null) await backend.disconnect().catch(() => undefined);
      }
    }
  }

  async #replayClearing(
    backend: Backend & Required<Pick<Backend, "deleteResultIf">>,
    taskId: string,
    move: () => Promise<boolean>,
  ): Promise<boolean> {
    let seen: TaskRecord | null;
    try {
      // Bounded: a broker may hold its DLQ entry (RabbitMQ: unacknowledged, its DLQ locked in
      // this process) while this read runs, and a backend that is down may queue it.
      const reading = (async () => {
        await backend.connect();
        return backend.getResult(taskId);
      })();
      if (!(await settlesWithin(reading, REPLAY_READ_TIMEOUT_MS))) {
        reading.catch(() => undefined);
        throw new BackendConnectionError(`no answer within ${REPLAY_READ_TIMEOUT_MS / 1000} s`);
      }
      seen = await reading;
    } catch (error) {
      const why = `DLQ replay of task ${taskId}: nothing was replayed, its stored result could not be read (a replay would have left an old failure in place; AsyncResult.forget() deletes an unreadable one): ${describe(error)}`;
      throw error instanceof BackendConnectionError
        ? new BackendConnectionError(why, { cause: error })
        : new ChicoryError(why, { cause: error });
    }
    const moved = await move();
    if (!moved || seen === null || (seen.state !== "FAILURE" && seen.state !== "DEAD_LETTERED")) return moved;
    const left = `DLQ replay of task ${taskId}: the task was replayed, but its stored ${seen.state} result could not be deleted, so get() returns it until the new run ends (AsyncResult.forget() deletes it)`;
    let isStale: boolean;
    try {
      // false: the record changed meanwhile (a newer run's, kept), or it could not be matched
      isStale = !(await backend.deleteResultIf(taskId, seen)) && isSame(await backend.getResult(taskId), seen);
    } catch (error) {
      throw new ReplayRecordKeptError(`${left}: ${describe(error)}`, { cause: error });
    }
    if (isStale) throw new ReplayRecordKeptError(`${left}: the backend did not match the record it returned`);
    return moved;
  }

  /**
   * @internal Connects the broker alone (the CLI's inspection commands); a missing driver of the
   * embedded default says that no broker was configured.
   */
  connectBroker(): Promise<void> {
    return this.broker.connect().catch((error: unknown) => {
      throw this.#isDefaultBroker ? defaultBrokerError(error, this.broker.displayUrl) : error;
    });
  }

  /**
   * Connects the broker and the backend; idempotent and safe to call concurrently.
   * @throws BrokerConnectionError or BackendConnectionError (the promise rejects) when one
   *   cannot connect, or when an `app.disconnect()` made after this call comes while it still
   *   connects (nothing is then left connected; once connected, it has resolved)
   */
  connect(): Promise<void> {
    return this.#connect().all;
  }

  /** The connect in progress (or done), started if there is none: the broker's part and the whole. */
  #connect(): { readonly broker: Promise<void>; readonly all: Promise<void> } {
    if (!this.#connecting) {
      const epoch = this.#connectEpoch;
      // after a disconnect() under way, which would close what this opens
      const disconnecting = this.#disconnecting.pending;
      // A disconnect() that comes meanwhile closes what this opened (and the parts not opened
      // yet are not: it would only wait for them, then close them): the connect then rejects.
      const overtaken = (part: "broker" | "backend", cause?: unknown): void => {
        if (this.#connectEpoch === epoch) return;
        const message = `connect: app.disconnect() was called while the app connected its ${part}; nothing is left connected (connect() again to use it)`;
        const options = cause === undefined ? undefined : { cause };
        throw part === "broker"
          ? new BrokerConnectionError(message, options)
          : new BackendConnectionError(message, options);
      };
      const broker = (
        disconnecting
          ? disconnecting.then(() => {
              overtaken("broker");
              return this.connectBroker();
            })
          : this.connectBroker()
      ).catch((error: unknown) => {
        overtaken("broker", error); // a connect the disconnect cut short says so
        throw error;
      });
      const all = (async () => {
        await broker;
        overtaken("broker");
        if (this.backend) {
          try {
            await this.backend.connect();
          } catch (error) {
            overtaken("backend", error); // (a SQL or Redis backend's own "disconnected while it ran")
            throw error;
          }
          overtaken("backend");
        }
        this.#isPublishReady = true;
      })();
      const connecting = { broker, all };
      this.#connecting = connecting;
      all.catch(() => {
        if (this.#connecting === connecting) this.#connecting = null;
      });
    }
    return this.#connecting;
  }

  /**
   * What a `delay()` needs first: the broker. Connects the whole app, as {@link Chicory.connect}
   * does (a `disconnect()` meanwhile waits for it, or cuts a SQL backend's, and closes both),
   * the backend too, so that a result's notification is expected from the first job on; but it
   * waits for the backend at most {@link BACKEND_CONNECT_WAIT_MS}: enqueueing needs no result
   * backend, so one that is slow to connect (a database that does not answer, a schema lock
   * held elsewhere) or does not connect at all does not hold the publish; a `get()` waits for
   * its connect (within its timeout), saying why it cannot. (A job published before the
   * backend's notifications are live is read once by its first `get()`.)
   */
  async #connectForPublish(): Promise<void> {
    const epoch = this.#connectEpoch;
    const { broker, all } = this.#connect();
    await broker; // its failure: the publish's
    await settlesWithin(
      all.catch(() => undefined), // the backend's: for get() to tell
      BACKEND_CONNECT_WAIT_MS,
    );
    if (this.#connectEpoch !== epoch) {
      // (the broker it connected is being closed: the publish would fail less clearly)
      throw new BrokerConnectionError(
        "app.disconnect() was called while the app connected for this publish: nothing was published (connect() again to use it)",
      );
    }
    this.#isPublishReady = true;
  }

  /**
   * Disconnects the broker and the backend; idempotent. A `connect()` (or a `delay()`) made
   * meanwhile connects again once it is done; one made before and still connecting rejects.
   */
  disconnect(): Promise<void> {
    return this.#disconnecting.closing(this.#disconnect());
  }

  async #disconnect(): Promise<void> {
    const pending = this.#connecting;
    const wasConnected = this.#isPublishReady;
    this.#connecting = null;
    this.#connectEpoch++;
    this.#isPublishReady = false;
    let brokerClosing: Promise<void> | undefined;
    if (pending) {
      // The broker and a backend still connecting are told now: the Redis adapters and the SQL
      // backends cut their connect (a server that accepts and never answers would hold it for
      // its connect timeout, a database until poolTimeout); the others finish it first.
      const backend = this.backend;
      brokerClosing = wasConnected ? undefined : this.broker.disconnect();
      const backendCut = backend?.isOpen === true && backend.isReady === false ? backend.disconnect() : undefined;
      await Promise.all([
        pending.all.catch(() => undefined),
        brokerClosing?.catch(() => undefined),
        backendCut?.catch(() => undefined),
      ]);
    }
    const errors: unknown[] = [];
    await brokerClosing?.catch((e: unknown) => errors.push(e));
    // (again after an early one: a broker that does not cut its connect opened it meanwhile)
    await this.broker.disconnect().catch((e: unknown) => errors.push(e));
    if (this.backend) await this.backend.disconnect().catch((e: unknown) => errors.push(e));
    if (errors.length > 0) {
      throw errors[0] instanceof ChicoryError ? errors[0] : new ChicoryError("disconnect failed", { cause: errors[0] });
    }
  }
}

function hasDeleteIf(backend: Backend): backend is Backend & Required<Pick<Backend, "deleteResultIf">> {
  return typeof backend.deleteResultIf === "function";
}

function isSame(record: TaskRecord | null, seen: TaskRecord): boolean {
  return record !== null && record.state === seen.state && record.updatedAt === seen.updatedAt;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * The embedded default broker's missing driver, told as what it is: no broker was configured
 * (a user of Redis or RabbitMQ who forgot `CHICORY_BROKER_URL` should not be sent to install
 * SQLite). Other errors are returned as they are.
 */
function defaultBrokerError(error: unknown, displayUrl: string): unknown {
  if (!(error instanceof DriverNotInstalledError)) return error;
  return new DriverNotInstalledError(
    "better-sqlite3@12",
    `no broker is configured (no broker option, CHICORY_BROKER_URL not set: set it, e.g. to redis://localhost:6379, for another broker), so the app uses the embedded SQLite default (${displayUrl}), which`,
    // the import's own failure: the broker's error it replaces said the same as this one
    { cause: error.cause ?? error },
  );
}

/** Variables that say where a Redis or RabbitMQ broker is, but select none by themselves. */
const BROKER_LOCATION_VARIABLES = [
  "CHICORY_BROKER_REDIS_URL",
  "CHICORY_BROKER_REDIS_HOST",
  "CHICORY_BROKER_RABBITMQ_URL",
  "CHICORY_BROKER_RABBITMQ_HOST",
];

/**
 * Warns when the app falls back to the embedded SQLite broker while a Redis or RabbitMQ
 * location variable is set: those only configure a broker selected by `CHICORY_BROKER_URL`
 * (or `broker:`), and a worker silently on `chicory.db` would never see the real queue.
 */
function warnUnusedBrokerVariables(env: EnvMap): void {
  const set = BROKER_LOCATION_VARIABLES.find((name) => env[name] !== undefined && env[name] !== "");
  if (set === undefined) return;
  const kind = set.includes("RABBITMQ") ? "rabbitmq" : "redis";
  warnOnce(
    `unused ${set}`,
    `${set} is set but no broker is selected, so the app uses the embedded SQLite default: set CHICORY_BROKER_URL=${kind} (or pass broker: "${kind}") to use it`,
    "CHICORY_BROKER_NOT_SELECTED",
  );
}

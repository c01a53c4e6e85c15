/**
 * The Worker (SPEC §6): consumes queues with bounded prefetch, runs tasks under a concurrency
 * limit, settles each outcome, sends heartbeats, cleans up stale workers and shuts down
 * gracefully. It talks to brokers and backends only through their interfaces.
 * @module
 */
import { setMaxListeners } from "node:events";
import { hostname as osHostname } from "node:os";
import type { Chicory, WorkerHook } from "../app.js";
import { type ResultSizeLimit, type StoredError, terminalStateOf, type WorkerStats } from "../backends/backend.js";
import type { Consumer, Delivery, HealthStatus } from "../brokers/broker.js";
import {
  isResolvedWorkerConfig,
  resolveWorkerConfig,
  WORKER_OPTION_KEYS,
  WORKER_OPTION_NOTES,
  type WorkerConfig,
  type WorkerOptions,
} from "../config.js";
import { type Duration, toSeconds } from "../core/duration.js";
import { checkOptionKeys, unknownEnvNames } from "../core/env.js";
import { newWorkerId } from "../core/ids.js";
import { type Logger, neverThrowing } from "../core/logger.js";
import { peekMessage, type TaskMessage } from "../core/message.js";
import { onStopSignals } from "../core/signals.js";
import { DeadlinePassed, nextTurn, settlesWithin, sleep, withinDeadline } from "../core/sleep.js";
import { strayText, toStoredError } from "../core/stored-error.js";
import { ThrottledWarning } from "../core/throttled-log.js";
import { routeUnownedLogs } from "../core/warn-once.js";
import { ChicoryError, ConfigurationError, toError } from "../errors.js";
import { createLogger } from "../logging.js";
import { EarlierSuccesses } from "./earlier-successes.js";
import { executeActions } from "./executor.js";
import { type Loop, startLoop } from "./loops.js";
import { RecordGate } from "./record-gate.js";
import { ABORTED_BY_STOP, ABORTED_FINISHED_ELSEWHERE, type Attempt, type RunnerEnv, runDelivery } from "./runner.js";
import { settle } from "./settle.js";
import { JobSlots } from "./slots.js";
import { StartedMarker } from "./started.js";

/** Options of {@link Worker.run}. */
export interface RunOptions {
  /**
   * While `run()` runs, handle the errors nobody caught in this process (a task's promise nobody
   * awaited, a throw from a timer) instead of leaving them to Node, which ends the process and
   * every job running beside the culprit: an unhandled rejection is logged and the worker goes
   * on; an uncaught exception (after which Node holds the process's state unsafe) is logged and
   * stops the worker gracefully, and `run()` rejects with it. One pair of process listeners
   * serves every worker whose `run()` handles them (a stray error is logged once, through the
   * first such worker's logger; an exception stops them all). Under
   * `node --unhandled-rejections=strict` Node raises a rejection as an uncaught exception: it
   * then stops the worker. Default true (`chicory worker` runs with it); false leaves them to
   * Node or to listeners of your own, as long as no other worker of the process handles them:
   * while one does, Node no longer ends the process, and the worker run with false goes on.
   */
  handleStrayErrors?: boolean | undefined;
}

const RUN_OPTION_KEYS: ReadonlySet<string> = new Set(["handleStrayErrors"]);

/** A worker whose `run()` handles stray errors now. */
interface StrayHandler {
  readonly logger: Logger;
  /** True once a stray exception stopped it. */
  readonly isStopping: boolean;
  /** Stops the worker gracefully; its `run()` rejects with `error`. */
  stopFor(error: unknown): void;
}

/**
 * The workers whose `run()` handles stray errors: one pair of process listeners serves them all,
 * so that a stray error is logged once however many workers run in the process.
 */
const strayHandlers = new Set<StrayHandler>();
/**
 * The last stray exception: under `--unhandled-rejections=strict` Node raises a rejection as an
 * uncaught exception, then emits `unhandledRejection` for it too; logged once.
 */
let lastStrayException: unknown;

function onStrayRejection(reason: unknown): void {
  if (reason !== undefined && reason === lastStrayException) return;
  const [first] = strayHandlers;
  first?.logger.error(
    { err: strayText(reason), workers: strayHandlers.size },
    "unhandled promise rejection (a promise nobody awaited or caught, e.g. in a task): logged, the worker goes on",
  );
}

function onStrayException(error: unknown): void {
  lastStrayException = error;
  const handlers = [...strayHandlers];
  const running = handlers.filter((handler) => !handler.isStopping);
  const logger = handlers[0]?.logger;
  if (running.length === 0) {
    logger?.error({ err: strayText(error) }, "uncaught exception while stopping");
    return;
  }
  logger?.error(
    { err: strayText(error), workers: running.length },
    "uncaught exception (thrown outside any task's promise, e.g. from a timer): stopping gracefully (running jobs get the shutdown timeout), then the worker ends with this error",
  );
  for (const handler of running) handler.stopFor(error);
}

/** Options of a {@link Worker}: {@link WorkerOptions} plus a logger. */
export interface WorkerInit extends WorkerOptions {
  /** Logger (default: pino at `logLevel`). */
  logger?: Logger | undefined;
}

const WORKER_INIT_KEYS: ReadonlySet<string> = new Set([...WORKER_OPTION_KEYS, "logger"]);

/** {@link WorkerStats} plus broker and backend connectivity. */
export interface WorkerHealth extends WorkerStats {
  /** Result of the broker's `healthcheck()`. */
  readonly broker: HealthStatus;
  /** Result of the backend's `healthcheck()` (not connected, "no backend configured", without one). */
  readonly backend: HealthStatus;
}

type Phase = "idle" | "starting" | "running" | "stopping" | "stopped";

const CONSUME_LOOP_GRACE_MS = 5000;
/** Wait before the first fetch retry after a failure; doubles up to {@link FETCH_BACKOFF_MAX_MS}. */
const FETCH_BACKOFF_FIRST_MS = 100;
/** Longest wait between fetch retries (each jittered down to half): a worker resumes within about 1 s of its broker. */
const FETCH_BACKOFF_MAX_MS = 1000;
/** A handler still running this long after its attempt ended is logged (it ignores ctx.signal). */
const LINGER_WARN_MS = 1000;
/**
 * A handler a forced stop aborted that has not returned this long after is logged as left
 * running (the stop does not wait for it).
 */
const LEFT_BEHIND_WARN_MS = 500;
/** When the first stale-worker cleanup runs after a start (±15 %), unless `cleanupInterval` is shorter. */
const FIRST_CLEANUP_MS = 60_000;
/** While fetches keep failing, one log line per this long. */
const FETCH_FAILURE_LOG_MS = 10_000;
/** Longest wait for a shutdown step that talks to a server (a loop's round, the last heartbeat). */
const SHUTDOWN_STEP_MS = 2000;
/**
 * What `stop(timeout)` takes at most beyond `timeout`: the consume loop's end, the grace of
 * aborted tasks, closing the consumer, the last heartbeat, the shutdown hooks, the disconnect.
 */
const SHUTDOWN_GRACE_MS = 5000;
/** Of that grace, the part kept for the steps after the tasks (closing, heartbeat, hooks). */
const CLOSE_RESERVE_MS = 1500;

/**
 * A task's `STARTED` state is written once it has run this long. Shorter tasks go from
 * `PENDING` straight to their final state: that saves the backend one write per job (three
 * Redis commands, or one SQL upsert) on the hot path. State precedence makes a `STARTED` that
 * lands after the final state harmless.
 */
const STARTED_AFTER_MS = 100;
/**
 * "could not store STARTED": at most one warning per worker every 5 s (a backend that refuses
 * writes fails every running job's; the lines between go to debug, counted in the next one).
 */
const startedWarnings = new ThrottledWarning(5_000, "notWarned");
/**
 * Longest wait of a run's outcome for its own `STARTED` write still in flight. On a pool of
 * connections (the SQL backends) the outcome's write may otherwise commit first, and the late
 * `STARTED` replace a `RETRY` (a job waiting for its retry then reads `STARTED`, as one whose
 * worker died) or undo a release's deletion of it.
 */
const STARTED_WRITE_WAIT_MS = 5000;

/** Running workers per app: the last one to stop runs the shutdown hooks and disconnects the app. */
const runningWorkers = new WeakMap<Chicory, number>();

/** Workers per app whose `start()` is under way (connecting, startup hooks). */
const startingWorkers = new WeakMap<Chicory, number>();

/**
 * Workers of `app` starting or running: a worker whose start fails or is cancelled, or that
 * stops, disconnects the app only when it is the last (a start under way of another worker
 * sharing the app would lose its connections).
 */
function workersOf(app: Chicory): number {
  return (runningWorkers.get(app) ?? 0) + (startingWorkers.get(app) ?? 0);
}

/** What `start()` rejects with when a `stop()` came while it connected (`run()` returns). */
class StartCancelled extends ChicoryError {
  constructor() {
    super("worker start cancelled: stop() was called while the worker connected to its broker and backend");
  }
}
/**
 * The startup hooks' run per app, shared by the workers of that app in this process (the
 * hooks run once per process, as the shutdown hooks do, however many workers serve the app).
 * `isDone` once they all succeeded: the shutdown hooks are then owed, run by the last worker
 * of the app to leave (stopping, or failing or cancelling its start).
 */
const startupHooksRun = new WeakMap<Chicory, { readonly run: Promise<void>; isDone: boolean }>();

/** The unknown `CHICORY_*` variables already warned of in this process. */
const warnedEnvNames = new Set<string>();

/**
 * Consumes and runs tasks.
 * @example
 * const worker = new Worker(app, { concurrency: 16, queue: ["default", "mail"], useDeadLetterQueue: true });
 * await worker.run(); // until SIGINT/SIGTERM
 */
export class Worker {
  /** `${hostname}-${pid}-${8 random hex}`. */
  readonly workerId: string;
  /** Host name. */
  readonly hostname: string;
  /** Process id. */
  readonly pid: number;
  /** Resolved settings. */
  readonly config: WorkerConfig;
  #startedAt: Date | null = null;
  #lastHeartbeat: Date | null = null;

  /** When `start()` was called, or null. */
  get startedAt(): Date | null {
    return this.#startedAt;
  }

  /** When the last heartbeat was stored, or null. */
  get lastHeartbeat(): Date | null {
    return this.#lastHeartbeat;
  }

  readonly #app: Chicory;
  readonly #logger: Logger;
  #phase: Phase = "idle";
  /** The broker writes terminal records with their acks (`Broker.attachResults`). */
  #acksCarryRecords = false;
  /** The `start()` in progress, if any (a `stop()` meanwhile waits for it). */
  #starting: Promise<void> | null = null;
  #consumer: Consumer | null = null;
  #consumeLoop: Promise<void> | null = null;
  #loops: Loop[] = [];
  #fetchAbort = new AbortController();
  /**
   * The signal of each fetch: follows {@link #fetchAbort}, and is aborted (then renewed) when the
   * record gate closes, so a fetch under way (a blocked read) brings in no more jobs.
   */
  #fetchCut = new AbortController();
  #unlinkFetchCut: (() => void) | null = null;
  #shutdownAbort = new AbortController();
  readonly #slots: JobSlots;
  /** Successful runs remembered by message (see `earlier-successes.ts`). */
  readonly #earlierSuccesses = new EarlierSuccesses();
  /**
   * What stopped the worker and `run()` rejects with: a configuration error (see #consume), or
   * an uncaught exception `run()` handled.
   */
  #fatalError: Error | undefined;
  /**
   * The worker stops for an uncaught exception (see `run()`): the runs its shutdown ends are
   * released counting a delivery, since one of them may have caused it.
   */
  #isStoppingForStray = false;
  readonly #countsAbortedRelease = (): boolean => this.#isStoppingForStray;
  /** Whether the logger takes debug lines: a success is logged only then (one line per job). */
  readonly #logsSuccesses: boolean;
  /** Holds fetches back while the result backend cannot store records (see `record-gate.ts`). */
  readonly #recordGate: RecordGate;
  readonly #started = new StartedMarker(STARTED_AFTER_MS, (message) => this.#markStarted(message));
  /** `STARTED` writes in flight, by run: the run's outcome is stored after its own (see #process). */
  readonly #startedWrites = new Map<TaskMessage, Promise<void>>();
  /** What the runner needs, shared by every job of one run (set by `start`). */
  #runnerEnv!: RunnerEnv;
  /** The backend server's result size limit as last read (see {@link #refreshResultSizeLimit}). */
  #serverResultLimit: ResultSizeLimit | undefined;
  #processed = 0;
  #failed = 0;
  #stopping: Promise<void> | null = null;
  /**
   * Set by a `stop()` that gave up waiting for the `start()` in progress (a startup hook that
   * never ends): that start, if it ever ends, stops at once instead of running.
   */
  #isStartAbandoned = false;
  /** Ends the routing of logger-less adapters' lines to this worker's logger. */
  #unrouteLogs: (() => void) | null = null;
  /** Resolves when a `stop()` gives up on the start in progress (`run()` returns then). */
  #onStartAbandoned: (() => void) | null = null;
  /**
   * Set while a start connects and checks access (nothing of the worker runs yet): a `stop()`
   * then cancels the start at once rather than waiting out a connect that hangs.
   */
  #cancelConnect: (() => void) | null = null;
  /** The disconnect of a start cancelled while connecting (a later start waits for it). */
  #cancelledClose: Promise<void> | null = null;
  /** Whether the last `start()` still counts among its app's workers starting (see start()). */
  #startCounting = { isCounted: false, uncount: () => {} };

  /**
   * @param options worker options over the app's (`config.worker`), the `CHICORY_WORKER_*`
   * variables and the defaults; or a resolved config (another worker's `config`,
   * `app.config.worker`), taken as it is (not a copy of one: pass options for changes)
   */
  constructor(app: Chicory, options: WorkerInit | WorkerConfig = {}) {
    // A resolved config (another worker's `config`, `app.config.worker`) is taken as it is.
    const resolved = isResolvedWorkerConfig(options) ? options : undefined;
    const init: WorkerInit = resolved === undefined ? (options as WorkerInit) : {};
    if (resolved === undefined) checkOptionKeys(init, "Worker", WORKER_INIT_KEYS, WORKER_OPTION_NOTES);
    this.#app = app;
    this.config = resolved ?? resolveWorkerConfig(init, app.config.env, app.config.worker);
    this.hostname = osHostname();
    this.pid = process.pid;
    this.workerId = newWorkerId(this.hostname, this.pid);
    // (a line that fails to be written must not break a stop or a job's settling)
    this.#logger = neverThrowing(
      init.logger ?? createLogger({ level: this.config.logLevel, env: app.config.env }),
    ).child({
      workerId: this.workerId,
    });
    this.#logsSuccesses = init.logger === undefined ? this.config.logLevel === "DEBUG" : takesDebug(init.logger);
    if (init.logger !== undefined && init.logLevel !== undefined) {
      this.#logger.warn(
        { logLevel: init.logLevel },
        "Worker: logLevel applies to the default logger only and is ignored with a logger of your own: set the level on that logger (e.g. createLogger({ level }))",
      );
    }
    this.#slots = new JobSlots(this.config.concurrency);
    this.#recordGate = new RecordGate(
      async () => {
        const backend = this.#app.backend;
        return backend === null || (await backend.healthcheck()).connected;
      },
      this.#logger,
      {
        // What the consumer read ahead goes back to the queue (the next fetch takes messages again).
        onPause: () => this.#consumer?.stopFetching?.(),
        onClose: () => {
          const cut = this.#fetchCut;
          this.#renewFetchCut();
          cut.abort();
        },
      },
    );
  }

  /** True from a successful `start()` until a `stop()` begins (false while the worker stops). */
  get isRunning(): boolean {
    return this.#phase === "running";
  }

  /**
   * Starts consuming; resolves once running. A second call warns and returns (while the first
   * is in progress, it returns that start: it resolves once the worker runs, or rejects; one
   * that a `stop()` gave up on, its startup hook still running, settles only if the hook ends).
   * @throws ChicoryError (the promise rejects) when connecting fails, a startup hook fails, or
   *   a `stop()` came while the worker was still connecting ("worker start cancelled")
   */
  start(): Promise<void> {
    if (this.#phase !== "idle" && this.#phase !== "stopped") {
      this.#logger.warn(`worker already ${this.#phase}; start() ignored`);
      return this.#starting ?? Promise.resolve();
    }
    this.#isStartAbandoned = false;
    const app = this.#app;
    startingWorkers.set(app, (startingWorkers.get(app) ?? 0) + 1);
    // This start no longer counts among its app's workers starting once it runs or has failed
    // (before its cleanup: of two starts failing together, the second is the last one).
    const counting = {
      isCounted: true,
      uncount: () => {
        if (!counting.isCounted) return;
        counting.isCounted = false;
        startingWorkers.set(app, (startingWorkers.get(app) ?? 1) - 1);
      },
    };
    this.#startCounting = counting;
    const uncount = counting.uncount;
    const starting = this.#start(uncount).finally(() => {
      uncount();
      // (a start() after this one failed may already be under way)
      if (this.#starting === starting) this.#starting = null;
    });
    this.#starting = starting;
    return starting;
  }

  async #start(uncount: () => void): Promise<void> {
    this.#phase = "starting";
    this.#isStoppingForStray = false; // (a start after a run() that stopped for one)
    this.#stopRoutingLogs();
    const unroute = routeUnownedLogs(this.#logger);
    this.#unrouteLogs = unroute;
    this.#fetchAbort = new AbortController();
    this.#shutdownAbort = new AbortController();
    // Not a leak: during an outage every settling job's retry sleeps on the shutdown signal.
    setMaxListeners(0, this.#fetchAbort.signal, this.#shutdownAbort.signal);
    this.#renewFetchCut();
    this.#runnerEnv = {
      codec: this.#app.codec,
      tasks: this.#app.tasks,
      maxDeliveries: this.config.maxDeliveries,
      maxResultBytes: this.#app.config.maxResultBytes,
      shutdownSignal: this.#shutdownAbort.signal,
      ...(this.#app.backend?.taskIdProblem
        ? { taskIdProblem: this.#app.backend.taskIdProblem.bind(this.#app.backend) }
        : {}),
      onStart: (message) => this.#started.started(message),
      isFinished: async (taskId) => {
        const backend = this.#app.backend;
        return backend !== null && (await terminalStateOf(backend, taskId)) !== null;
      },
      earlierSuccess: (delivery, message) => this.#earlierSuccesses.find(delivery, message.id),
      onSignalListenerError: (message, error) => {
        const thrown = toStoredError(error); // (never throws, whatever was thrown)
        this.#logger.error(
          { taskId: message.id, task: message.name, errorType: thrown.type, error: thrown.message },
          "a listener on ctx.signal threw: logged, the worker goes on (the task's outcome is its own)",
        );
      },
    };
    let serverResultLimit: ResultSizeLimit | undefined;
    try {
      await this.#untilCancelled(
        (async () => {
          await this.#cancelledClose; // a start cancelled before this one: its close first
          await this.#app.connect();
          // A user the server refuses (ACL) would run and log the same refusal on every call
          await Promise.all([this.#app.broker.checkAccess?.(this.config.queues), this.#app.backend?.checkAccess?.()]);
          serverResultLimit = await this.#app.backend?.resultSizeLimit?.();
        })(),
      );
      let hooks = startupHooksRun.get(this.#app);
      if (hooks === undefined) {
        const app = this.#app;
        const entry = { run: runStartupHooks(app.workerHooks.startup), isDone: false };
        hooks = entry;
        startupHooksRun.set(app, entry);
        entry.run.then(
          () => {
            entry.isDone = true;
          },
          // a failed run is not kept: the next start runs the hooks again
          () => {
            if (startupHooksRun.get(app) === entry) startupHooksRun.delete(app);
          },
        );
      }
      await hooks.run;
      if (this.#isStartAbandoned) {
        throw new ChicoryError(
          "worker start abandoned: a stop() gave up waiting for it (a startup hook that did not end in time)",
        );
      }
    } catch (error) {
      this.#phase = "stopped";
      uncount();
      if (workersOf(this.#app) === 0) {
        // The last worker of the app leaves: the shutdown hooks it was left (a stop() that
        // cancelled this start waits for them), then the disconnect; after a cancel, that
        // goes on in the background as the connect may (until its own timeout).
        await this.#runOwedShutdownHooks();
        const disconnecting = this.#disconnectIfLast();
        if (error instanceof StartCancelled) this.#cancelledClose = disconnecting;
        else await disconnecting;
      }
      if (error instanceof StartCancelled) this.#logger.info("stopped while connecting: the worker did not start");
      this.#stopRoutingLogs(unroute); // (not the routing of a start made meanwhile)
      throw error;
    }
    this.#warnUnknownEnv();
    this.#serverResultLimit = serverResultLimit;
    this.#applyResultSizeLimit(serverResultLimit);
    this.#startedAt = new Date();
    runningWorkers.set(this.#app, (runningWorkers.get(this.#app) ?? 0) + 1);
    uncount();
    const backend = this.#app.backend;
    this.#acksCarryRecords = backend !== null && this.#app.broker.attachResults?.(backend) === true;
    this.#consumer = this.#app.broker.consumer({
      queues: this.config.queues,
      consumerId: this.workerId,
      capacity: this.config.concurrency,
      logger: this.#logger,
    });
    this.#phase = "running";
    this.#startLoops();
    this.#consumeLoop = this.#consume(this.#consumer);
    this.#logger.info(
      {
        queues: this.config.queues,
        concurrency: this.config.concurrency,
        broker: this.#app.broker.displayUrl,
        resultsWithAcks: this.#acksCarryRecords,
      },
      "worker started",
    );
    // (as the CLI's banner says: a worker built in code must say it too)
    if (this.#app.tasks.size === 0) {
      this.#logger.warn(
        { queues: this.config.queues },
        "this worker's app registers no task: every message it gets is rejected (dead-lettered, or dropped without the DLQ); is the module that registers the tasks imported where the worker is built?",
      );
    }
  }

  /**
   * Stops gracefully: stop fetching, stop the loops,
   * wait up to 5 s for the consume loop, wait up to `timeout` seconds for running tasks, then
   * abort their `ctx.signal` (their messages are released for redelivery under
   * `at_least_once`), send a final heartbeat, run the shutdown hooks, and disconnect the app
   * (both only when no other worker of the same app is still running or starting: the last
   * to leave does them). Resolves within `timeout` + 5 s
   * whatever happens (a server that does not answer, a task that ignores the abort, a hook
   * that never ends): a step still running at that deadline is left behind and logged (the
   * shutdown hooks, then the disconnect, keep their order in the background). With the broker
   * or the backend unreachable (its healthcheck fails), the steps that need it are not waited
   * for, each logged: a heartbeat or cleanup round in progress, the outcomes of aborted tasks
   * (their messages stay pending for another worker), the final heartbeat (the worker's record
   * then expires): an idle worker stops at once during an outage. Called while a `start()` is
   * in progress: a start still connecting (to a server that does not answer, say) is cancelled
   * at once (that `start()` rejects, `run()` returns; when it leaves last, after the startup
   * hooks of another worker of its app ran, this waits for the shutdown hooks it then runs);
   * one running its startup hooks is waited for, then stopped (a hook still running at the
   * deadline is abandoned: that start never runs the worker). A call while a stop is under way
   * returns that stop's promise: its own `timeout` does not shorten the first one's (to stop
   * at once, a process exits, as the CLI does on a second signal).
   * @param timeout seconds, or a string with a unit (`"10s"`; default `shutdownTimeout`)
   * @throws ConfigurationError (the promise rejects) when `timeout` is not a non-negative duration
   */
  stop(timeout: Duration = this.config.shutdownTimeout): Promise<void> {
    let seconds: number;
    try {
      seconds = toSeconds(timeout, "worker.stop(timeout)");
    } catch (error) {
      // a NaN or "1s" read as a number would leave stop() unbounded
      return Promise.reject(error);
    }
    return this.#stop(seconds);
  }

  #stop(timeout: number): Promise<void> {
    const starting = this.#starting;
    if (starting) {
      const counting = this.#startCounting; // (this start's)
      this.#cancelConnect?.(); // still connecting: nothing to stop but the start itself
      // Called while starting: let the start finish (its hooks, the connections), then stop
      // what it started; a start that failed left nothing running. Bounded as the rest: a
      // start still running at the deadline (a startup hook that never ends) is abandoned.
      return (async () => {
        const endsMs = timeout * 1000 + SHUTDOWN_GRACE_MS - CLOSE_RESERVE_MS;
        const isSettled = await settlesWithin(
          starting.catch(() => undefined),
          Math.max(0, endsMs),
        );
        // A start() made once that start had failed is not this stop's to stop.
        if (this.#startCounting !== counting) return;
        if (isSettled || this.#starting !== starting) return this.#stop(timeout);
        this.#isStartAbandoned = true;
        this.#logger.warn(
          "stop(): the start still running at the deadline (a startup hook, or the shutdown hooks of a start that failed, that does not end?) is abandoned: the worker will not run",
        );
        this.#onStartAbandoned?.();
        // An abandoned start never runs: it no longer counts among its app's workers (if its
        // hook ever ends, it finds itself the last, runs the shutdown hooks and disconnects).
        // One no longer counted is already leaving (its shutdown hooks, then the disconnect).
        const wasCounted = counting.isCounted;
        counting.uncount();
        if (wasCounted && workersOf(this.#app) === 0) {
          await settlesWithin(
            this.#app.disconnect().catch(() => undefined),
            CLOSE_RESERVE_MS,
          );
        }
      })();
    }
    if (this.#phase === "idle" || this.#phase === "stopped") return Promise.resolve();
    this.#stopping ??= this.#shutdown(timeout * 1000).finally(() => {
      this.#stopping = null;
    });
    return this.#stopping;
  }

  /**
   * The shutdown hooks, one after another, when the last worker of the app leaves and they are
   * owed: the startup hooks ran (a start that failed in them leaves none owed). Never rejects.
   */
  async #runOwedShutdownHooks(): Promise<void> {
    const app = this.#app;
    if (startupHooksRun.get(app)?.isDone !== true) return;
    startupHooksRun.delete(app);
    for (const hook of app.workerHooks.shutdown) {
      await Promise.resolve()
        .then(hook)
        .catch((error: unknown) => this.#logger.error({ err: toError(error) }, "worker shutdown hook failed"));
    }
  }

  /**
   * Disconnects the app unless a worker of it runs or starts now: one started meanwhile (this
   * one again, after a stop() that returned at its deadline) must not lose its connections to
   * a late disconnect. Never rejects.
   */
  async #disconnectIfLast(): Promise<void> {
    if (workersOf(this.#app) > 0) return;
    await this.#app
      .disconnect()
      .catch((error: unknown) => this.#logger.warn({ err: toError(error).message }, "disconnect failed"));
  }

  /** `connecting`, or a {@link StartCancelled} rejection as soon as a `stop()` comes. */
  async #untilCancelled(connecting: Promise<void>): Promise<void> {
    connecting.catch(() => undefined); // its failure after a cancel is the background close's
    try {
      await new Promise<void>((resolve, reject) => {
        this.#cancelConnect = () => reject(new StartCancelled());
        connecting.then(resolve, reject);
      });
    } finally {
      this.#cancelConnect = null;
    }
  }

  /**
   * Starts, then blocks until SIGINT/SIGTERM (or `stop()`); a second signal exits at once.
   * Meant for a process of its own: it also handles the errors nobody caught (see
   * {@link RunOptions.handleStrayErrors}).
   * @throws ConfigurationError when the broker refuses the worker's setup, or the uncaught
   *   exception that stopped the worker
   */
  async run(options: RunOptions = {}): Promise<void> {
    checkOptionKeys(options, "run", RUN_OPTION_KEYS);
    const offStrays = options.handleStrayErrors === false ? () => {} : this.#handleStrayErrors();
    const offSignals = onStopSignals(
      (signal) => {
        this.#logger.info({ signal }, "signal received: stopping gracefully");
        this.stop().catch((error: unknown) => this.#logger.error({ err: error }, "stop failed"));
      },
      (signal) => this.#logger.warn({ signal }, "second signal: exiting now"),
    );
    try {
      const abandoned = new Promise<"abandoned">((resolve) => {
        this.#onStartAbandoned = () => resolve("abandoned");
      });
      this.#fatalError = undefined;
      let isStarted = true;
      try {
        if ((await Promise.race([this.start(), abandoned])) === "abandoned") isStarted = false;
      } catch (error) {
        if (!(error instanceof StartCancelled)) throw error;
        isStarted = false; // a stop during the connect (a signal, a stray exception): a clean stop
      }
      if (isStarted) await this.#untilStopped();
      const fatal = this.#fatalError;
      this.#fatalError = undefined;
      if (fatal) throw fatal;
    } finally {
      this.#onStartAbandoned = null;
      offSignals();
      offStrays();
    }
  }

  /** Installs `run()`'s handlers of stray errors; returns the function that removes them. */
  #handleStrayErrors(): () => void {
    let isStopping = false;
    const handler: StrayHandler = {
      logger: this.#logger,
      get isStopping() {
        return isStopping;
      },
      stopFor: (error) => {
        isStopping = true;
        this.#isStoppingForStray = true;
        this.#fatalError ??= toError(error);
        this.stop().catch((stopError: unknown) => this.#logger.error({ err: stopError }, "stop failed"));
      },
    };
    strayHandlers.add(handler);
    if (strayHandlers.size === 1) {
      process.on("unhandledRejection", onStrayRejection).on("uncaughtException", onStrayException);
    }
    return () => {
      strayHandlers.delete(handler);
      if (strayHandlers.size === 0) {
        process.off("unhandledRejection", onStrayRejection).off("uncaughtException", onStrayException);
      }
    };
  }

  /** Current statistics. */
  getStats(): WorkerStats {
    const started = this.startedAt;
    return {
      workerId: this.workerId,
      hostname: this.hostname,
      pid: this.pid,
      queue: this.config.queues.join(","),
      concurrency: this.config.concurrency,
      tasksProcessed: this.#processed,
      tasksFailed: this.#failed,
      activeTasks: this.#slots.running,
      startedAt: (started ?? new Date(0)).toISOString(),
      lastHeartbeat: this.lastHeartbeat?.toISOString() ?? null,
      isRunning: this.isRunning,
      uptimeSeconds: started ? Math.round((Date.now() - started.getTime()) / 1000) : 0,
    };
  }

  /** Statistics plus a round trip to the broker and the backend. */
  async healthcheck(): Promise<WorkerHealth> {
    const [broker, backend] = await Promise.all([
      this.#app.broker.healthcheck(),
      this.#app.backend?.healthcheck() ?? Promise.resolve({ connected: false, error: "no backend configured" }),
    ]);
    return { ...this.getStats(), broker, backend };
  }

  async #untilStopped(): Promise<void> {
    while (this.#phase === "running" || this.#phase === "stopping") {
      await (this.#stopping ?? this.#consumeLoop ?? Promise.resolve());
      if (this.#phase === "running" && !this.#stopping) {
        // The consume loop ended on its own (fatal): stop cleanly.
        await this.stop();
      }
    }
  }

  #startLoops(): void {
    const onError = (what: string) => (error: unknown) => {
      // a round cut off by the shutdown (see #stopLoops) is not tried again
      if (this.#phase === "running")
        this.#logger.warn({ err: toError(error).message }, `${what} failed; will try again`);
      else this.#logger.debug({ err: toError(error).message }, `${what} failed during shutdown`);
    };
    const backend = this.#app.backend;
    if (backend) {
      let isFirstRound = true; // the result size limit was just read, as the worker started
      this.#loops.push(
        startLoop(
          async () => {
            await this.#heartbeat();
            if (isFirstRound) isFirstRound = false;
            else await this.#refreshResultSizeLimit();
          },
          {
            intervalMs: this.config.heartbeatInterval * 1000,
            runFirst: true,
            onError: onError("heartbeat"),
          },
        ),
      );
    }
    this.#loops.push(
      startLoop(() => this.#cleanup(), {
        intervalMs: this.config.cleanupInterval * 1000,
        // A first round soon after the start: in a fleet whose workers live shorter than the
        // interval (frequent deploys, autoscaling), a round would otherwise never come.
        firstDelayMs: Math.min(FIRST_CLEANUP_MS, this.config.cleanupInterval * 1000),
        jitter: 0.15,
        onError: onError("cleanup"),
      }),
    );
  }

  async #heartbeat(): Promise<void> {
    const backend = this.#app.backend;
    if (!backend) return;
    const now = new Date();
    await backend.storeHeartbeat({ ...this.getStats(), lastHeartbeat: now.toISOString() }, this.config.heartbeatTtl);
    this.#lastHeartbeat = now;
  }

  /**
   * One cleanup round. Each step on its own: a backend (or a queue) whose cleanup fails does not
   * keep the others from theirs; the failures are thrown together at the end (the loop logs them).
   */
  async #cleanup(): Promise<void> {
    const stale = this.config.staleWorkersTimeout;
    const failed: string[] = [];
    const step = async (what: string, run: () => Promise<number>): Promise<number> => {
      try {
        return await run();
      } catch (error) {
        failed.push(`${what}: ${toError(error).message}`);
        return 0;
      }
    };
    const backend = this.#app.backend;
    const removedWorkers = backend ? await step("result backend", () => backend.cleanupStaleClients(stale)) : 0;
    let removedConsumers = 0;
    for (const queue of this.config.queues) {
      removedConsumers += await step(`queue ${queue}`, () => this.#app.broker.cleanupStaleClients(queue, stale));
    }
    if (removedWorkers + removedConsumers > 0) {
      this.#logger.info({ removedWorkers, removedConsumers }, "removed stale workers");
    }
    if (failed.length > 0) throw new Error(failed.join("; "));
  }

  async #consume(consumer: Consumer): Promise<void> {
    const signal = this.#fetchAbort.signal;
    let backoffMs = FETCH_BACKOFF_FIRST_MS;
    let failures = 0;
    let loggedAtMs = Number.NEGATIVE_INFINITY;
    while (!signal.aborted) {
      // Nothing more is taken while results cannot be stored (see `record-gate.ts`).
      if (this.#recordGate.closed) {
        await this.#recordGate.whenOpen(signal);
        continue;
      }
      const free = this.#slots.free();
      if (free <= 0) {
        await this.#slots.whenFree();
        continue;
      }
      let deliveries: Delivery[];
      try {
        deliveries = await consumer.fetch(free, this.#fetchCut.signal);
        if (failures > 0) this.#logger.info({ failures }, "fetching again");
        backoffMs = FETCH_BACKOFF_FIRST_MS;
        failures = 0;
      } catch (error) {
        if (error instanceof ConfigurationError && !signal.aborted) {
          // The broker refused this worker's setup (a queue declared elsewhere with other
          // arguments, a Redis user without a command it needs): trying again cannot help, and a
          // worker that consumes nothing must not look healthy. `run()` rejects with it.
          this.#fatalError = error;
          this.#logger.error({ err: error.message }, "the broker refused this worker's configuration: stopping");
          void this.stop().catch(() => undefined);
          return;
        }
        failures++;
        // Short and jittered: a fetch while the broker is away fails at once, and workers that
        // retry at the same instants would all hit it together when it returns. Logged at
        // most every 10 s while it lasts.
        const waitMs = Math.round(backoffMs * (0.5 + Math.random() / 2));
        if (performance.now() - loggedAtMs >= FETCH_FAILURE_LOG_MS) {
          loggedAtMs = performance.now();
          this.#logger.warn({ err: toError(error).message, failures, retryInMs: waitMs }, "fetch failed");
        }
        await sleep(waitMs, signal);
        backoffMs = Math.min(backoffMs * 2, FETCH_BACKOFF_MAX_MS);
        continue;
      }
      if (deliveries.length === 0 && consumer.isClosed === true && !signal.aborted) {
        // Closed under a running worker (`app.disconnect()` while it ran): every fetch would
        // return nothing at once, for good. Stop, rather than spin.
        this.#logger.error(
          "the broker closed this worker's consumer (was the app disconnected while the worker ran? stop the worker first): stopping",
        );
        void this.stop().catch(() => undefined);
        return;
      }
      for (const delivery of deliveries) {
        if (signal.aborted) {
          // Fetched but not started: give it back at once rather than run it during shutdown.
          delivery.release().catch(() => undefined);
          continue;
        }
        this.#dispatch(delivery);
      }
      // The next fetch waits for this turn's settling writes: the results of jobs that ended
      // at once go out before the next blocking read is sent. After an empty fetch too: one
      // that returns at once must not starve timers and signal handlers of the event loop.
      await nextTurn();
    }
  }

  /** A new {@link #fetchCut}, following the current {@link #fetchAbort}. */
  #renewFetchCut(): void {
    this.#unlinkFetchCut?.();
    const cut = new AbortController();
    const parent = this.#fetchAbort.signal;
    const follow = (): void => cut.abort();
    if (parent.aborted) cut.abort();
    else parent.addEventListener("abort", follow, { once: true });
    this.#unlinkFetchCut = () => parent.removeEventListener("abort", follow);
    this.#fetchCut = cut;
  }

  #dispatch(delivery: Delivery): void {
    this.#slots.run(this.#process(delivery).catch(this.#onProcessError));
  }

  // Created once: every job's promise chain uses the same callbacks.
  readonly #isConsumerClosed = (): boolean => this.#consumer?.isClosed === true;
  readonly #onProcessError = (error: unknown): void =>
    this.#logger.error({ err: toError(error) }, "unexpected error while processing");
  /** A success whose result the backend's server refused ends as a failure (see `executor.ts`). */
  readonly #countFailure = (): void => {
    this.#failed++;
  };
  readonly #onSettleError = (error: unknown): void =>
    this.#logger.error({ err: toError(error) }, "unexpected error while settling");

  async #process(delivery: Delivery): Promise<void> {
    const app = this.#app;
    let attempt: Attempt;
    const startedAtMs = performance.now();
    try {
      attempt = await runDelivery(delivery, this.#runnerEnv);
    } catch (error) {
      // Not expected (the runner turns every failure into an outcome); should it happen, the
      // message is given back, its delivery counted, rather than held and renewed for good.
      this.#logger.error({ err: toError(error), queue: delivery.queue }, "unexpected error while running a job");
      await delivery.release({ countDelivery: true }).catch(() => undefined);
      return;
    }
    if (attempt.message) this.#started.ended(attempt.message);
    const { outcome } = attempt;
    const settleMode = {
      deliveryMode: attempt.task?.deliveryMode ?? app.config.deliveryMode,
      useDeadLetterQueue: this.config.useDeadLetterQueue,
      alreadyAcked: attempt.alreadyAcked,
      acksCarryRecords: this.#acksCarryRecords,
    };
    const actions = settle(outcome, settleMode);
    if (outcome.kind === "success" && attempt.message) {
      // (before the slot frees: the message may come back to this worker at once)
      const runMs = performance.now() - startedAtMs;
      this.#earlierSuccesses.remember(delivery, attempt.message.id, outcome.value, runMs);
      if (this.#logsSuccesses) {
        this.#logger.debug(
          { taskId: attempt.message.id, task: attempt.message.name, queue: delivery.queue, ms: Math.round(runMs) },
          "task succeeded",
        );
      }
    } else if (outcome.kind === "done") {
      this.#logger.warn(
        {
          taskId: attempt.message?.id,
          task: attempt.message?.name,
          queue: delivery.queue,
          deliveryCount: delivery.deliveryCount,
        },
        "message delivered again after this worker's run of it succeeded (its lease ran out meanwhile, e.g. while the task blocked the event loop, or its ack was lost): acknowledged without running it again, that run's result stored unless the task has a SUCCESS record",
      );
    }
    // An aborted at_most_once run ends FAILURE (its message was acknowledged before it ran): it
    // counts as a failed task; an aborted at_least_once run goes back to the queue and does not.
    if (outcome.kind === "aborted" && attempt.alreadyAcked) {
      this.#processed++;
      this.#failed++;
    } else if (outcome.kind !== "aborted" && outcome.kind !== "done") this.#processed++;
    if (outcome.kind === "failure" || outcome.kind === "rejected") {
      this.#failed++;
      // A rejected message (undecodable, forged, unknown task) is named as far as it can be
      // read, unverified, and by its broker entry id: an operator finds it in the DLQ by these.
      const named =
        attempt.message ??
        (outcome.kind === "rejected"
          ? outcome.taskId === null
            ? peekMessage(delivery.body, this.#app.config.maxMessageBytes)
            : { id: outcome.taskId, name: outcome.taskName ?? undefined }
          : null);
      this.#logger.warn(
        {
          taskId: typeof named?.id === "string" ? named.id : undefined,
          task: typeof named?.name === "string" ? named.name : undefined,
          queue: delivery.queue,
          ...(outcome.kind === "rejected" ? { deliveryId: delivery.deliveryId } : {}),
          ...(attempt.message ? { retries: attempt.message.retries } : {}),
          // where the message goes: the DLQ, or acknowledged and gone (its record says FAILURE)
          deadLettered: settleMode.useDeadLetterQueue,
          errorType: outcome.error.type,
          ...(outcome.error.code === undefined ? {} : { errorCode: outcome.error.code }),
          error: outcome.error.message,
        },
        outcome.kind === "rejected" ? "message rejected" : "task failed",
      );
      this.#logStack(named?.id, outcome.error);
    } else if (outcome.kind === "retry") {
      this.#logger.info(
        {
          taskId: attempt.message?.id,
          task: attempt.message?.name,
          queue: delivery.queue,
          retry: (attempt.message?.retries ?? 0) + 1,
          maxRetries: attempt.task?.retryPolicy.maxRetries,
          delayMs: Math.round(outcome.delayMs),
          errorType: outcome.error.type,
          ...(outcome.error.code === undefined ? {} : { errorCode: outcome.error.code }),
          error: outcome.error.message,
        },
        "task will retry",
      );
      this.#logStack(attempt.message?.id, outcome.error);
    } else if (outcome.kind === "aborted") {
      const fields = {
        taskId: attempt.message?.id,
        task: attempt.message?.name,
        queue: delivery.queue,
        error: outcome.error.message,
      };
      if (attempt.alreadyAcked) {
        this.#logger.warn(
          fields,
          "task aborted: it ends FAILURE (at_most_once: its message was acknowledged before the run and is not run again)",
        );
      } else if (outcome.error.message === ABORTED_BY_STOP) {
        // routine at a forced stop (one line per run; the stop's own warning counts them)
        this.#logger.info(fields, "task aborted by the stop: its message is given back to its queue, to run again");
      } else if (outcome.error.message === ABORTED_FINISHED_ELSEWHERE) {
        this.#logger.info(fields, "task aborted: a worker that took its message over finished it");
      } else {
        this.#logger.warn(
          fields,
          "task aborted: another worker took its message over (its lease was lost); this run's outcome is not stored",
        );
      }
    }
    // The slot frees now; the outcome is stored and acknowledged in the background (after the
    // run's own STARTED write, when one is still in flight: see STARTED_WRITE_WAIT_MS).
    const context = {
      delivery,
      attempt,
      app,
      logger: this.#logger,
      stopSignal: this.#shutdownAbort.signal,
      isConsumerClosed: this.#isConsumerClosed,
      settleMode,
      onFailedInstead: this.#countFailure,
      recordGate: this.#recordGate,
      countsAbortedRelease: this.#countsAbortedRelease,
    };
    const startedWrite =
      this.#startedWrites.size === 0 || !attempt.message ? undefined : this.#startedWrites.get(attempt.message);
    this.#slots.settle(
      (startedWrite === undefined
        ? executeActions(actions, context)
        : settlesWithin(startedWrite, STARTED_WRITE_WAIT_MS).then(() => executeActions(actions, context))
      ).catch(this.#onSettleError),
    );
    // unless the handler goes on after its attempt ended (timeout, lost lease): then the slot
    // stays taken until it returns
    if (attempt.lingering) await this.#linger(attempt.lingering, attempt.message);
  }

  async #linger(handler: Promise<void>, message: TaskMessage | null): Promise<void> {
    // A forced stop stops waiting for running handlers: it does not wait for these either.
    const stop = this.#shutdownAbort.signal;
    const first = await untilSettledOrAborted(handler, stop, LINGER_WARN_MS);
    if (first === "settled") return;
    if (first === "timeout") {
      this.#logger.warn(
        { taskId: message?.id, task: message?.name, running: this.#slots.running },
        "a handler goes on after its attempt ended (it does not stop on ctx.signal): its slot stays taken until it returns",
      );
      if ((await untilSettledOrAborted(handler, stop)) === "settled") {
        this.#logger.info({ taskId: message?.id, task: message?.name }, "a handler that outlived its attempt returned");
        return;
      }
    }
    // A stop past its timeout stops waiting for it: said, when it has not returned shortly
    // after (a handler that ignores its abort runs on in the background)
    void settlesWithin(handler, LEFT_BEHIND_WARN_MS).then((settled) => {
      if (settled) return;
      this.#logger.warn(
        { taskId: message?.id, task: message?.name },
        `the stop left a handler running in the background: it has not returned ${LEFT_BEHIND_WARN_MS / 1000} s after its abort (it ignores ctx.signal, or cannot see it: a task without context: true); its outcome is settled already, what it does from now on is not tracked`,
      );
    });
  }

  /** The stack of a failed attempt's error, at DEBUG level (the warning has its type and message). */
  #logStack(taskId: unknown, error: StoredError): void {
    if (error.stack)
      this.#logger.debug(
        { taskId: typeof taskId === "string" ? taskId : undefined, stack: error.stack },
        "error stack",
      );
  }

  /** Writes `STARTED` for a task still running after {@link STARTED_AFTER_MS}. */
  #markStarted(message: TaskMessage): void {
    const backend = this.#app.backend;
    if (!backend) return;
    const writing: Promise<void> = backend
      .setState(message.id, "STARTED", { retries: message.retries, taskName: message.name })
      .catch((error: unknown) =>
        startedWarnings.warn(
          this.#logger,
          { taskId: message.id, err: toError(error).message },
          "could not store STARTED (the run goes on; state() shows the previous state meanwhile)",
        ),
      )
      .finally(() => {
        if (this.#startedWrites.get(message) === writing) this.#startedWrites.delete(message);
      });
    this.#startedWrites.set(message, writing);
  }

  /**
   * Stops the heartbeat and cleanup loops and waits, up to {@link SHUTDOWN_STEP_MS}, for a round
   * in progress. Such a round may wait for a server that is away (its commands queued in the
   * client): when the broker or the backend does not answer its healthcheck, the round is not
   * waited for (it fails once the app disconnects).
   */
  async #stopLoops(loops: readonly Loop[]): Promise<void> {
    const until = performance.now() + SHUTDOWN_STEP_MS;
    const stopped = Promise.all(loops.map((loop) => loop.stop()));
    // No round in progress (the usual case): nothing to wait for, nothing to ask the servers.
    if (await settlesWithin(stopped, 0)) return;
    let reasons: string[] | null; // null: the round ended first
    try {
      reasons = await withinDeadline(
        Promise.race([stopped.then(() => null), this.#unreachableServers()]),
        Math.max(0, until - performance.now()),
      );
    } catch {
      return; // DeadlinePassed (neither rejects): the step's time is up
    }
    if (reasons === null) return;
    if (reasons.length > 0) {
      this.#logger.warn(
        { unreachable: reasons },
        "shutdown: not waiting for the heartbeat or cleanup round in progress: a server it needs cannot be reached (the round fails when the app disconnects)",
      );
      return;
    }
    await settlesWithin(stopped, Math.max(0, until - performance.now()));
  }

  /**
   * After the shutdown timeout and the abort: waits up to `ms` for the handlers to return and
   * the outcomes to be settled. Once no handler runs, outcomes still waiting for a server that
   * cannot be reached (their commands only queue in the client) are not waited for: nothing is
   * lost, their messages stay unacknowledged and are delivered again once their lease expires.
   */
  async #drainAborted(ms: number): Promise<void> {
    const until = performance.now() + ms;
    const rest = () => Math.max(0, until - performance.now());
    const drained = this.#slots.drain();
    // a handler that ignores its abort: the deadline ends the wait, as before
    if (!(await settlesWithin(this.#slots.whenNoneRunning(), rest()))) return;
    if (await settlesWithin(drained, 0)) return;
    let reasons: string[] | null; // null: the outcomes were settled first
    try {
      reasons = await withinDeadline(Promise.race([drained.then(() => null), this.#unreachableServers()]), rest());
    } catch {
      return; // DeadlinePassed (neither rejects): the step's time is up
    }
    if (reasons === null) return;
    if (reasons.length > 0) {
      this.#logger.warn(
        { settling: this.#slots.settling, unreachable: reasons },
        "shutdown: not waiting for outcomes that cannot be stored or acknowledged now (a server cannot be reached): their messages stay unacknowledged and are delivered again once their lease expires",
      );
      return;
    }
    await settlesWithin(drained, rest());
  }

  /** Why each of the broker and the backend cannot be reached now, if it cannot (see {@link probe}). */
  async #unreachableServers(): Promise<string[]> {
    const [broker, backend] = await Promise.all([probe(this.#app.broker), probe(this.#app.backend)]);
    const reasons: string[] = [];
    if (broker !== null) reasons.push(`broker ${this.#app.broker.displayUrl}: ${broker}`);
    if (backend !== null) reasons.push(`backend ${this.#app.backend?.displayUrl ?? ""}: ${backend}`);
    return reasons;
  }

  /**
   * The last heartbeat, with `isRunning: false`, unless the backend cannot be reached: its
   * write would only wait in the client (then the worker's record is left to expire, logged
   * unless `abandoned.value`: the shutdown stopped waiting for this step and warned itself).
   */
  async #finalHeartbeat(abandoned: { value: boolean }): Promise<void> {
    const backend = this.#app.backend;
    if (!backend) return;
    const unreachable = await probe(backend);
    if (unreachable !== null) {
      if (!abandoned.value) this.#warnRecordNotUpdated(`backend ${backend.displayUrl} unreachable: ${unreachable}`);
      return;
    }
    try {
      await this.#heartbeat();
    } catch (error) {
      if (!abandoned.value) this.#warnRecordNotUpdated(toError(error).message);
    }
  }

  #warnRecordNotUpdated(why: string): void {
    const { heartbeatTtl, staleWorkersTimeout } = this.config;
    this.#logger.warn(
      { err: why, heartbeatTtl, staleWorkersTimeout },
      `final heartbeat not stored: this worker's record is not marked stopped; it leaves the active workers when its last heartbeat expires (heartbeatTtl, ${heartbeatTtl} s) and a worker's stale-worker cleanup removes it (staleWorkersTimeout, ${staleWorkersTimeout} s)`,
    );
  }

  async #shutdown(timeoutMs: number): Promise<void> {
    // Every step is bounded, and so is the whole: `timeoutMs` + SHUTDOWN_GRACE_MS, even with a
    // server that does not answer, a task that ignores its abort or a hook that never ends (what
    // is still running then is left behind, and logged).
    const stopAt = performance.now();
    const end = stopAt + timeoutMs + SHUTDOWN_GRACE_MS;
    const left = (reserveMs = 0) => Math.max(0, end - reserveMs - performance.now());
    const unroute = this.#unrouteLogs;
    this.#phase = "stopping";
    this.#logger.info({ running: this.#slots.running, timeoutMs }, "worker stopping");
    this.#fetchAbort.abort();
    this.#consumer?.stopFetching?.();
    this.#slots.wake();
    // Bounded: a loop's round (a heartbeat) may wait for a server that is down.
    const loopsStopped = this.#stopLoops(this.#loops);
    this.#loops = [];
    // With tasks to drain, a heartbeat now says the worker is stopping (`isRunning: false`: it no
    // longer counts for `chicory workers --min`), its TTL counted from now; the final one follows.
    const stoppingBeat =
      this.#slots.running > 0
        ? this.#heartbeat().catch((error: unknown) =>
            this.#logger.debug({ err: toError(error).message }, "stopping heartbeat failed"),
          )
        : undefined;
    await settlesWithin(
      Promise.all([loopsStopped, this.#consumeLoop]),
      Math.min(CONSUME_LOOP_GRACE_MS, left(CLOSE_RESERVE_MS)),
    );
    // `timeout` counts from the stop, the consume loop's end included (a read blocked on a
    // frozen server may take its whole grace): the tasks are aborted `timeout` after stop()
    const tasksLeftMs = Math.max(0, timeoutMs - (performance.now() - stopAt));
    const drained = await settlesWithin(this.#slots.drain(), Math.min(tasksLeftMs, left(CLOSE_RESERVE_MS)));
    if (!drained) {
      const { running, settling } = this.#slots;
      this.#logger.warn(
        { running, settling },
        running > 0
          ? "shutdown timeout: aborting running tasks"
          : "shutdown timeout: no task runs, but the outcomes of ended ones are still being stored or acknowledged (broker or backend slow or away)",
      );
      this.#shutdownAbort.abort();
      await this.#drainAborted(left(CLOSE_RESERVE_MS));
    }
    this.#recordGate.stop();
    const consumer = this.#consumer;
    this.#consumer = null;
    const closed = consumer?.close().catch(() => undefined);
    if (closed && !(await settlesWithin(closed, left()))) {
      this.#logger.warn("shutdown deadline: the consumer is still closing");
    }
    // (before the final heartbeat, which must land last)
    if (stoppingBeat) await settlesWithin(stoppingBeat, Math.min(SHUTDOWN_STEP_MS, left()));
    this.#started.clear();
    this.#phase = "stopped";
    const heartbeatMs = Math.min(SHUTDOWN_STEP_MS, left());
    // once this stops waiting for the step (and warns), the step warns no more
    const abandoned = { value: false };
    if (!(await settlesWithin(this.#finalHeartbeat(abandoned), heartbeatMs))) {
      abandoned.value = true;
      this.#warnRecordNotUpdated(`no answer from the backend within ${Math.round(heartbeatMs)} ms`);
    }
    runningWorkers.set(this.#app, (runningWorkers.get(this.#app) ?? 1) - 1);
    // The hooks one after another, then the disconnect: in this order even when the deadline
    // passes meanwhile (what is left then goes on in the background). Once per process: another
    // worker of this app still running, or still starting (it may already count on the startup
    // hooks' work), runs them when it leaves.
    const hooksThenDisconnect =
      workersOf(this.#app) > 0 ? Promise.resolve() : this.#runOwedShutdownHooks().then(() => this.#disconnectIfLast());
    if (!(await settlesWithin(hooksThenDisconnect, left()))) {
      this.#logger.warn(
        "shutdown deadline: the shutdown hooks or the disconnect still running go on in the background",
      );
    }
    this.#logger.info({ processed: this.#processed, failed: this.#failed }, "worker stopped");
    this.#stopRoutingLogs(unroute); // (not the routing of a start made meanwhile)
  }

  /**
   * The largest result stored: `maxResultBytes`, lowered to what the backend's server takes
   * when it takes less (`limit`, read as the worker starts and again with each heartbeat): a
   * larger result then fails its task at once, rather than be sent to a server that refuses it.
   */
  #applyResultSizeLimit(limit: ResultSizeLimit | undefined): void {
    const configured = this.#app.config.maxResultBytes;
    const lower = limit !== undefined && limit.bytes < (limit.quotesEscaped ? 2 : 1) * configured;
    this.#runnerEnv = { ...this.#runnerEnv, serverResultLimit: lower ? limit : undefined };
    if (!lower) return;
    this.#logger.info(
      { maxResultBytes: configured, limit: limit.bytes, source: limit.source },
      "results larger than the result backend's server takes fail their task (its limit is below maxResultBytes)",
    );
  }

  /**
   * Reads the backend server's result size limit again (after each heartbeat but the first,
   * which follows the start's read), so a limit changed on the server (`CONFIG SET`, `SET
   * GLOBAL`) or another server behind the same address (a failover) is followed within a
   * heartbeat interval. Only when it could be read as the worker started: a server that does not
   * tell (a Redis user refused both `CONFIG` and `GETBIT`) is not asked again. A failed read
   * keeps the limit known.
   */
  async #refreshResultSizeLimit(): Promise<void> {
    const known = this.#serverResultLimit;
    if (known === undefined || this.#phase !== "running") return;
    const limit = await this.#app.backend?.resultSizeLimit?.().catch(() => undefined);
    if (limit === undefined || limit.bytes === known.bytes) return;
    this.#serverResultLimit = limit;
    this.#logger.info(
      { limit: limit.bytes, before: known.bytes, source: limit.source },
      "the result backend's server changed its size limit",
    );
    this.#applyResultSizeLimit(limit);
  }

  /**
   * Warns of each `CHICORY_*` variable that is no Chicory setting (a misspelling, most likely),
   * once per process and name: the app, its broker and backend have read theirs by now.
   */
  #warnUnknownEnv(): void {
    for (const { name, meant } of unknownEnvNames(this.#app.config.env)) {
      if (warnedEnvNames.has(name)) continue;
      warnedEnvNames.add(name);
      this.#logger.warn(
        { variable: name, ...(meant === undefined ? {} : { didYouMean: meant }) },
        `environment variable ${name} is no Chicory setting and is ignored${meant === undefined ? "" : ` (did you mean ${meant}?)`}`,
      );
    }
  }

  /**
   * Adapters built without a logger log as process warnings again (see `routeUnownedLogs`):
   * ends `unroute`'s routing (default: the current one), not that of a start made since.
   */
  #stopRoutingLogs(unroute = this.#unrouteLogs): void {
    unroute?.();
    if (this.#unrouteLogs === unroute) this.#unrouteLogs = null;
  }
}

/** Waits for `promise` (which must not reject) until `signal` aborts or `ms` passes. */
function untilSettledOrAborted(
  promise: Promise<void>,
  signal: AbortSignal,
  ms?: number,
): Promise<"settled" | "aborted" | "timeout"> {
  if (signal.aborted) return Promise.resolve("aborted");
  return new Promise((resolve) => {
    const onAbort = () => done("aborted");
    const timer = ms === undefined ? undefined : setTimeout(() => done("timeout"), ms);
    function done(how: "settled" | "aborted" | "timeout"): void {
      clearTimeout(timer);
      signal.removeEventListener("abort", onAbort);
      resolve(how);
    }
    signal.addEventListener("abort", onAbort, { once: true });
    void promise.then(() => done("settled"));
  });
}

/** Runs the startup hooks one after another; the first failure ends the run, named. */
async function runStartupHooks(hooks: readonly WorkerHook[]): Promise<void> {
  for (const hook of hooks) {
    try {
      await hook();
    } catch (error) {
      const { message } = toStoredError(error); // (never throws, whatever was thrown)
      throw new ChicoryError(`worker startup hook failed: ${message}`, { cause: error });
    }
  }
}

/**
 * Null when `server` answers its healthcheck within {@link SHUTDOWN_STEP_MS} (or there is no
 * server), else why not. A Redis adapter answers at once while its connection is down.
 */
async function probe(server: { healthcheck(): Promise<HealthStatus> } | null): Promise<string | null> {
  if (server === null) return null;
  try {
    const health = await withinDeadline(server.healthcheck(), SHUTDOWN_STEP_MS);
    return health.connected ? null : (health.error ?? "not connected");
  } catch (error) {
    return error instanceof DeadlinePassed ? `no answer within ${SHUTDOWN_STEP_MS} ms` : toError(error).message;
  }
}

/** Whether `logger` takes debug lines (pino's `isLevelEnabled`; a logger without it is asked every line). */
function takesDebug(logger: Logger): boolean {
  const { isLevelEnabled } = logger as Logger & { isLevelEnabled?: unknown };
  if (typeof isLevelEnabled !== "function") return true;
  try {
    return isLevelEnabled.call(logger, "debug") === true;
  } catch {
    return true;
  }
}

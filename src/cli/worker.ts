/**
 * `chicory worker <module>[:export]`: runs a worker in this process until SIGINT/SIGTERM, or,
 * with `-w N` (N > 1), supervises N worker processes (see `supervisor.ts`).
 * @module
 */
import type { Command } from "commander";
import type { WorkerOptions } from "../config.js";
import type { LogLevel } from "../core/logger.js";
import { sleep, timerDelay } from "../core/sleep.js";
import { createLogger } from "../logging.js";
import { Worker } from "../worker/worker.js";
import { bannerLines } from "./banner.js";
import { loadApp } from "./load-app.js";
import { intAtLeast, positiveSeconds, seconds, withLogLevel, withQueues } from "./options.js";
import { EXIT_FAILURE, EXIT_OK, printInfo } from "./output.js";
import { handleStrayErrors } from "./stray-errors.js";
import { runSupervisor, SUPERVISED_ENV } from "./supervisor.js";

/** Options of `chicory worker`. */
export interface WorkerCommandOptions {
  workers?: number;
  concurrency?: number;
  queue?: string[];
  dlq?: boolean;
  heartbeatInterval?: number;
  heartbeatTtl?: number;
  shutdownTimeout?: number;
  logLevel?: LogLevel;
}

/** The {@link WorkerOptions} given on the command line (unset ones fall back to the app's config). */
export function workerOptionsFrom(opts: WorkerCommandOptions): WorkerOptions {
  const options: WorkerOptions = {};
  if (opts.concurrency !== undefined) options.concurrency = opts.concurrency;
  if (opts.queue !== undefined) options.queue = opts.queue;
  if (opts.dlq !== undefined) options.useDeadLetterQueue = opts.dlq;
  if (opts.heartbeatInterval !== undefined) options.heartbeatInterval = opts.heartbeatInterval;
  if (opts.heartbeatTtl !== undefined) options.heartbeatTtl = opts.heartbeatTtl;
  if (opts.shutdownTimeout !== undefined) options.shutdownTimeout = opts.shutdownTimeout;
  // (--log-level is the level of the logger `runWorkerCommand` builds, not a Worker option)
  return options;
}

/** The arguments a supervised child runs with: the same options, minus `--workers`. */
export function childArgs(spec: string, opts: WorkerCommandOptions): string[] {
  const args = ["worker", spec];
  if (opts.concurrency !== undefined) args.push("--concurrency", String(opts.concurrency));
  for (const queue of opts.queue ?? []) args.push("--queue", queue);
  if (opts.dlq !== undefined) args.push(opts.dlq ? "--dlq" : "--no-dlq");
  if (opts.heartbeatInterval !== undefined) args.push("--heartbeat-interval", String(opts.heartbeatInterval));
  if (opts.heartbeatTtl !== undefined) args.push("--heartbeat-ttl", String(opts.heartbeatTtl));
  if (opts.shutdownTimeout !== undefined) args.push("--shutdown-timeout", String(opts.shutdownTimeout));
  if (opts.logLevel !== undefined) args.push("--log-level", opts.logLevel);
  return args;
}

/** Runs `chicory worker`; resolves to the exit code. */
export async function runWorkerCommand(spec: string, opts: WorkerCommandOptions): Promise<number> {
  const loaded = await loadApp(spec);
  const { app } = loaded;
  const level = opts.logLevel ?? app.config.worker.logLevel;
  const logger = createLogger({ level, toStderr: true, env: app.config.env });
  const worker = new Worker(app, { ...workerOptionsFrom(opts), logger });
  const processes = opts.workers ?? 1;
  const isSupervised = process.env[SUPERVISED_ENV] === "1" && typeof process.send === "function";
  if (!isSupervised) {
    for (const line of bannerLines({ appDisplay: loaded.display, app, config: worker.config, processes })) {
      printInfo(line);
    }
  }
  if (!app.broker.capabilities.multiProcess && !isSupervised) {
    logger.warn(
      `the app's broker (${app.broker.displayUrl}) lives in this process only: no other process (a producer, chicory enqueue) can give this worker jobs; set CHICORY_BROKER_URL to a broker processes share`,
    );
  }
  if (processes > 1) {
    return runSupervisor({
      count: processes,
      args: childArgs(spec, opts),
      shutdownTimeoutSeconds: worker.config.shutdownTimeout,
      logger: logger.child({ role: "supervisor" }),
    });
  }
  if (isSupervised) {
    // The parent went away (even by SIGKILL): stop gracefully rather than run orphaned.
    process.on("disconnect", () => {
      worker.stop().catch(() => undefined);
    });
    process.channel?.unref();
  }
  // An error nobody caught (from a task's stray promise or timer) must not kill the jobs
  // running beside it: run() handles it (a rejection is logged and the worker goes on; an
  // exception, after which Node holds the process's state unsafe, is logged and stops the
  // worker gracefully, and run() rejects with it: exit 1). The CLI's own process listeners
  // (main.ts) would end the command: they hand such errors here instead, where an exception
  // only arms the exit, should the stop itself hang (its manager restarts the process), after
  // the shutdown timeout and 10 s more.
  let hasFailed = false;
  const stopHandlingStrays = handleStrayErrors((kind) => {
    if (kind !== "exception" || hasFailed) return;
    hasFailed = true;
    setTimeout(() => process.exit(EXIT_FAILURE), timerDelay((worker.config.shutdownTimeout + 10) * 1000)).unref();
  });
  let isDone = false;
  const running = worker.run().finally(() => {
    isDone = true;
    stopHandlingStrays();
  });
  if (isSupervised) {
    void (async () => {
      while (!isDone && !worker.isRunning) await sleep(25);
      if (worker.isRunning && process.connected) process.send?.({ type: "ready", pid: process.pid });
    })();
  }
  try {
    await running;
  } catch (error) {
    if (hasFailed) return EXIT_FAILURE; // the uncaught exception run() logged and stopped for
    throw error;
  }
  return hasFailed ? EXIT_FAILURE : EXIT_OK;
}

/** Most worker processes one `chicory worker -w N` supervises (a typo must not fork hundreds). */
const MAX_WORKER_PROCESSES = 256;

/** Adds `chicory worker` to the program. */
export function registerWorkerCommand(program: Command, run: (action: () => Promise<number>) => Promise<void>): void {
  const command = program
    .command("worker")
    .description("run a worker (or, with -w N, supervise N worker processes) until SIGINT/SIGTERM")
    .argument(
      "<module>",
      "app module: path/to/app.ts[:export] (.ts, .mts, .cts, .js, .mjs, .cjs; export `app` by default)",
    )
    .option(
      "-w, --workers <n>",
      `number of worker processes to run and supervise (at most ${MAX_WORKER_PROCESSES}; default: 1, in this process)`,
      intAtLeast(1, MAX_WORKER_PROCESSES),
    )
    .option(
      "-c, --concurrency <n>",
      "tasks run at once per process (default: the app's, CHICORY_WORKER_CONCURRENCY, or min(32, CPUs + 4))",
      intAtLeast(1),
    );
  withQueues(
    command,
    "queue to consume (repeatable, or comma-separated; default: the app's worker queue, CHICORY_WORKER_QUEUE, or default)",
  );
  command
    .option(
      "--dlq",
      "move tasks that finally fail to the dead-letter queue (default: the app's, CHICORY_WORKER_USE_DEAD_LETTER_QUEUE, or off)",
    )
    .option("--no-dlq", "do not use the dead-letter queue")
    .option(
      "--heartbeat-interval <seconds>",
      "seconds between heartbeats (default: the app's, CHICORY_WORKER_HEARTBEAT_INTERVAL, or 10)",
      positiveSeconds,
    )
    .option(
      "--heartbeat-ttl <seconds>",
      "seconds a heartbeat stays valid, > interval (default: the app's, CHICORY_WORKER_HEARTBEAT_TTL, or max(30, 3 × interval))",
      positiveSeconds,
    )
    .option(
      "--shutdown-timeout <seconds>",
      "seconds to wait for running tasks on shutdown (default: the app's, CHICORY_WORKER_SHUTDOWN_TIMEOUT, or 30)",
      seconds,
    );
  withLogLevel(command, "the app's, CHICORY_WORKER_LOG_LEVEL, or INFO").action(
    (spec: string, opts: WorkerCommandOptions) => run(() => runWorkerCommand(spec, opts)),
  );
}

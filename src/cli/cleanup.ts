/**
 * `chicory cleanup <module>`: removes worker records and broker consumers that have been
 * silent for longer than `--stale-seconds` (never a consumer that still owns pending messages).
 * @module
 */
import { type Command, InvalidArgumentError } from "commander";
import { connectBackend, connectBroker, targetQueues, withApp } from "./app-session.js";
import { positiveSeconds, withLogLevel, withQueues } from "./options.js";
import { EXIT_OK, printInfo, printJson, printLine } from "./output.js";

/** Options of `chicory cleanup`. */
export interface CleanupCommandOptions {
  staleSeconds?: number;
  queue?: string[];
  json?: boolean;
}

/** Runs `chicory cleanup`; resolves to the exit code. */
export function runCleanupCommand(spec: string, opts: CleanupCommandOptions): Promise<number> {
  return withApp(spec, async ({ app }) => {
    const staleSeconds = opts.staleSeconds ?? app.config.worker.staleWorkersTimeout;
    await connectBroker(app);
    // both connected before either is cleaned: a backend that is down fails the command before
    // it removed anything, rather than after the consumers' half, unreported
    const backend = app.backend ? await connectBackend(app, "cleanup") : undefined;
    const queues = targetQueues(app, opts.queue);
    // no prototype: a queue may be named `__proto__`
    const consumers: Record<string, number> = Object.create(null);
    const totalConsumers = () => Object.values(consumers).reduce((a, b) => a + b, 0);
    let workers = 0;
    let isCleaningWorkers = false;
    try {
      for (const queue of queues) consumers[queue] = await app.broker.cleanupStaleClients(queue, staleSeconds);
      isCleaningWorkers = true;
      if (backend) workers = await backend.cleanupStaleClients(staleSeconds);
    } catch (error) {
      // what was removed before a later step failed (a backend the user may not write, a
      // queue's XINFO refused) is said, not lost with the error
      const done = Object.keys(consumers);
      // (the worker records go in batches: some may be gone when a later batch fails)
      const records = isCleaningWorkers
        ? "the worker records' cleanup failed, some may be removed"
        : "no worker record removed";
      printInfo(
        `removed ${totalConsumers()} stale consumer(s) before the failure below (queues cleaned: ${done.length > 0 ? done.join(", ") : "none"}; ${records})`,
      );
      throw error;
    }
    if (opts.json) {
      printJson({ staleSeconds, removedWorkers: workers, removedConsumers: consumers });
    } else {
      printLine(
        `removed ${workers} stale worker record(s) and ${totalConsumers()} stale consumer(s) ` +
          `(silent > ${staleSeconds} s; queues: ${queues.join(", ")})`,
      );
    }
    return EXIT_OK;
  });
}

/** Adds `chicory cleanup` to the program. */
export function registerCleanupCommand(program: Command, run: (action: () => Promise<number>) => Promise<void>): void {
  const command = program
    .command("cleanup")
    .description("remove stale worker records and broker consumers")
    .argument("<module>", "app module: path/to/app.ts[:export]")
    .option(
      "--stale-seconds <seconds>",
      "remove what has been silent longer than this, >= 10, and longer than the workers' heartbeat interval (default: the app's staleWorkersTimeout, 300)",
      staleSeconds,
    )
    .option("--json", "print JSON");
  withQueues(command, "queue whose consumers to clean (repeatable); default: all the app's queues");
  withLogLevel(command).action((spec: string, opts: CleanupCommandOptions) => run(() => runCleanupCommand(spec, opts)));
}

/** `--stale-seconds`: at least 10 s, as `staleWorkersTimeout` (less would remove live workers between heartbeats). */
function staleSeconds(value: string): number {
  const s = positiveSeconds(value);
  if (s < 10) {
    throw new InvalidArgumentError(
      `expected at least 10 s (and more than the workers' heartbeat interval, else live workers are removed), got "${value}"`,
    );
  }
  return s;
}

/**
 * `chicory result <module> <task-id>`: prints a task's state and its value or error as JSON;
 * with `--wait`, waits for a terminal state first (exit code 1 for a failure or a timeout).
 * @module
 */
import type { Command } from "commander";
import type { TaskRecord } from "../backends/backend.js";
import type { LogLevel } from "../core/logger.js";
import { isValidTaskId, MAX_TASK_ID_LENGTH } from "../core/message.js";
import { TaskFailedError } from "../errors.js";
import { AsyncResult } from "../result.js";
import { connectBackend, withApp } from "./app-session.js";
import { positiveSeconds, withLogLevel } from "./options.js";
import { CliUsageError, EXIT_OK, printJson } from "./output.js";

/** Options of `chicory result`. */
export interface ResultCommandOptions {
  wait?: boolean;
  json?: boolean;
  timeout?: number;
  logLevel?: LogLevel;
}

/** The JSON `chicory result` prints. */
export function resultView(taskId: string, record: TaskRecord | null, withStack: boolean): Record<string, unknown> {
  if (!record) return { taskId, state: "PENDING" };
  const view: Record<string, unknown> = { taskId, state: record.state };
  if (record.taskName !== undefined) view.taskName = record.taskName;
  if (record.retries !== undefined) view.retries = record.retries;
  if (record.state === "SUCCESS") view.result = record.result ?? null;
  if (record.error) {
    view.error = {
      type: record.error.type,
      message: record.error.message,
      ...(record.error.code === undefined ? {} : { code: record.error.code }),
      ...(withStack && record.error.stack ? { stack: record.error.stack } : {}),
    };
  }
  view.updatedAt = record.updatedAt;
  return view;
}

/**
 * Runs `chicory result`; resolves to the exit code. A plain read exits 0 whatever the state.
 * `--wait` waits as `enqueue --wait` does (same timeout default, the app's
 * `resultDefaultTimeout`) and ends the same way: a timeout throws its `TimeoutError`, a failed
 * or dead-lettered task prints its record and throws its `TaskFailedError` (exit code 1).
 */
export function runResultCommand(spec: string, taskId: string, opts: ResultCommandOptions): Promise<number> {
  if (!isValidTaskId(taskId)) {
    return Promise.reject(
      new CliUsageError(
        `task id: expected 1-${MAX_TASK_ID_LENGTH} characters, got ${JSON.stringify(String(taskId).slice(0, 40))}`,
      ),
    );
  }
  if (opts.timeout !== undefined && !opts.wait) return Promise.reject(new CliUsageError("--timeout needs --wait"));
  return withApp(spec, async ({ app }) => {
    const backend = await connectBackend(app, "reading results");
    const withStack = opts.logLevel === "DEBUG";
    if (!opts.wait) {
      printJson(resultView(taskId, await backend.getResult(taskId), withStack));
      return EXIT_OK;
    }
    const result = new AsyncResult(taskId, backend); // the app's get() defaults
    let failure: TaskFailedError | undefined;
    try {
      await result.get({ timeout: opts.timeout ?? app.config.resultDefaultTimeout });
    } catch (error) {
      if (!(error instanceof TaskFailedError)) throw error;
      failure = error;
    }
    printJson(resultView(taskId, await result.record(), withStack));
    if (failure) throw failure;
    return EXIT_OK;
  });
}

/** Adds `chicory result` to the program. */
export function registerResultCommand(program: Command, run: (action: () => Promise<number>) => Promise<void>): void {
  const command = program
    .command("result")
    .description("print a task's state and its value or error as JSON")
    .argument("<module>", "app module: path/to/app.ts[:export]")
    .argument("<task-id>", "task id (printed by enqueue)")
    .option("--wait", "wait until the task has finished (exit code 1 when it failed)")
    .option(
      "--timeout <seconds>",
      "with --wait: give up after this long (exit code 1; default: the app's resultDefaultTimeout)",
      positiveSeconds,
    )
    .option("--json", "print JSON (what this command always prints; accepted as every command's)");
  withLogLevel(command).action((spec: string, taskId: string, opts: ResultCommandOptions) =>
    run(() => runResultCommand(spec, taskId, opts)),
  );
}

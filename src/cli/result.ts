/**
 * `chicory result <module> <task-id>`: prints a task's state and its value or error as JSON.
 * @module
 */
import type { Command } from "commander";
import type { TaskRecord } from "../backends/backend.js";
import type { LogLevel } from "../core/logger.js";
import { connectBackend, withApp } from "./app-session.js";
import { positiveSeconds, withLogLevel } from "./options.js";
import { EXIT_OK, printJson } from "./output.js";

/** Options of `chicory result`. */
export interface ResultCommandOptions {
  wait?: boolean;
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
      ...(withStack && record.error.stack ? { stack: record.error.stack } : {}),
    };
  }
  view.updatedAt = record.updatedAt;
  return view;
}

/** Runs `chicory result`; resolves to the exit code. */
export function runResultCommand(spec: string, taskId: string, opts: ResultCommandOptions): Promise<number> {
  return withApp(spec, async ({ app }) => {
    const backend = await connectBackend(app, "reading results");
    const record = opts.wait
      ? await backend.waitForResult(taskId, {
          timeoutMs: opts.timeout === undefined ? undefined : opts.timeout * 1000,
          pollIntervalMs: app.config.resultPollInterval * 1000,
        })
      : await backend.getResult(taskId);
    printJson(resultView(taskId, record ?? (await backend.getResult(taskId)), opts.logLevel === "DEBUG"));
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
    .option("--wait", "wait until the task has finished")
    .option("--timeout <seconds>", "with --wait: stop waiting after this long", positiveSeconds);
  withLogLevel(command).action((spec: string, taskId: string, opts: ResultCommandOptions) =>
    run(() => runResultCommand(spec, taskId, opts)),
  );
}

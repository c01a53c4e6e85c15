/**
 * `chicory enqueue <module> <task> [JSON args]`: dispatches a task and prints its id; with
 * `--wait`, waits and prints the result as JSON (or the remote error, exit code 1).
 * @module
 */
import type { Command } from "commander";
import type { ApplyOptions } from "../task.js";
import { connectBackend, connectBroker, withApp } from "./app-session.js";
import { positiveSeconds, seconds, withLogLevel } from "./options.js";
import { CliUsageError, EXIT_OK, printInfo, printJson, printLine } from "./output.js";
import { resultView } from "./result.js";

/** Options of `chicory enqueue`. */
export interface EnqueueCommandOptions {
  countdown?: number;
  queue?: string;
  wait?: boolean;
  timeout?: number;
  json?: boolean;
}

/** Parses the JSON argument array. */
export function parseArgs(text: string | undefined): unknown[] {
  if (text === undefined || text.trim() === "") return [];
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new CliUsageError(
      `arguments must be a JSON array, e.g. '[1, "two"]': ${error instanceof Error ? error.message : String(error)}`,
    );
  }
  if (!Array.isArray(value)) {
    throw new CliUsageError(`arguments must be a JSON array, e.g. '[1, "two"]' (got ${JSON.stringify(value)})`);
  }
  return value;
}

/** Runs `chicory enqueue`; resolves to the exit code. */
export async function runEnqueueCommand(
  spec: string,
  taskName: string,
  argsText: string | undefined,
  opts: EnqueueCommandOptions,
): Promise<number> {
  const args = parseArgs(argsText);
  if (opts.timeout !== undefined && !opts.wait) throw new CliUsageError("--timeout needs --wait");
  return withApp(spec, async ({ app, display }) => {
    const task = app.tasks.get(taskName);
    if (!task) {
      const known = [...app.tasks.keys()].sort().join(", ") || "none";
      throw new CliUsageError(`task "${taskName}" is not registered in ${display} (tasks: ${known})`);
    }
    await connectBroker(app);
    if (opts.wait) await connectBackend(app, "--wait");
    const options: ApplyOptions = {};
    if (opts.countdown !== undefined) options.countdown = opts.countdown;
    if (opts.queue !== undefined) options.queue = opts.queue;
    const result = await task.applyAsync(args, options);
    if (!opts.wait) {
      if (opts.json) printJson({ taskId: result.taskId, task: taskName });
      else printLine(result.taskId);
      return EXIT_OK;
    }
    if (!opts.json) printLine(result.taskId);
    const timeout = opts.timeout ?? app.config.resultDefaultTimeout;
    if (timeout === null) {
      // a wait without end for a queue nobody consumes looks like a hang: said once, on stderr
      const queue = opts.queue ?? task.queue;
      const consumers = await app.broker.getConsumerCount(queue).catch(() => undefined);
      if (consumers === 0) {
        printInfo(
          `no worker consumes queue "${queue}" now: waiting until one runs the task (--timeout <seconds> gives up)`,
        );
      }
    }
    if (!opts.json) {
      printLine(JSON.stringify((await result.get({ timeout })) ?? null));
      return EXIT_OK;
    }
    let value: unknown;
    try {
      value = await result.get({ timeout });
    } catch (error) {
      // still one JSON object on stdout: the task's record as it is (its error, or the state it
      // had when the wait ended), then the failure line on stderr
      const record = await result.record().catch(() => null);
      printJson({ taskId: result.taskId, task: taskName, ...resultView(result.taskId, record, false) });
      throw error;
    }
    printJson({ taskId: result.taskId, task: taskName, state: "SUCCESS", result: value ?? null });
    return EXIT_OK;
  });
}

/** Adds `chicory enqueue` to the program. */
export function registerEnqueueCommand(program: Command, run: (action: () => Promise<number>) => Promise<void>): void {
  const command = program
    .command("enqueue")
    .description("dispatch a task and print its id (--wait: print its result)")
    .argument("<module>", "app module: path/to/app.ts[:export]")
    .argument("<task>", "task name")
    .argument("[args...]", "arguments as one JSON array, e.g. '[1, 2]' (default [])")
    .option("--countdown <seconds>", "run no earlier than this many seconds from now", seconds)
    .option("-q, --queue <name>", "queue to publish to (default: the task's queue)")
    .option("--wait", "wait for the result and print it as JSON")
    .option("--timeout <seconds>", "with --wait: give up after this long (exit code 1)", positiveSeconds)
    .option("--json", "print one JSON object");
  withLogLevel(command).action((spec: string, task: string, words: string[], opts: EnqueueCommandOptions) =>
    run(async () => {
      if (words.length > 1) {
        // `enqueue app.ts add 1 2`: the shell split what should be one JSON array
        throw new CliUsageError(
          `arguments must be one JSON array, quoted as one shell word: '[${words.join(", ")}]' (got ${words.length} words: ${words.join(" ")})`,
        );
      }
      return runEnqueueCommand(spec, task, words[0], opts);
    }),
  );
}

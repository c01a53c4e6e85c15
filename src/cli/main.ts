#!/usr/bin/env node
/**
 * The `chicory` command line (SPEC §10): parses with commander and dispatches to one file per
 * command. Exit codes: 0 success, 1 runtime failure, 2 usage error. Errors print one line
 * (`chicory: <message>`, passwords masked); `--log-level DEBUG` adds the stack.
 * @module
 */
import { Command, CommanderError } from "commander";
import { registerCleanupCommand } from "./cleanup.js";
import { registerDemoCommand } from "./demo.js";
import { registerDlqCommand } from "./dlq.js";
import { registerEnqueueCommand } from "./enqueue.js";
import { wantsStack } from "./options.js";
import { EXIT_OK, EXIT_USAGE, exitCodeFor, maskSecrets, reportError } from "./output.js";
import { registerQueueCommand } from "./queue.js";
import { registerResultCommand } from "./result.js";
import { strayError } from "./stray-errors.js";
import { packageVersion } from "./version.js";
import { registerWorkerCommand } from "./worker.js";
import { registerWorkersCommand } from "./workers.js";

/** Turns commander's `error: ...` text into one `chicory: ...` line. */
function commanderLine(text: string): string {
  const flat = text
    .trim()
    .replace(/^error:\s*/i, "")
    .replace(/\s*\n\s*/g, " ");
  return `chicory: ${maskSecrets(flat)}\n`;
}

/** Builds the program; `run` executes an action and records its exit code. */
function buildProgram(run: (action: () => Promise<number>) => Promise<void>): Command {
  const program = new Command("chicory")
    .description("Chicory: an async-native, typed, distributed task queue")
    .version(packageVersion(), "-V, --version", "print the version")
    .helpOption("-h, --help", "show help")
    .exitOverride()
    .configureOutput({ outputError: (text, write) => write(commanderLine(text)) })
    .showSuggestionAfterError(true);
  registerWorkerCommand(program, run);
  registerWorkersCommand(program, run);
  registerCleanupCommand(program, run);
  registerDlqCommand(program, run);
  registerQueueCommand(program, run);
  registerEnqueueCommand(program, run);
  registerResultCommand(program, run);
  registerDemoCommand(program, run);
  program.addHelpText(
    "after",
    "\nExit codes: 0 success, 1 runtime failure, 2 usage error.\nExamples:\n" +
      "  chicory demo\n  chicory worker ./app.ts -c 8 -q default -q mail\n" +
      "  chicory enqueue ./app.ts add '[1, 2]' --wait\n  chicory dlq list ./app.ts",
  );
  return program;
}

/** Runs the CLI on `argv` (as `process.argv`); resolves to the exit code. */
async function main(argv: readonly string[]): Promise<number> {
  let exitCode = EXIT_OK;
  const program = buildProgram(async (action) => {
    exitCode = await action();
  });
  try {
    await program.parseAsync([...argv]);
    return exitCode;
  } catch (error) {
    if (error instanceof CommanderError) return error.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
    reportError(error, wantsStack(argv));
    return exitCodeFor(error);
  }
}

process.on("unhandledRejection", (reason) => {
  if (strayError("rejection", reason)) return;
  reportError(reason, wantsStack(process.argv));
  process.exit(1);
});
// (as Node does without a listener, exit 1; one line, and the stack at DEBUG, as every error)
process.on("uncaughtException", (error) => {
  if (strayError("exception", error)) return;
  reportError(error, wantsStack(process.argv));
  process.exit(1);
});

// A closed stdout (`chicory dlq list app.ts --json | head -1`, head gone): the reader wants no
// more output, which is no failure worth a stack trace: end quietly.
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code === "EPIPE") process.exit(typeof process.exitCode === "number" ? process.exitCode : EXIT_OK);
  reportError(error, false);
  process.exit(1);
});

const code = await main(process.argv);
process.exitCode = code;
// Everything is closed by now; do not let a stray handle (a driver's timer) keep the CLI alive.
setTimeout(() => process.exit(code), 1000).unref();

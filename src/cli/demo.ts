/**
 * `chicory demo`: an end-to-end run on the embedded default, with no server. A worker runs
 * in this process on a SQLite file in a fresh temporary directory (removed afterwards, so
 * nothing is left in the working directory); the demo dispatches example tasks (one retries,
 * one ends in the dead-letter queue), prints their results and the DLQ, and stops the worker.
 * @module
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Command } from "commander";
import type { Chicory } from "../app.js";
import type { LogLevel } from "../core/logger.js";
import { sleep } from "../core/sleep.js";
import { createLogger } from "../logging.js";
import type { AsyncResult } from "../result.js";
import { Worker } from "../worker/worker.js";
import { createDemoApp } from "./demo-app.js";
import { withLogLevel } from "./options.js";
import { EXIT_OK, printLine, truncate } from "./output.js";

/** Options of `chicory demo`. */
export interface DemoCommandOptions {
  /** Broker URL (hidden; default: a SQLite file in a temporary directory). */
  broker?: string;
  /** Backend URL (hidden; default: the broker's location). */
  backend?: string;
  logLevel?: LogLevel;
}

interface Dispatched {
  readonly label: string;
  readonly result: AsyncResult<unknown>;
  readonly sentAt: number;
}

const RESULT_TIMEOUT_SECONDS = 30;

function plural(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`;
}

async function describeOutcome(app: Chicory, job: Dispatched): Promise<string> {
  let outcome: string;
  try {
    const value = await job.result.get({ timeout: RESULT_TIMEOUT_SECONDS });
    outcome = `= ${truncate(JSON.stringify(value), 60)}`;
  } catch (error) {
    const remote = error as { errorType?: string; remoteMessage?: string; message?: string };
    outcome = `${remote.errorType ?? "Error"}: ${truncate(remote.remoteMessage ?? remote.message ?? "", 60)}`;
  }
  const elapsed = `${((Date.now() - job.sentAt) / 1000).toFixed(2)} s`;
  const record = await app.backend?.getResult(job.result.taskId);
  const retries = record?.retries ?? 0;
  const state = record?.state ?? "PENDING";
  const notes = [
    ...(retries > 0 ? [`after ${plural(retries, "retry", "retries")}`] : []),
    ...(state === "DEAD_LETTERED" ? ["moved to the dead-letter queue"] : []),
  ];
  const note = notes.length > 0 ? `  (${notes.join(", ")})` : "";
  return `  ${job.label.padEnd(38)} ${state.padEnd(14)} ${elapsed.padStart(7)}   ${outcome}${note}`;
}

async function waitForDlq(app: Chicory, queue: string, atLeast: number): Promise<void> {
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline && (await app.broker.getDlqCount(queue)) < atLeast) await sleep(50);
}

async function printDlq(app: Chicory, queue: string): Promise<void> {
  const entries = await app.broker.getDlqMessages(queue, 10);
  printLine();
  printLine(`Dead-letter queue "${queue}": ${entries.length} message(s)`);
  for (const entry of entries) {
    const m = entry.originalMessage;
    printLine(`  message ${entry.messageId}`);
    printLine(`    task      ${m?.name ?? "?"}(${(m?.args ?? []).map((a) => JSON.stringify(a)).join(", ")})`);
    printLine(`    task id   ${m?.id ?? "?"}`);
    printLine(`    failed at ${entry.failedAt.toISOString()} after ${plural(entry.retryCount, "retry", "retries")}`);
    printLine(`    error     ${truncate(entry.error, 100)}`);
  }
  if (entries.length > 0) printLine(`  (replay one with: chicory dlq replay <module> <message-id>)`);
}

/** Runs `chicory demo`; resolves to the exit code. */
export async function runDemoCommand(opts: DemoCommandOptions): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), "chicory-demo-"));
  try {
    const broker = opts.broker ?? `sqlite:${join(dir, "chicory-demo.db")}`;
    const { app, tasks } = createDemoApp({ broker, backend: opts.backend });
    const logger = createLogger({ level: opts.logLevel ?? "ERROR", toStderr: true });
    const worker = new Worker(app, {
      concurrency: 4,
      useDeadLetterQueue: true,
      heartbeatInterval: 1,
      heartbeatTtl: 5,
      shutdownTimeout: 5,
      logger,
    });
    printLine(`Chicory demo: broker ${app.broker.displayUrl}, backend ${app.backend?.displayUrl ?? "none"}`);
    await worker.start();
    printLine(`Worker ${worker.workerId} started (concurrency 4, queue "default", dead-letter queue on).`);
    printLine();
    printLine("Dispatching 4 tasks and waiting for their results:");
    const jobs: Dispatched[] = [];
    const dispatch = async (label: string, send: () => Promise<AsyncResult<unknown>>) => {
      const sentAt = Date.now();
      jobs.push({ label, result: await send(), sentAt });
    };
    await dispatch("add(2, 3)", () => tasks.add.delay(2, 3));
    await dispatch("slow_square(7)", () => tasks.slowSquare.delay(7));
    await dispatch('flaky_fetch("https://example.com")', () => tasks.flakyFetch.delay("https://example.com"));
    await dispatch('charge_card("4242424242424242", 42)', () => tasks.chargeCard.delay("4242424242424242", 42));
    for (const job of jobs) printLine(await describeOutcome(app, job));
    await waitForDlq(app, "default", 1);
    await printDlq(app, "default");
    const stats = worker.getStats();
    await worker.stop();
    printLine();
    printLine(`Worker stopped after ${stats.tasksProcessed} attempts (${stats.tasksFailed} failed, retries included).`);
    printLine("Next: write an app module and run `chicory worker app.ts` and `chicory enqueue app.ts <task> '[...]'`.");
    return EXIT_OK;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Adds `chicory demo` to the program. */
export function registerDemoCommand(program: Command, run: (action: () => Promise<number>) => Promise<void>): void {
  const command = program
    .command("demo")
    .description("end-to-end run on the embedded default (SQLite in a temporary directory): no server needed")
    .option("--broker <url>", "broker URL instead of the temporary SQLite file")
    .option("--backend <url>", "backend URL (default: the broker's location)");
  // The URL options are for trying other brokers; keep the help about the no-server default.
  for (const option of command.options)
    if (option.long === "--broker" || option.long === "--backend") option.hideHelp();
  withLogLevel(command).action((opts: DemoCommandOptions) => run(() => runDemoCommand(opts)));
}

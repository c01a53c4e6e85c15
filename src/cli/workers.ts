/**
 * `chicory workers <module>`: lists live workers from their heartbeats in the backend; with
 * `--min`, also a health probe (exit 1 when fewer are running).
 * @module
 */
import type { Command } from "commander";
import type { WorkerStats } from "../backends/backend.js";
import { connectBackend, withApp } from "./app-session.js";
import { intAtLeast, withLogLevel } from "./options.js";
import { EXIT_FAILURE, EXIT_OK, printInfo, printJson, printTable } from "./output.js";

/** Options of `chicory workers`. */
export interface WorkersCommandOptions {
  json?: boolean;
  /** Only the workers of this host (as `os.hostname()` gives it on the worker's machine). */
  host?: string;
  /** Exit 1 when fewer than this many of the listed workers are running. */
  min?: number;
}

function age(iso: string | null, now: number): string {
  if (!iso) return "-";
  const seconds = Math.round((now - Date.parse(iso)) / 1000);
  // Stamped by another clock (the worker's on Redis, the database's on SQL): one ahead of this
  // host's shows as such, not as "0s ago".
  return seconds < -1 ? `${-seconds}s ahead (clock skew)` : `${Math.max(0, seconds)}s ago`;
}

function uptime(seconds: number): string {
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)}m`;
  return `${Math.floor(seconds / 3600)}h${Math.floor((seconds % 3600) / 60)}m`;
}

/** Runs `chicory workers`; resolves to the exit code. */
export function runWorkersCommand(spec: string, opts: WorkersCommandOptions): Promise<number> {
  return withApp(spec, async ({ app }) => {
    const backend = await connectBackend(app, "listing workers");
    const workers: WorkerStats[] = (await backend.getActiveWorkers())
      .filter((w) => opts.host === undefined || w.hostname === opts.host)
      .sort((a, b) => a.workerId.localeCompare(b.workerId));
    const exitCode = checkRunning(workers, opts);
    if (opts.json) {
      printJson(workers);
      return exitCode;
    }
    const now = Date.now();
    printTable(
      ["WORKER ID", "HOST", "PID", "QUEUES", "CONC", "ACTIVE", "DONE", "FAILED", "UPTIME", "HEARTBEAT", "STATE"],
      workers.map((w) => [
        w.workerId,
        w.hostname,
        String(w.pid),
        w.queue,
        String(w.concurrency),
        String(w.activeTasks),
        String(w.tasksProcessed),
        String(w.tasksFailed),
        uptime(w.uptimeSeconds),
        age(w.lastHeartbeat, now),
        w.isRunning ? "running" : "stopped",
      ]),
      opts.host === undefined ? "no live workers" : `no live workers on host ${opts.host}`,
    );
    return exitCode;
  });
}

/**
 * With `--min n`: EXIT_FAILURE, said on stderr, when fewer than n of `workers` are running (a
 * stopping worker's heartbeat says stopped); EXIT_OK otherwise.
 */
function checkRunning(workers: readonly WorkerStats[], opts: WorkersCommandOptions): number {
  if (opts.min === undefined) return EXIT_OK;
  const running = workers.filter((w) => w.isRunning).length;
  if (running >= opts.min) return EXIT_OK;
  const where = opts.host === undefined ? "" : ` on host ${opts.host}`;
  printInfo(`chicory: ${running} running worker(s)${where}, fewer than --min ${opts.min}`);
  return EXIT_FAILURE;
}

/** Adds `chicory workers` to the program. */
export function registerWorkersCommand(program: Command, run: (action: () => Promise<number>) => Promise<void>): void {
  const command = program
    .command("workers")
    .description("list live workers (from their heartbeats)")
    .argument("<module>", "app module: path/to/app.ts[:export]")
    .option("--json", "print JSON instead of a table")
    .option("--host <hostname>", "only the workers of this host (its os.hostname(), as in the HOST column)")
    .option(
      "--min <n>",
      'exit 1 when fewer than n listed workers are running (a health probe; e.g. --host "$(hostname)" --min 1)',
      intAtLeast(1),
    );
  withLogLevel(command).action((spec: string, opts: WorkersCommandOptions) => run(() => runWorkersCommand(spec, opts)));
}

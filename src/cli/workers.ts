/**
 * `chicory workers <module>`: lists live workers from their heartbeats in the backend.
 * @module
 */
import type { Command } from "commander";
import type { WorkerStats } from "../backends/backend.js";
import { connectBackend, withApp } from "./app-session.js";
import { withLogLevel } from "./options.js";
import { EXIT_OK, printJson, printTable } from "./output.js";

/** Options of `chicory workers`. */
export interface WorkersCommandOptions {
  json?: boolean;
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
    const workers: WorkerStats[] = [...(await backend.getActiveWorkers())].sort((a, b) =>
      a.workerId.localeCompare(b.workerId),
    );
    if (opts.json) {
      printJson(workers);
      return EXIT_OK;
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
      "no live workers",
    );
    return EXIT_OK;
  });
}

/** Adds `chicory workers` to the program. */
export function registerWorkersCommand(program: Command, run: (action: () => Promise<number>) => Promise<void>): void {
  const command = program
    .command("workers")
    .description("list live workers (from their heartbeats)")
    .argument("<module>", "app module: path/to/app.ts[:export]")
    .option("--json", "print JSON instead of a table");
  withLogLevel(command).action((spec: string, opts: WorkersCommandOptions) => run(() => runWorkersCommand(spec, opts)));
}

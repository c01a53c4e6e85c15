/**
 * A minimal worker heartbeat for tests that write one by hand.
 */
import type { WorkerStats } from "../../src/backends/backend.js";

/** An idle worker's stats, stamped `at` (default now), with `extra` over them. */
export function idleWorkerStats(workerId: string, at = new Date(), extra: Partial<WorkerStats> = {}): WorkerStats {
  const iso = at.toISOString();
  return {
    workerId,
    hostname: "host",
    pid: 1,
    queue: "default",
    concurrency: 1,
    tasksProcessed: 0,
    tasksFailed: 0,
    activeTasks: 0,
    startedAt: iso,
    lastHeartbeat: iso,
    isRunning: true,
    uptimeSeconds: 0,
    ...extra,
  };
}

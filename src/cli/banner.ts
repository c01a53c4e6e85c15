/**
 * The worker's startup banner (printed to stderr), in the spirit of the Python CLI's:
 * app, tasks, queues, concurrency, delivery mode, broker and backend (passwords masked).
 * @module
 */
import type { Chicory } from "../app.js";
import type { WorkerConfig } from "../config.js";
import { describeLocation } from "../core/location.js";
import { maskSecrets } from "./output.js";
import { packageVersion } from "./version.js";

/** What the banner shows. */
export interface BannerInput {
  /** `file:export`. */
  readonly appDisplay: string;
  /** The app. */
  readonly app: Chicory;
  /** The worker's resolved settings. */
  readonly config: WorkerConfig;
  /** Number of worker processes (1 unless supervised). */
  readonly processes: number;
}

const MAX_TASK_NAMES = 12;

function taskList(app: Chicory): string {
  const names = [...app.tasks.keys()].sort();
  if (names.length === 0) return "0 registered (the worker will dead-letter or drop every message)";
  const shown = names.slice(0, MAX_TASK_NAMES).join(", ");
  const more = names.length > MAX_TASK_NAMES ? `, +${names.length - MAX_TASK_NAMES} more` : "";
  return `${names.length} registered: ${shown}${more}`;
}

/**
 * The queues consumed, and those of registered tasks that are not (a task there waits for
 * another worker).
 */
function queueList(app: Chicory, queues: readonly string[]): string {
  const unserved = new Map<string, string[]>();
  for (const task of app.tasks.values()) {
    if (queues.includes(task.queue)) continue;
    unserved.set(task.queue, [...(unserved.get(task.queue) ?? []), task.name]);
  }
  if (unserved.size === 0) return queues.join(", ");
  const others = [...unserved].map(([queue, names]) => `${queue} (${names.sort().join(", ")})`).join(", ");
  return `${queues.join(", ")}; not consumed here: ${others}`;
}

/** The banner's lines. */
export function bannerLines(input: BannerInput): string[] {
  const { app, config } = input;
  const rows: Array<[string, string]> = [
    ["app", input.appDisplay],
    ["tasks", taskList(app)],
    ["queues", queueList(app, config.queues)],
    [
      "concurrency",
      input.processes > 1
        ? `${config.concurrency} per process x ${input.processes} processes`
        : `${config.concurrency}`,
    ],
    ["delivery", app.config.deliveryMode],
    ["dead letters", config.useDeadLetterQueue ? "on (failed tasks go to the DLQ)" : "off"],
    ["heartbeat", `every ${config.heartbeatInterval} s, ttl ${config.heartbeatTtl} s`],
    ["broker", describeLocation(app.broker)],
    ["backend", app.backend ? describeLocation(app.backend) : "none (fire-and-forget)"],
    ["pid", `${process.pid}${input.processes > 1 ? " (supervisor)" : ""}`],
  ];
  const title = ` chicory worker v${packageVersion()} `;
  const width = Math.max(48, ...rows.map(([, value]) => value.length + 16));
  const rule = `${"-".repeat(4)}${title}${"-".repeat(Math.max(4, width - title.length - 4))}`;
  return [rule, ...rows.map(([key, value]) => `  ${key.padEnd(13)} ${maskSecrets(value)}`), "-".repeat(rule.length)];
}

/**
 * `chicory queue stats|purge <module>`: queue sizes, pending and consumer counts, DLQ sizes;
 * purge waiting messages. Queues default to the app's worker queues plus its tasks' queues.
 * @module
 */
import type { Command } from "commander";
import { connectBroker, targetQueues, withApp } from "./app-session.js";
import { purgeConfirmed, requireConfirmable } from "./confirm.js";
import { withLogLevel, withQueues } from "./options.js";
import { EXIT_OK, printJson, printLine, printTable } from "./output.js";

type Run = (action: () => Promise<number>) => Promise<void>;

/** Options of `chicory queue`. */
export interface QueueCommandOptions {
  queue?: string[];
  json?: boolean;
  /** `purge`: no question (required when stdin is not a terminal). */
  yes?: boolean;
}

/** One row of `queue stats`. */
export interface QueueStats {
  queue: string;
  size: number;
  pending: number;
  consumers: number;
  dlq: number;
}

async function stats(spec: string, opts: QueueCommandOptions): Promise<number> {
  return withApp(spec, async ({ app }) => {
    await connectBroker(app);
    const rows: QueueStats[] = [];
    for (const queue of targetQueues(app, opts.queue)) {
      const [size, pending, consumers, dlq] = await Promise.all([
        app.broker.getQueueSize(queue),
        app.broker.getPendingCount(queue),
        app.broker.getConsumerCount(queue),
        app.broker.getDlqCount(queue),
      ]);
      rows.push({ queue, size, pending, consumers, dlq });
    }
    if (opts.json) printJson(rows);
    else {
      printTable(
        ["QUEUE", "SIZE", "PENDING", "CONSUMERS", "DLQ"],
        rows.map((r) => [r.queue, String(r.size), String(r.pending), String(r.consumers), String(r.dlq)]),
        "no queues",
      );
    }
    return EXIT_OK;
  });
}

async function purge(spec: string, opts: QueueCommandOptions): Promise<number> {
  requireConfirmable("queue purge", opts.yes);
  return withApp(spec, async ({ app }) => {
    await connectBroker(app);
    const queues = targetQueues(app, opts.queue);
    const purged = await purgeConfirmed(queues, opts.yes, {
      what: "waiting message",
      count: (queue) => app.broker.getQueueSize(queue),
      purge: (queue) => app.broker.purgeQueue(queue),
    });
    if (opts.json) printJson(purged);
    else {
      const total = Object.values(purged).reduce((a, b) => a + b, 0);
      printLine(`purged ${total} waiting message(s) (${queues.join(", ")})`);
    }
    return EXIT_OK;
  });
}

/** Adds `chicory queue ...` to the program. */
export function registerQueueCommand(program: Command, run: Run): void {
  const queue = program.command("queue").description("queue statistics and purge");
  for (const [name, description, action] of [
    ["stats", "size, pending, consumers and DLQ count per queue", stats],
    ["purge", "delete every waiting (ready and delayed) message", purge],
  ] as const) {
    const command = queue
      .command(name)
      .description(description)
      .argument("<module>", "app module: path/to/app.ts[:export]")
      .option("--json", "print JSON");
    if (name === "purge") command.option("-y, --yes", "do not ask (required when stdin is not a terminal)");
    withQueues(command, "queue (repeatable); default: every queue of the app");
    withLogLevel(command).action((spec: string, opts: QueueCommandOptions) => run(() => action(spec, opts)));
  }
}

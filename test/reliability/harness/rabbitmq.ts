/**
 * RabbitMQ probes of the reliability harness, straight from the server (not through the adapter
 * under test): per-queue ready and unacknowledged counts (`rabbitmqctl list_queues`, vhost `/`;
 * AMQP itself does not expose unacknowledged counts), and deletion of every queue under a
 * sandbox's prefix (work queues, DLQs, delay queues; the broker declares no exchanges).
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { SERVICES } from "../../helpers/services.js";

const run = promisify(execFile);

/** One queue as `rabbitmqctl list_queues` reports it. */
export interface QueueCounts {
  readonly name: string;
  readonly ready: number;
  readonly unacked: number;
}

/** Queues whose name starts with `prefix.`, with their counts. */
export async function rabbitQueues(prefix: string): Promise<QueueCounts[]> {
  const { stdout } = await run(
    "rabbitmqctl",
    ["list_queues", "-q", "--no-table-headers", "name", "messages_ready", "messages_unacknowledged"],
    { timeout: 30_000 },
  );
  const out: QueueCounts[] = [];
  for (const line of stdout.split("\n")) {
    const [name, ready, unacked] = line.trim().split(/\s+/);
    if (!name?.startsWith(`${prefix}.`)) continue;
    out.push({ name, ready: Number(ready), unacked: Number(unacked) });
  }
  return out;
}

/** True when the work and delay queues under `prefix.` hold nothing ready or unacknowledged (a DLQ keeps its entries). */
export async function rabbitWorkQuiet(prefix: string): Promise<boolean> {
  const queues = (await rabbitQueues(prefix)).filter((q) => !q.name.endsWith(".dlq"));
  return queues.every((q) => q.ready === 0 && q.unacked === 0);
}

/** Deletes every queue under `prefix.`; returns how many. */
export async function deleteRabbitQueues(prefix: string): Promise<number> {
  const names = (await rabbitQueues(prefix)).map((q) => q.name);
  if (names.length === 0) return 0;
  const amqp = await import("amqplib");
  const connection = await amqp.connect(SERVICES.rabbitmq);
  try {
    const channel = await connection.createChannel();
    for (const name of names) await channel.deleteQueue(name);
    await channel.close();
  } finally {
    await connection.close();
  }
  return names.length;
}

/**
 * Queue statistics and purges over passive declarations. A queue that does not exist counts
 * as empty (RabbitMQ answers 404 and closes the channel, so each 404 costs a new channel).
 * AMQP exposes ready messages and consumer counts only: unacknowledged messages of other
 * processes are not visible without the management plugin.
 * @module
 */
import { BrokerConnectionError } from "../../errors.js";
import type { RabbitMqConnection } from "./rabbitmq-connection.js";
import { type AmqpChannel, amqpCode } from "./rabbitmq-driver.js";

interface OpenChannel {
  readonly channel: AmqpChannel;
  isOpen: boolean;
}

/**
 * Runs `op` for each queue name on a short-lived channel; a missing queue gives null.
 * @throws BrokerConnectionError on any other failure
 */
export async function eachQueue<T>(
  connection: RabbitMqConnection,
  timeoutMs: number,
  names: readonly string[],
  op: (channel: AmqpChannel, name: string) => Promise<T>,
): Promise<Array<T | null>> {
  const amqp = await connection.ready(timeoutMs);
  const out: Array<T | null> = [];
  let open: OpenChannel | null = null;
  try {
    for (const name of names) {
      if (!open?.isOpen) {
        const channel = await amqp.createChannel();
        const created: OpenChannel = { channel, isOpen: true };
        channel.on("error", () => {});
        channel.on("close", () => {
          created.isOpen = false;
        });
        open = created;
      }
      try {
        out.push(await op(open.channel, name));
      } catch (error) {
        if (amqpCode(error) !== 404) throw error;
        out.push(null);
      }
    }
  } catch (error) {
    throw new BrokerConnectionError(`RabbitMQ queue operation failed: ${(error as Error).message}`, { cause: error });
  } finally {
    if (open?.isOpen) await open.channel.close().catch(() => {});
  }
  return out;
}

/** Ready messages of each queue (0 for missing queues). */
export async function messageCounts(
  connection: RabbitMqConnection,
  timeoutMs: number,
  names: readonly string[],
): Promise<number[]> {
  const replies = await eachQueue(connection, timeoutMs, names, (channel, name) => channel.checkQueue(name));
  return replies.map((reply) => reply?.messageCount ?? 0);
}

/** Consumers of a queue (0 when missing). */
export async function consumerCount(connection: RabbitMqConnection, timeoutMs: number, name: string): Promise<number> {
  const [reply] = await eachQueue(connection, timeoutMs, [name], (channel, queue) => channel.checkQueue(queue));
  return reply?.consumerCount ?? 0;
}

/** Purges each queue; returns the total of messages removed. */
export async function purgeQueues(
  connection: RabbitMqConnection,
  timeoutMs: number,
  names: readonly string[],
): Promise<number> {
  const replies = await eachQueue(connection, timeoutMs, names, (channel, name) => channel.purgeQueue(name));
  return replies.reduce((sum, reply) => sum + (reply?.messageCount ?? 0), 0);
}

/**
 * Helpers of the RabbitMQ tests: a broker with a random prefix, and removal of every queue
 * declared under that prefix (work queues, DLQs, delay queues).
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import type { RabbitMqBrokerOptions } from "../../../src/brokers/rabbitmq/index.js";
import { RabbitMqBroker } from "../../../src/brokers/rabbitmq/index.js";
import { SERVICES, uniqueName } from "../../helpers/services.js";

const run = promisify(execFile);

/** A broker on the test RabbitMQ with a random prefix and connection name. */
export function testBroker(options: RabbitMqBrokerOptions = {}): RabbitMqBroker {
  return new RabbitMqBroker({
    url: SERVICES.rabbitmq,
    prefix: uniqueName("chicory-t"),
    connectionName: uniqueName("chicory-test-"),
    ...options,
  });
}

/** Deletes every queue whose name starts with the broker's prefix (broker may be disconnected). */
export async function deleteQueues(broker: RabbitMqBroker): Promise<void> {
  const amqp = await import("amqplib");
  const connection = await amqp.connect(SERVICES.rabbitmq);
  try {
    const names = await listQueues(`${broker.settings.prefix}.`);
    for (const name of names) {
      const channel = await connection.createChannel();
      await channel.deleteQueue(name);
      await channel.close();
    }
  } finally {
    await connection.close();
  }
}

/** Names of queues starting with `prefix` (through rabbitmqctl; vhost `/`). */
export async function listQueues(prefix: string): Promise<string[]> {
  const { stdout } = await run("rabbitmqctl", ["list_queues", "-q", "--no-table-headers", "name"]);
  return stdout
    .split("\n")
    .map((line) => line.trim())
    .filter((name) => name.startsWith(prefix));
}

/** True when rabbitmqctl can be used (same host as the broker). */
export async function hasRabbitmqctl(): Promise<boolean> {
  try {
    await run("rabbitmqctl", ["status", "-q"], { timeout: 15_000 });
    return true;
  } catch {
    return false;
  }
}

/** Closes, on the server side, every connection whose client-provided name starts with `name`. */
export async function closeConnections(name: string): Promise<number> {
  const { stdout } = await run("rabbitmqctl", [
    "list_connections",
    "-q",
    "--no-table-headers",
    "pid",
    "client_properties",
  ]);
  let closed = 0;
  for (const line of stdout.split("\n")) {
    const [pid, props] = line.split("\t");
    if (!pid || !props?.includes(`{"connection_name","${name}`)) continue;
    await run("rabbitmqctl", ["close_connection", pid, "chicory test: forced close"]);
    closed += 1;
  }
  return closed;
}

/**
 * RabbitMQ-specific behaviour beyond the broker contract: confirms, unreadable bodies handed out
 * with their `problem` (never as readable messages), quorum delivery limits, configuration
 * errors.
 */
import { afterEach, describe, expect, it } from "vitest";
import { Chicory } from "../../../src/app.js";
import type { Consumer, Delivery } from "../../../src/brokers/broker.js";
import type { RabbitMqBroker } from "../../../src/brokers/rabbitmq/index.js";
import { BrokerConnectionError, ConfigurationError, MessageTooLargeError } from "../../../src/errors.js";
import { Worker } from "../../../src/worker/worker.js";
import { eventually } from "../../contract/contract-helpers.js";
import { capturingLogger } from "../../helpers/capturing-logger.js";
import { SERVICES, skipUnless, uniqueName } from "../../helpers/services.js";
import { deleteQueues, testBroker } from "./rabbitmq-test-utils.js";

const skip = await skipUnless("rabbitmq");

async function fetchOne(consumer: Consumer, timeoutMs = 5000): Promise<Delivery> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const [delivery] = await consumer.fetch(1, AbortSignal.timeout(Math.max(1, deadline - Date.now())));
    if (delivery) return delivery;
  }
  throw new Error("no delivery");
}

/** Publishes a raw AMQP message to a RabbitMQ queue, bypassing the broker. */
async function sendRaw(queue: string, content: Buffer): Promise<void> {
  const amqp = await import("amqplib");
  const connection = await amqp.connect(SERVICES.rabbitmq);
  try {
    const channel = await connection.createConfirmChannel();
    channel.sendToQueue(queue, content, { persistent: true });
    await channel.waitForConfirms();
  } finally {
    await connection.close();
  }
}

describe.skipIf(skip)("rabbitmq broker", () => {
  const brokers: RabbitMqBroker[] = [];
  const open = async (options: Parameters<typeof testBroker>[0] = {}) => {
    const broker = testBroker(options);
    brokers.push(broker);
    await broker.connect();
    return broker;
  };

  afterEach(async () => {
    for (const broker of brokers.splice(0)) {
      await broker.disconnect();
      await deleteQueues(broker);
    }
  });

  it("publish resolves after the confirm; the message is then in the queue and fetchable", async () => {
    const broker = await open();
    const queue = uniqueName("q");
    await broker.publish(queue, { id: "t1", body: '{"id":"t1"}' });
    expect(await broker.getQueueSize(queue)).toBe(1);
    const consumer = broker.consumer({ queues: [queue], consumerId: "w1" });
    const delivery = await fetchOne(consumer);
    expect(delivery.body).toBe('{"id":"t1"}');
    await delivery.ack();
    await consumer.close();
  });

  it("hands out empty and non-UTF-8 bodies with their problem (the worker rejects them), never as readable messages", async () => {
    const broker = await open();
    const queue = uniqueName("q");
    const consumer = broker.consumer({ queues: [queue], consumerId: "w1" });
    expect(await consumer.fetch(1, AbortSignal.timeout(50))).toEqual([]); // declares the queues
    const work = `${broker.settings.prefix}.${queue}`;
    await sendRaw(work, Buffer.alloc(0));
    await sendRaw(work, Buffer.from([0xff, 0xfe, 0x00, 0xc3]));
    await broker.publish(queue, { id: "ok", body: '{"id":"ok"}' });
    const deliveries = [await fetchOne(consumer), await fetchOne(consumer), await fetchOne(consumer)];
    expect(deliveries.map((d) => d.problem)).toEqual([
      "empty_body: the message has no body",
      "decode_error: the message body is not valid UTF-8",
      undefined,
    ]);
    expect(deliveries[2]?.body).toBe('{"id":"ok"}');
    // as the worker settles them with its DLQ on: dead-lettered with the reason, the raw bytes kept
    for (const delivery of deliveries) {
      await (delivery.problem === undefined ? delivery.ack() : delivery.deadLetter(delivery.problem));
    }
    const entries = await eventually(async () => {
      const found = await broker.getDlqMessages(queue);
      expect(found).toHaveLength(2);
      return found;
    });
    expect(entries.map((e) => e.error.split(":")[0]).sort()).toEqual(["decode_error", "empty_body"]);
    expect(await broker.getQueueSize(queue)).toBe(0);
    await consumer.close();
  });

  it("quorum queue: exact delivery counts and x-delivery-limit dead-letters a poison message", async () => {
    const broker = await open({ queueType: "quorum", deliveryLimit: 2 });
    const queue = uniqueName("q");
    await broker.publish(queue, { id: "poison", body: '{"id":"poison"}' });
    const consumer = broker.consumer({ queues: [queue], consumerId: "w1" });
    const counts: number[] = [];
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && (await broker.getDlqCount(queue)) === 0) {
      const [delivery] = await consumer.fetch(1, AbortSignal.timeout(300));
      if (!delivery) continue;
      counts.push(delivery.deliveryCount);
      await delivery.release(); // as a crashing worker would, the message comes back
    }
    expect(counts).toEqual([1, 2, 3]);
    const [entry] = await broker.getDlqMessages(queue);
    expect(entry?.body).toBe('{"id":"poison"}');
    expect(entry?.error).toMatch(/delivery_limit/);
    await consumer.close();
  });

  it("a message over the server's max_message_size fails alone with MessageTooLargeError; later ones are refused before they are sent", {
    timeout: 60_000,
  }, async () => {
    const broker = await open();
    const queue = uniqueName("q");
    const small = (n: number) =>
      broker.publish(queue, { id: `s${n}`, body: `{"id":"s${n}"}` }).then(
        () => "ok",
        (error: unknown) => error,
      );
    // over RabbitMQ 3.x's default max_message_size (128 MiB); RabbitMQ closes the channel
    const big = "x".repeat(129 * 1024 * 1024);
    const before = small(0);
    const refused = broker.publish(queue, { id: "big", body: big }).catch((error: unknown) => error);
    const after = small(1);
    const error = await refused;
    expect(error).toBeInstanceOf(MessageTooLargeError);
    expect((error as MessageTooLargeError).limit).toBeLessThan(big.length);
    expect((error as Error).message).toMatch(
      /^message is 135266304 bytes, over the limit of \d+ bytes \(RabbitMQ's max_message_size; keep CHICORY_MAX_MESSAGE_BYTES at most that\)$/,
    );
    // the long message went on a channel of its own: the one it closed carried no other
    expect(await before).toBe("ok");
    expect(await after).toBe("ok");
    // now known: refused before it is sent
    const again = broker.publish(queue, { id: "big2", body: big }).catch((e: unknown) => e);
    const beside = small(2);
    expect(await again).toBeInstanceOf(MessageTooLargeError);
    expect(await beside).toBe("ok");
    expect(await broker.getQueueSize(queue)).toBe(3);
  });

  it("refuses to use a queue declared with other arguments with a ConfigurationError", async () => {
    const classic = await open();
    const queue = uniqueName("q");
    await classic.publish(queue, { id: "a", body: "{}" });
    const quorum = await open({ queueType: "quorum", prefix: classic.settings.prefix });
    await expect(quorum.publish(queue, { id: "b", body: "{}" })).rejects.toThrow(ConfigurationError);
    await expect(quorum.publish(queue, { id: "b", body: "{}" })).rejects.toThrow(/already exists with other arguments/);
    // the broker keeps working for other queues
    await quorum.publish(uniqueName("q"), { id: "c", body: "{}" });
  });

  it("a worker whose queue was declared with other arguments stops, and run() rejects with the ConfigurationError", async () => {
    const classic = await open();
    const queue = uniqueName("q");
    await classic.publish(queue, { id: "a", body: "{}" });
    const quorum = testBroker({ queueType: "quorum", prefix: classic.settings.prefix });
    brokers.push(quorum);
    const app = new Chicory({ broker: quorum, config: { env: {} } });
    const { logger, lines } = capturingLogger();
    const worker = new Worker(app, { queue, logger });
    await expect(worker.run()).rejects.toThrow(/already exists with other arguments/);
    expect(worker.isRunning).toBe(false);
    expect(lines.map((line) => [line.level, line.message])).toContainEqual([
      "error",
      "the broker refused this worker's configuration: stopping",
    ]);
    await app.disconnect();
  });

  it("a virtual host that does not exist is named as the likely cause of the refused connection", async () => {
    const url = new URL(SERVICES.rabbitmq);
    url.pathname = `/${uniqueName("no-such-vhost")}`;
    const broker = testBroker({ url: url.toString() });
    await expect(broker.connect()).rejects.toThrow(/does the URL's virtual host exist/);
    await broker.disconnect();
  });

  it("a queue deleted behind the broker's back is declared again on publish", async () => {
    const broker = await open();
    const queue = uniqueName("q");
    await broker.publish(queue, { id: "a", body: "{}" });
    await deleteQueues(broker);
    await broker.publish(queue, { id: "b", body: '{"id":"b"}' });
    expect(await broker.getQueueSize(queue)).toBe(1);
  });

  it("connect fails with a BrokerConnectionError without the password", async () => {
    const broker = testBroker({ url: "amqp://guest:s3cret-pw@127.0.0.1:1/" });
    brokers.push(broker);
    const error = await broker.connect().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BrokerConnectionError);
    expect(String((error as Error).message)).not.toContain("s3cret-pw");
    expect(broker.displayUrl).not.toContain("s3cret-pw");
    const health = await broker.healthcheck();
    expect(health.connected).toBe(false);
  });

  it("quorum queues refuse priorities; delivery limits need quorum queues", () => {
    expect(() => testBroker({ queueType: "quorum", maxPriority: 5 })).toThrow(ConfigurationError);
    expect(() => testBroker({ deliveryLimit: 3 })).toThrow(ConfigurationError);
    // named as given: the option in code, the variable in the environment
    expect(() => testBroker({ queueType: "quorum", maxPriority: 5 })).toThrow(/^maxPriority: quorum queues/);
    expect(() => testBroker({ queueType: "quorum", env: { CHICORY_BROKER_RABBITMQ_MAX_PRIORITY: "5" } })).toThrow(
      /^CHICORY_BROKER_RABBITMQ_MAX_PRIORITY: quorum queues/,
    );
  });
});

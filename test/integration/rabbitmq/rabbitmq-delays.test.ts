/**
 * Delayed delivery on RabbitMQ: per-level delay queues (no head-of-line blocking, RELIABILITY
 * S4/C14), rounding up (never early), chaining beyond the top level.
 */
import { afterEach, describe, expect, it } from "vitest";
import type { Consumer, Delivery } from "../../../src/brokers/broker.js";
import type { RabbitMqBroker } from "../../../src/brokers/rabbitmq/index.js";
import { skipUnless, uniqueName } from "../../helpers/services.js";
import { deleteQueues, testBroker } from "./rabbitmq-test-utils.js";

const skip = await skipUnless("rabbitmq");

/** Fetches until `count` deliveries arrived; records when each arrived. */
async function collect(consumer: Consumer, count: number, timeoutMs: number) {
  const got: Array<{ delivery: Delivery; at: number }> = [];
  const deadline = Date.now() + timeoutMs;
  while (got.length < count && Date.now() < deadline) {
    const batch = await consumer.fetch(count - got.length, AbortSignal.timeout(Math.max(1, deadline - Date.now())));
    for (const delivery of batch) got.push({ delivery, at: Date.now() });
  }
  return got;
}

describe.skipIf(skip)("rabbitmq delays", () => {
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

  it("a 1 s delay is not held up by an earlier 60 s delay", async () => {
    const broker = await open();
    const queue = uniqueName("q");
    const consumer = broker.consumer({ queues: [queue], consumerId: "w1" });
    await broker.publish(queue, { id: "long", body: '{"id":"long"}', delayMs: 60_000 });
    const start = Date.now();
    await broker.publish(queue, { id: "short", body: '{"id":"short"}', delayMs: 1000 });
    const [first] = await collect(consumer, 1, 30_000);
    expect(first?.delivery.body).toBe('{"id":"short"}');
    const elapsed = (first?.at ?? Number.POSITIVE_INFINITY) - start;
    expect(elapsed).toBeGreaterThanOrEqual(1000 - 50);
    // held up behind the 60 s message it would take a minute
    expect(elapsed).toBeLessThan(30_000);
    await first?.delivery.ack();
    expect(await broker.getQueueSize(queue)).toBe(1); // the 60 s one still waits
    await consumer.close();
  });

  it("rounds a delay up to the next level: never early", async () => {
    const broker = await open({ delayLevels: [1, 2, 4] });
    const queue = uniqueName("q");
    const consumer = broker.consumer({ queues: [queue], consumerId: "w1" });
    const start = Date.now();
    await broker.publish(queue, { id: "a", body: '{"id":"a"}', delayMs: 3000 });
    const [got] = await collect(consumer, 1, 12_000);
    const elapsed = (got?.at ?? Number.POSITIVE_INFINITY) - start;
    expect(elapsed).toBeGreaterThanOrEqual(3000);
    // the 4 s level, not two of them
    expect(elapsed).toBeLessThan(8000);
    await got?.delivery.ack();
    await consumer.close();
  });

  it("chains a delay longer than the top level through the top level (never early)", async () => {
    const broker = await open({ delayLevels: [1, 2] });
    const queue = uniqueName("q");
    const consumer = broker.consumer({ queues: [queue], consumerId: "w1" });
    const start = Date.now();
    await broker.publish(queue, { id: "a", body: '{"id":"a"}', delayMs: 4500 });
    const [got] = await collect(consumer, 1, 15_000);
    const elapsed = (got?.at ?? Number.POSITIVE_INFINITY) - start;
    expect(elapsed).toBeGreaterThanOrEqual(4500);
    expect(elapsed).toBeLessThan(5000 + 4000);
    expect(got?.delivery.body).toBe('{"id":"a"}');
    expect(got?.delivery.deliveryCount).toBe(1);
    await got?.delivery.ack();
    await consumer.close();
  });
});

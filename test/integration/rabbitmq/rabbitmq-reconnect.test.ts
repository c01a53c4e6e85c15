/**
 * Automatic recovery: RabbitMQ closes the broker's connections (as on a node restart or a
 * network drop, forced here with `rabbitmqctl close_connection`, never restarting the
 * server); producers and consumers resume on their own, and settling a delivery of the old
 * channel is a no-op (RabbitMQ redelivers it) instead of a stale delivery tag on a new channel.
 */
import { afterEach, describe, expect, it } from "vitest";
import type { Consumer, Delivery } from "../../../src/brokers/broker.js";
import type { RabbitMqBroker } from "../../../src/brokers/rabbitmq/index.js";
import { BrokerConnectionError } from "../../../src/errors.js";
import { silentLogger } from "../../../src/index.js";
import { skipUnless, uniqueName } from "../../helpers/services.js";
import { closeConnections, deleteQueues, hasRabbitmqctl, testBroker } from "./rabbitmq-test-utils.js";

const skip = (await skipUnless("rabbitmq")) || !(await hasRabbitmqctl());

/** Fetches like a worker: a BrokerConnectionError means "back off and call again". */
async function fetchBodies(consumer: Consumer, bodies: readonly string[], timeoutMs: number) {
  const got = new Map<string, Delivery>();
  let connectionErrors = 0;
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && bodies.some((body) => !got.has(body))) {
    try {
      for (const d of await consumer.fetch(10, AbortSignal.timeout(Math.max(1, deadline - Date.now())))) {
        got.set(d.body, d);
      }
    } catch (error) {
      if (!(error instanceof BrokerConnectionError)) throw error;
      connectionErrors += 1;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  return { got, connectionErrors };
}

async function publishRetrying(broker: RabbitMqBroker, queue: string, body: string, timeoutMs: number) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await broker.publish(queue, { id: body, body });
    } catch (error) {
      if (!(error instanceof BrokerConnectionError) || Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

describe.skipIf(skip)("rabbitmq reconnection", () => {
  const brokers: RabbitMqBroker[] = [];

  afterEach(async () => {
    for (const broker of brokers.splice(0)) {
      await broker.disconnect();
      await deleteQueues(broker);
    }
  });

  it("producer and consumer resume after RabbitMQ closes their connections", async () => {
    const name = uniqueName("chicory-reconnect-");
    const broker = testBroker({ connectionName: name, reconnectDelay: 0.2, maxReconnectDelay: 1 });
    brokers.push(broker);
    await broker.connect();
    const queue = uniqueName("q");
    const warnings: string[] = [];
    const logger = { ...silentLogger, warn: (_: unknown, msg?: string) => void warnings.push(msg ?? "") };
    const consumer = broker.consumer({ queues: [queue], consumerId: "w1", logger });
    await broker.publish(queue, { id: "before", body: "before" });
    const { got: first } = await fetchBodies(consumer, ["before"], 5000);
    const held = first.get("before");
    expect(held?.deliveryCount).toBe(1);

    expect(await closeConnections(name)).toBe(2); // publish and consume connections
    const lostAt = Date.now();
    await held?.ack(); // the old channel is gone: a no-op, RabbitMQ redelivers the message
    // said to the consumer's (the worker's) logger, the job in hand being requeued
    expect(warnings).toContainEqual(expect.stringContaining("the channel that delivered the jobs running here closed"));

    await publishRetrying(broker, queue, "after", 30_000);
    const { got } = await fetchBodies(consumer, ["before", "after"], 30_000);
    expect(Date.now() - lostAt).toBeLessThan(30_000);
    expect(got.get("before")?.deliveryCount).toBe(2);
    for (const delivery of got.values()) await delivery.ack();

    // the new channel is healthy: no stale delivery tag killed it
    await broker.publish(queue, { id: "later", body: "later" });
    const { got: later } = await fetchBodies(consumer, ["later"], 5000);
    await later.get("later")?.ack();
    expect(later.has("later")).toBe(true);
    expect(await broker.getQueueSize(queue)).toBe(0);
    expect((await broker.healthcheck()).connected).toBe(true);
    await consumer.close();
  });

  it("a confirmed ack (at-most-once) resolves on a live channel and rejects once RabbitMQ closed it", async () => {
    const name = uniqueName("chicory-reconnect-");
    const broker = testBroker({ connectionName: name, reconnectDelay: 0.2, maxReconnectDelay: 1 });
    brokers.push(broker);
    await broker.connect();
    const queue = uniqueName("q");
    const consumer = broker.consumer({ queues: [queue], consumerId: "w1" });
    await broker.publish(queue, { id: "a", body: "a" });
    await broker.publish(queue, { id: "b", body: "b" });
    const { got } = await fetchBodies(consumer, ["a", "b"], 5000);
    // Resolves only after RabbitMQ answered a request sent after the ack on the same channel.
    await got.get("a")?.ack({ confirm: true });

    expect(await closeConnections(name)).toBe(2);
    // The ack of "b" cannot be confirmed: the caller must treat "b" as not acknowledged.
    await expect(got.get("b")?.ack({ confirm: true })).rejects.toBeInstanceOf(BrokerConnectionError);
    const { got: again } = await fetchBodies(consumer, ["b"], 20_000);
    expect(again.get("b")?.deliveryCount).toBe(2);
    expect(again.has("a")).toBe(false);
    await again.get("b")?.ack({ confirm: true });
    // "a" was acknowledged for good before the connection was closed: nothing is left (queued or
    // buffered by this consumer).
    expect(await broker.getQueueSize(queue)).toBe(0);
    await consumer.close();
  });

  it("a fetch waiting during the loss returns or throws BrokerConnectionError, never hangs", async () => {
    const name = uniqueName("chicory-reconnect-");
    const broker = testBroker({ connectionName: name, reconnectDelay: 0.2, maxReconnectDelay: 1 });
    brokers.push(broker);
    await broker.connect();
    const queue = uniqueName("q");
    const consumer = broker.consumer({ queues: [queue], consumerId: "w1" });
    expect(await consumer.fetch(1, AbortSignal.timeout(50))).toEqual([]);
    const waiting = consumer.fetch(1, AbortSignal.timeout(20_000)).then(
      (deliveries) => ({ deliveries, error: null }),
      (error: unknown) => ({ deliveries: [], error }),
    );
    await closeConnections(name);
    await broker.publish(queue, { id: "x", body: "x" });
    const outcome = await waiting;
    if (outcome.error) expect(outcome.error).toBeInstanceOf(BrokerConnectionError);
    const early = outcome.deliveries.some((d) => d.body === "x");
    const { got } = early ? { got: new Map<string, Delivery>() } : await fetchBodies(consumer, ["x"], 20_000);
    expect(early || got.has("x")).toBe(true);
    for (const d of [...got.values(), ...outcome.deliveries]) await d.ack();
    await consumer.close();
  });
});

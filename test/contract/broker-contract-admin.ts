/**
 * Broker contract, inspection and administration: counts, purge, unique publish,
 * priorities, stale consumers, health and connection lifecycle.
 */
import { expect, it } from "vitest";
import type { BrokerHarness } from "./broker-contract.js";
import {
  encodeTask,
  eventually,
  expectClosedAfterOvertakenConnects,
  expectNoDelivery,
  expectOpenAfterDisconnectUnderWay,
  fetchN,
  fetchOne,
  publishTasks,
  requireCapability,
} from "./contract-helpers.js";

/** Registers the administration tests. */
export function brokerAdminTests(h: BrokerHarness): void {
  it("getPendingCount counts fetched-unsettled and getQueueSize counts waiting", async () => {
    const broker = h.broker();
    await publishTasks(broker, h.queue(), h.codec, 3);
    await eventually(async () => expect(await broker.getQueueSize(h.queue())).toBe(3));
    expect(await broker.getPendingCount(h.queue())).toBe(0);
    const consumer = h.consumer();
    const got = await fetchN(consumer, 2);
    expect(consumer.inFlight).toBe(2);
    await eventually(async () => {
      expect(await broker.getPendingCount(h.queue())).toBe(2);
      expect(await broker.getQueueSize(h.queue())).toBe(1);
    });
    await got[0]?.ack();
    expect(consumer.inFlight).toBe(1);
    await eventually(async () => expect(await broker.getPendingCount(h.queue())).toBe(1));
    await got[1]?.ack();
  });

  it("getQueueSize counts delayed messages too", async (ctx) => {
    const broker = h.broker();
    requireCapability(ctx.skip, broker, "delayedDelivery");
    const task = encodeTask(h.codec);
    await broker.publish(h.queue(), { id: task.id, body: task.body, delayMs: 60_000 });
    await publishTasks(broker, h.queue(), h.codec, 1);
    expect(await broker.getQueueSize(h.queue())).toBe(2);
  });

  it("getConsumerCount is at least 1 while a consumer is open", async () => {
    const consumer = h.consumer();
    expect(await consumer.fetch(1, AbortSignal.timeout(100))).toEqual([]);
    await eventually(async () => expect(await h.broker().getConsumerCount(h.queue())).toBeGreaterThanOrEqual(1));
  });

  it("purgeQueue deletes waiting (ready and delayed) messages", async () => {
    const broker = h.broker();
    await publishTasks(broker, h.queue(), h.codec, 3);
    let expected = 3;
    if (broker.capabilities.delayedDelivery) {
      const task = encodeTask(h.codec);
      await broker.publish(h.queue(), { id: task.id, body: task.body, delayMs: 500 });
      expected++;
    }
    await eventually(async () => expect(await broker.getQueueSize(h.queue())).toBe(expected));
    expect(await broker.purgeQueue(h.queue())).toBe(expected);
    expect(await broker.getQueueSize(h.queue())).toBe(0);
    await expectNoDelivery(h.consumer(), 800);
    expect(await broker.purgeQueue(h.queue())).toBe(0);
  });

  it("purgeQueue deletes a message given back with release() too (a worker's graceful stop)", async () => {
    const broker = h.broker();
    await publishTasks(broker, h.queue(), h.codec, 1);
    const consumer = h.consumer();
    const given = await fetchOne(consumer);
    await given.release();
    await consumer.close();
    await eventually(async () => expect(await broker.getQueueSize(h.queue())).toBe(1));
    expect(await broker.purgeQueue(h.queue())).toBe(1);
    expect(await broker.getQueueSize(h.queue())).toBe(0);
    await expectNoDelivery(h.consumer(), 300);
  });

  it("unique publish enqueues an id once until it is acknowledged", async (ctx) => {
    const broker = h.broker();
    requireCapability(ctx.skip, broker, "uniqueIds");
    const task = encodeTask(h.codec);
    const message = { id: task.id, body: task.body, unique: true };
    expect(await broker.publish(h.queue(), message)).toEqual({ published: true });
    expect(await broker.publish(h.queue(), message)).toEqual({ published: false });
    expect(await broker.getQueueSize(h.queue())).toBe(1);
    const consumer = h.consumer();
    const delivery = await fetchOne(consumer);
    // still in flight: a second publish is refused
    expect(await broker.publish(h.queue(), message)).toEqual({ published: false });
    await delivery.ack();
    expect(await broker.publish(h.queue(), message)).toEqual({ published: true });
    const again = await fetchOne(consumer);
    expect(again.body).toBe(task.body);
    await again.ack();
    await expectNoDelivery(consumer, 200);
  });

  it("unique publish holds an id per queue: the same id on another queue is another message", async (ctx) => {
    const broker = h.broker();
    requireCapability(ctx.skip, broker, "uniqueIds");
    const task = encodeTask(h.codec);
    const message = { id: task.id, body: task.body, unique: true };
    const other = h.newQueue();
    expect(await broker.publish(h.queue(), message)).toEqual({ published: true });
    expect(await broker.publish(other, message)).toEqual({ published: true });
    expect(await broker.publish(other, message)).toEqual({ published: false });
    expect(await broker.getQueueSize(h.queue())).toBe(1);
    expect(await broker.getQueueSize(other)).toBe(1);
  });

  it("unique publish of a delayed message is idempotent too", async (ctx) => {
    const broker = h.broker();
    requireCapability(ctx.skip, broker, "uniqueIds");
    requireCapability(ctx.skip, broker, "delayedDelivery");
    const task = encodeTask(h.codec);
    const message = { id: task.id, body: task.body, unique: true, delayMs: 60_000 };
    expect(await broker.publish(h.queue(), message)).toEqual({ published: true });
    expect(await broker.publish(h.queue(), { ...message, delayMs: 0 })).toEqual({ published: false });
    expect(await broker.getQueueSize(h.queue())).toBe(1);
  });

  it("delivers higher priorities first", async (ctx) => {
    const broker = h.broker();
    requireCapability(ctx.skip, broker, "priorities");
    const publish = async (priority: number) => {
      const task = encodeTask(h.codec, { priority });
      await broker.publish(h.queue(), { id: task.id, body: task.body, priority });
      return task.body;
    };
    const low = await publish(1);
    const high = await publish(9);
    const mid = await publish(5);
    await eventually(async () => expect(await broker.getQueueSize(h.queue())).toBe(3));
    const got = await fetchN(h.consumer(), 3, 5000, 1);
    expect(got.map((d) => d.body)).toEqual([high, mid, low]);
    for (const d of got) await d.ack();
  });

  it("cleanupStaleClients refuses a staleSeconds that is not a number of seconds >= 0", async () => {
    const broker = h.broker();
    for (const bad of [Number.NaN, -1, Number.POSITIVE_INFINITY]) {
      await expect(broker.cleanupStaleClients(h.queue(), bad)).rejects.toThrow(
        /cleanupStaleClients: staleSeconds must be a number of seconds >= 0/,
      );
    }
  });

  it("cleanupStaleClients never removes a consumer with pending messages", async () => {
    const broker = h.broker();
    await publishTasks(broker, h.queue(), h.codec, 1);
    const busy = h.consumer();
    const held = await fetchOne(busy);
    const idle = h.consumer();
    expect(await idle.fetch(1, AbortSignal.timeout(100))).toEqual([]);
    const removed = await broker.cleanupStaleClients(h.queue(), 0);
    expect(typeof removed).toBe("number");
    expect(removed).toBeGreaterThanOrEqual(0);
    expect(await broker.getPendingCount(h.queue())).toBe(1);
    await held.ack();
    await eventually(async () => expect(await broker.getPendingCount(h.queue())).toBe(0));
    // a consumer that was cleaned up keeps working
    const [task] = await publishTasks(broker, h.queue(), h.codec, 1);
    const next = await fetchOne(idle);
    expect(next.body).toBe(task?.body);
    await next.ack();
    await expectNoDelivery(busy, 200);
  });

  it("healthcheck reports connected", async () => {
    const health = await h.broker().healthcheck();
    expect(health.connected).toBe(true);
    expect(health.error).toBeUndefined();
    if (health.latencyMs !== undefined) expect(health.latencyMs).toBeGreaterThanOrEqual(0);
  });

  it("connect and disconnect are idempotent", async () => {
    const broker = h.broker();
    await broker.connect();
    const [task] = await publishTasks(broker, h.queue(), h.codec, 1);
    const delivery = await fetchOne(h.consumer());
    expect(delivery.body).toBe(task?.body);
    await delivery.ack();
    await broker.disconnect();
    await broker.disconnect();
    const health = await broker.healthcheck();
    expect(typeof health.connected).toBe("boolean");
  });

  it("a connect() called while a disconnect() is under way opens once that is done: the broker then publishes and delivers", async () => {
    const broker = h.broker();
    const open = h.consumer(); // (a consumer gives the disconnect something to close first)
    await expectOpenAfterDisconnectUnderWay(broker);
    await open.close();
    const [task] = await publishTasks(broker, h.queue(), h.codec, 1);
    const delivery = await fetchOne(h.consumer());
    expect(delivery.body).toBe(task?.body);
    await delivery.ack();
  });

  it("a disconnect() after a connect() still waiting or opening leaves the broker closed (the connect may reject)", async () => {
    const broker = h.broker();
    await expectClosedAfterOvertakenConnects(broker);
  });

  it("displayUrl never shows a password", () => {
    const url = h.broker().displayUrl;
    expect(typeof url).toBe("string");
    expect(url).not.toMatch(/:[^:@/*]+@/);
  });
}

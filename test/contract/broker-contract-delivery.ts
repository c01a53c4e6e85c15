/**
 * Broker contract, data plane: publish, fetch, settle, leases and redelivery.
 */
import { expect, it } from "vitest";
import type { BrokerHarness } from "./broker-contract.js";
import {
  encodeTask,
  eventually,
  expectNoDelivery,
  fetchN,
  fetchOne,
  publishTasks,
  requireCapability,
  TRICKY_STRINGS,
} from "./contract-helpers.js";

/** Registers the data-plane tests. */
export function brokerDeliveryTests(h: BrokerHarness): void {
  it("publish then fetch returns the body with deliveryCount 1 and the queue", async () => {
    const broker = h.broker();
    const consumer = h.consumer();
    const task = encodeTask(h.codec);
    expect(await broker.publish(h.queue(), { id: task.id, body: task.body })).toEqual({ published: true });
    const delivery = await fetchOne(consumer);
    expect(delivery.body).toBe(task.body);
    expect(delivery.deliveryCount).toBe(1);
    expect(delivery.queue).toBe(h.queue());
    expect(typeof delivery.deliveryId).toBe("string");
    expect(delivery.deliveryId.length).toBeGreaterThan(0);
    expect(consumer.inFlight).toBe(1);
    await delivery.ack();
    expect(consumer.inFlight).toBe(0);
  });

  it("fetch(max) never returns more than max", async () => {
    const consumer = h.consumer();
    await publishTasks(h.broker(), h.queue(), h.codec, 5);
    const seen: number[] = [];
    let total = 0;
    const deadline = Date.now() + 5000;
    while (total < 5 && Date.now() < deadline) {
      const batch = await consumer.fetch(2, AbortSignal.timeout(Math.max(1, deadline - Date.now())));
      seen.push(batch.length);
      total += batch.length;
      for (const d of batch) await d.ack();
    }
    expect(total).toBe(5);
    for (const size of seen) expect(size).toBeLessThanOrEqual(2);
  });

  it("fetch on an empty queue returns [] when the signal aborts, without throwing", async () => {
    const consumer = h.consumer();
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), 100);
    const started = Date.now();
    try {
      expect(await consumer.fetch(10, controller.signal)).toEqual([]);
    } finally {
      clearTimeout(timer);
    }
    // generous bound: only checks that the abort is honoured, not how fast
    expect(Date.now() - started).toBeLessThan(5000);
    const aborted = AbortSignal.abort();
    expect(await consumer.fetch(10, aborted)).toEqual([]);
  });

  it("delivers messages published before any consumer existed", async () => {
    const tasks = await publishTasks(h.broker(), h.queue(), h.codec, 3);
    const consumer = h.consumer();
    const got = await fetchN(consumer, 3);
    expect(got.map((d) => d.body).sort()).toEqual(tasks.map((t) => t.body).sort());
    for (const d of got) await d.ack();
  });

  it("a consumer of several queues gets messages from all of them", async () => {
    const broker = h.broker();
    const other = h.newQueue();
    const consumer = h.consumer([h.queue(), other]);
    const [a] = await publishTasks(broker, h.queue(), h.codec, 1);
    const [b] = await publishTasks(broker, other, h.codec, 1);
    const got = await fetchN(consumer, 2);
    const byBody = new Map(got.map((d) => [d.body, d.queue]));
    expect(byBody.get(a?.body ?? "")).toBe(h.queue());
    expect(byBody.get(b?.body ?? "")).toBe(other);
    for (const d of got) await d.ack();
  });

  it("keeps FIFO order within one queue for one consumer", async () => {
    const tasks = await publishTasks(h.broker(), h.queue(), h.codec, 10);
    const got = await fetchN(h.consumer(), 10, 5000, 3);
    expect(got.map((d) => d.body)).toEqual(tasks.map((t) => t.body));
    for (const d of got) await d.ack();
  });

  it("ack removes the message for good", async () => {
    const broker = h.broker();
    await publishTasks(broker, h.queue(), h.codec, 1);
    const first = h.consumer();
    const delivery = await fetchOne(first);
    await delivery.ack();
    expect(first.inFlight).toBe(0);
    await eventually(async () => {
      expect(await broker.getQueueSize(h.queue())).toBe(0);
      expect(await broker.getPendingCount(h.queue())).toBe(0);
    });
    await first.close();
    await expectNoDelivery(h.consumer(), h.claimMinIdleMs * 2);
  });

  it("retry(body, 0) replaces the message on the same queue", async () => {
    const broker = h.broker();
    const [task] = await publishTasks(broker, h.queue(), h.codec, 1);
    const consumer = h.consumer();
    const delivery = await fetchOne(consumer);
    const next = h.codec.encode({ ...(task?.message ?? encodeTask(h.codec).message), retries: 1, lastError: "e" });
    await delivery.retry(next, 0);
    expect(consumer.inFlight).toBe(0);
    const again = await fetchOne(consumer);
    expect(again.body).toBe(next);
    expect(again.queue).toBe(h.queue());
    // a retry is a new message, not a redelivery (poison detection counts deliveries)
    expect(again.deliveryCount).toBe(1);
    await again.ack();
    await expectNoDelivery(consumer, 200);
  });

  it("retry(body, delayMs) is not visible before delayMs and is after", async (ctx) => {
    const broker = h.broker();
    requireCapability(ctx.skip, broker, "delayedDelivery");
    await publishTasks(broker, h.queue(), h.codec, 1);
    const consumer = h.consumer();
    const delivery = await fetchOne(consumer);
    const next = encodeTask(h.codec, { retries: 1 });
    const delayMs = 1000;
    const retriedAt = Date.now();
    await delivery.retry(next.body, delayMs);
    await eventually(async () => {
      expect(await broker.getQueueSize(h.queue())).toBe(1);
      expect(await broker.getPendingCount(h.queue())).toBe(0);
    }, 400);
    await expectNoDelivery(consumer, Math.max(0, retriedAt + delayMs / 2 - Date.now()));
    const again = await fetchOne(consumer, delayMs + 5000);
    expect(Date.now() - retriedAt).toBeGreaterThanOrEqual(delayMs - 100);
    expect(again.body).toBe(next.body);
    await again.ack();
  });

  it("publish with delayMs is not visible early and is visible after", async (ctx) => {
    const broker = h.broker();
    requireCapability(ctx.skip, broker, "delayedDelivery");
    const consumer = h.consumer();
    const task = encodeTask(h.codec);
    const delayMs = 1000;
    const publishedAt = Date.now();
    await broker.publish(h.queue(), { id: task.id, body: task.body, delayMs });
    expect(await broker.getQueueSize(h.queue())).toBe(1);
    await expectNoDelivery(consumer, Math.max(0, publishedAt + delayMs / 2 - Date.now()));
    const delivery = await fetchOne(consumer, delayMs + 5000);
    expect(Date.now() - publishedAt).toBeGreaterThanOrEqual(delayMs - 100);
    expect(delivery.body).toBe(task.body);
    expect(delivery.deliveryCount).toBe(1);
    await delivery.ack();
  });

  it("two delayed publishes of one task id (not unique) are both delivered", async (ctx) => {
    const broker = h.broker();
    requireCapability(ctx.skip, broker, "delayedDelivery");
    const first = encodeTask(h.codec);
    const second = encodeTask(h.codec, { id: first.id, retries: 1 });
    await broker.publish(h.queue(), { id: first.id, body: first.body, delayMs: 20 });
    await broker.publish(h.queue(), { id: second.id, body: second.body, delayMs: 20 });
    expect(await broker.getQueueSize(h.queue())).toBe(2);
    const consumer = h.consumer();
    const got = await fetchN(consumer, 2);
    expect(got.map((d) => d.body).sort()).toEqual([first.body, second.body].sort());
    for (const d of got) await d.ack();
    await expectNoDelivery(consumer, 100);
  });

  it("a delayed retry and a delayed publish of the same task id are both delivered", async (ctx) => {
    const broker = h.broker();
    requireCapability(ctx.skip, broker, "delayedDelivery");
    const [task] = await publishTasks(broker, h.queue(), h.codec, 1);
    if (!task) throw new Error("no task");
    const consumer = h.consumer();
    const running = await fetchOne(consumer);
    const other = encodeTask(h.codec, { id: task.id, args: ["other"] });
    await broker.publish(h.queue(), { id: other.id, body: other.body, delayMs: 20 });
    const next = encodeTask(h.codec, { id: task.id, retries: 1 });
    await running.retry(next.body, 20);
    const got = await fetchN(consumer, 2);
    expect(got.map((d) => d.body).sort()).toEqual([other.body, next.body].sort());
    for (const d of got) await d.ack();
  });

  it("release() makes the message available to another consumer at once", async () => {
    const [task] = await publishTasks(h.broker(), h.queue(), h.codec, 1);
    const holder = h.consumer();
    const delivery = await fetchOne(holder);
    await delivery.release();
    expect(holder.inFlight).toBe(0);
    // the holder stays open (its leases would be renewed), so only release can hand it over
    const other = await fetchOne(h.consumer(), 5000);
    expect(other.body).toBe(task?.body);
    expect(other.deliveryCount).toBeGreaterThanOrEqual(1);
    await other.ack();
  });

  it("release({ countDelivery: true }) hands the message over at once and counts the delivery", async () => {
    const [task] = await publishTasks(h.broker(), h.queue(), h.codec, 1);
    const delivery = await fetchOne(h.consumer());
    expect(delivery.deliveryCount).toBe(1);
    await delivery.release({ countDelivery: true });
    const other = await fetchOne(h.consumer(), 5000);
    expect(other.body).toBe(task?.body);
    expect(other.deliveryCount).toBe(2);
    await other.ack();
  });

  it("messageKey, where the broker gives one, is the same when a message is handed out again and differs for another publish of its body and for its retry", async () => {
    const broker = h.broker();
    const task = encodeTask(h.codec);
    // the same task id and body twice (not unique): two messages
    await broker.publish(h.queue(), { id: task.id, body: task.body });
    await broker.publish(h.queue(), { id: task.id, body: task.body });
    const consumer = h.consumer();
    const [first, second] = await fetchN(consumer, 2);
    if (!first || !second) throw new Error("two deliveries expected");
    if (first.messageKey === undefined) {
      expect(second.messageKey).toBeUndefined();
      await Promise.all([first.ack(), second.ack()]);
      return;
    }
    expect(second.messageKey).not.toBe(first.messageKey);
    await first.release({ countDelivery: true });
    const again = await fetchOne(consumer);
    expect(again.deliveryCount).toBe(2);
    expect(again.messageKey).toBe(first.messageKey);
    await again.retry(h.codec.encode({ ...task.message, retries: 1 }), 0);
    const retried = await fetchOne(consumer);
    expect(retried.messageKey).not.toBe(first.messageKey);
    expect(retried.messageKey).not.toBe(second.messageKey);
    await Promise.all([retried.ack(), second.ack()]);
  });

  it("redelivers an unsettled delivery of a closed consumer after claimMinIdle", async () => {
    const [task] = await publishTasks(h.broker(), h.queue(), h.codec, 1);
    const dead = h.consumer();
    await fetchOne(dead);
    await dead.close();
    const redelivered = await fetchOne(h.consumer(), h.claimMinIdleMs * 5 + 3000);
    expect(redelivered.body).toBe(task?.body);
    expect(redelivered.deliveryCount).toBe(2);
    await redelivered.ack();
    await eventually(async () => expect(await h.broker().getPendingCount(h.queue())).toBe(0));
  });

  it("holdsLease() is true while the consumer holds the message, false once another took it over", async (ctx) => {
    await publishTasks(h.broker(), h.queue(), h.codec, 1);
    const holder = h.consumer();
    const held = await fetchOne(holder);
    if (held.holdsLease === undefined) {
      await held.ack();
      ctx.skip(); // a broker without leases
      return;
    }
    expect(await held.holdsLease()).toBe(true);
    await holder.close(); // no more lease renewal
    const other = await fetchOne(h.consumer(), h.claimMinIdleMs * 5 + 3000);
    expect(await other.holdsLease?.()).toBe(true);
    expect(await held.holdsLease()).toBe(false);
    await other.ack();
  });

  it("does not redeliver an unsettled delivery of a live consumer (lease renewal)", async () => {
    await publishTasks(h.broker(), h.queue(), h.codec, 1);
    const live = h.consumer();
    const delivery = await fetchOne(live);
    await expectNoDelivery(h.consumer(), h.claimMinIdleMs * 3);
    expect(await h.broker().getPendingCount(h.queue())).toBe(1);
    await delivery.ack();
  });

  it("settling twice is a no-op", async () => {
    const broker = h.broker();
    const [task] = await publishTasks(broker, h.queue(), h.codec, 1);
    const consumer = h.consumer();
    const delivery = await fetchOne(consumer);
    await delivery.ack();
    await delivery.ack();
    await delivery.deadLetter("late");
    await delivery.retry(task?.body ?? "", 0);
    await delivery.release();
    expect(consumer.inFlight).toBe(0);
    await eventually(async () => {
      expect(await broker.getQueueSize(h.queue())).toBe(0);
      expect(await broker.getPendingCount(h.queue())).toBe(0);
      expect(await broker.getDlqCount(h.queue())).toBe(0);
    });
    await expectNoDelivery(consumer, 200);
  });

  it("round-trips bodies with unicode, 4-byte emoji, quotes and NUL characters exactly", async () => {
    const broker = h.broker();
    const bodies = [
      encodeTask(h.codec, { args: [...TRICKY_STRINGS] }).body,
      ...TRICKY_STRINGS, // raw bodies: brokers treat bodies as opaque strings
    ];
    for (const body of bodies) await broker.publish(h.queue(), { id: encodeTask(h.codec).id, body });
    const got = await fetchN(h.consumer(), bodies.length);
    expect(got.map((d) => d.body).sort()).toEqual([...bodies].sort());
    for (const d of got) await d.ack();
  });

  it("round-trips a 512 KiB body", async () => {
    const big = `${"é🎉x".repeat(74_000)}${"a".repeat(6000)}`;
    const task = encodeTask(h.codec, { args: [big] });
    expect(Buffer.byteLength(task.body)).toBeGreaterThan(511 * 1024);
    expect(Buffer.byteLength(task.body)).toBeLessThanOrEqual(512 * 1024);
    await h.broker().publish(h.queue(), { id: task.id, body: task.body });
    const delivery = await fetchOne(h.consumer());
    expect(delivery.body.length).toBe(task.body.length);
    expect(delivery.body === task.body).toBe(true);
    await delivery.ack();
  });
}

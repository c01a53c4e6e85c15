/**
 * Broker contract, dead letters: deadLetter, getDlqMessages, replay, delete, purge.
 */
import { expect, it } from "vitest";
import type { Broker, DlqMessage } from "../../src/brokers/broker.js";
import { ValidationError } from "../../src/errors.js";
import type { BrokerHarness } from "./broker-contract.js";
import {
  type EncodedTask,
  encodeTask,
  eventually,
  expectNoDelivery,
  fetchN,
  fetchOne,
  requireCapability,
} from "./contract-helpers.js";

/** Publishes `task` on `queue` (default: the test's), fetches it and dead-letters it with `error`; returns the DLQ entry. */
async function deadLettered(
  h: BrokerHarness,
  task: Pick<EncodedTask, "id" | "body">,
  error: string,
  queue = h.queue(),
): Promise<DlqMessage> {
  const broker = h.broker();
  await broker.publish(queue, { id: task.id, body: task.body });
  const consumer = h.consumer([queue]);
  const delivery = await fetchOne(consumer);
  expect(delivery.body).toBe(task.body);
  await delivery.deadLetter(error);
  expect(consumer.inFlight).toBe(0);
  await consumer.close();
  return findEntry(broker, queue, task.body);
}

async function findEntry(broker: Broker, queue: string, body: string): Promise<DlqMessage> {
  return eventually(async () => {
    const entry = (await broker.getDlqMessages(queue, 100)).find((m) => m.body === body);
    if (!entry) throw new Error("DLQ entry not found");
    return entry;
  });
}

/** Registers the dead-letter tests. */
export function brokerDlqTests(h: BrokerHarness): void {
  it("deadLetter moves the message to the DLQ with its details", async () => {
    const broker = h.broker();
    const task = encodeTask(h.codec, { retries: 2, lastError: "boom" });
    const before = Date.now();
    const entry = await deadLettered(h, task, "failed: boom 💥");
    const after = Date.now();
    expect(await broker.getDlqCount(h.queue())).toBe(1);
    expect(await broker.getQueueSize(h.queue())).toBe(0);
    expect(await broker.getPendingCount(h.queue())).toBe(0);
    expect(typeof entry.messageId).toBe("string");
    expect(entry.messageId.length).toBeGreaterThan(0);
    expect(entry.body).toBe(task.body);
    expect(entry.error).toBe("failed: boom 💥");
    expect(entry.failedAt).toBeInstanceOf(Date);
    // broker clocks may differ a little from ours
    expect(entry.failedAt.getTime()).toBeGreaterThanOrEqual(before - 5000);
    expect(entry.failedAt.getTime()).toBeLessThanOrEqual(after + 5000);
    expect(entry.retryCount).toBe(2);
    expect(entry.originalMessage).toMatchObject({ id: task.id, name: task.message.name, retries: 2 });
    await expectNoDelivery(h.consumer(), 200);
  });

  it("getDlqMessages shows a body that is not a message with originalMessage null", async () => {
    const raw = `not a message \u0000 ${encodeTask(h.codec).id}`;
    const entry = await deadLettered(h, { id: encodeTask(h.codec).id, body: raw }, "decode_error");
    expect(entry.body).toBe(raw);
    expect(entry.originalMessage).toBeNull();
    expect(entry.retryCount).toBe(0);
  });

  it("replayFromDlq puts the message back once, resetting retries", async () => {
    const broker = h.broker();
    const task = encodeTask(h.codec, { retries: 3, lastError: "boom", firstFailureAt: new Date().toISOString() });
    const entry = await deadLettered(h, task, "exhausted");
    expect(await broker.replayFromDlq(entry.messageId, h.queue(), true)).toBe(true);
    expect(await broker.replayFromDlq(entry.messageId, h.queue(), true)).toBe(false);
    expect(await broker.getDlqCount(h.queue())).toBe(0);
    const consumer = h.consumer();
    const delivery = await fetchOne(consumer);
    const decoded = h.codec.decode(delivery.body);
    if (!decoded.ok) throw new Error(`replayed body does not decode: ${decoded.error}`);
    expect(decoded.message).toEqual({ ...task.message, retries: 0, eta: null, firstFailureAt: null, lastError: null });
    expect(delivery.queue).toBe(h.queue());
    await delivery.ack();
    await expectNoDelivery(consumer, 200);
  });

  it("replayFromDlq without resetRetries keeps the retry counter", async () => {
    const broker = h.broker();
    const task = encodeTask(h.codec, { retries: 4 });
    const entry = await deadLettered(h, task, "exhausted");
    expect(await broker.replayFromDlq(entry.messageId, h.queue(), false)).toBe(true);
    const delivery = await fetchOne(h.consumer());
    const decoded = h.codec.decode(delivery.body);
    expect(decoded.ok && decoded.message).toEqual(task.message);
    await delivery.ack();
  });

  it("two concurrent replays of the same entry enqueue exactly one message", async () => {
    const broker = h.broker();
    const task = encodeTask(h.codec, { retries: 1 });
    const entry = await deadLettered(h, task, "exhausted");
    const results = await Promise.all([
      broker.replayFromDlq(entry.messageId, h.queue(), true),
      broker.replayFromDlq(entry.messageId, h.queue(), true),
    ]);
    expect(results.filter(Boolean)).toHaveLength(1);
    await eventually(async () => expect(await broker.getQueueSize(h.queue())).toBe(1));
    const consumer = h.consumer();
    const got = await fetchN(consumer, 1);
    await expectNoDelivery(consumer, 300);
    for (const d of got) await d.ack();
    expect(await broker.getDlqCount(h.queue())).toBe(0);
  });

  it("a replay while a unique message of the same task id is live is refused; the replayed copy holds the id", async (ctx) => {
    const broker = h.broker();
    requireCapability(ctx.skip, broker, "uniqueIds");
    const task = encodeTask(h.codec);
    const entry = await deadLettered(h, task, "exhausted");
    const unique = { id: task.id, body: task.body, unique: true };
    expect(await broker.publish(h.queue(), unique)).toEqual({ published: true });
    await expect(broker.replayFromDlq(entry.messageId, h.queue())).rejects.toThrow(
      /already queued, delayed or running.*stays in the DLQ/,
    );
    expect(await broker.getDlqCount(h.queue())).toBe(1);
    const consumer = h.consumer();
    await (await fetchOne(consumer)).ack();
    expect(await broker.replayFromDlq(entry.messageId, h.queue())).toBe(true);
    expect(await broker.publish(h.queue(), unique)).toEqual({ published: false });
    await (await fetchOne(consumer)).ack();
    await expectNoDelivery(consumer, 200);
    expect(await broker.getDlqCount(h.queue())).toBe(0);
  });

  it("replaying an entry that is not a valid message fails and leaves it in the DLQ", async () => {
    const broker = h.broker();
    const raw = "{not json";
    const entry = await deadLettered(h, { id: encodeTask(h.codec).id, body: raw }, "decode_error");
    await expect(broker.replayFromDlq(entry.messageId, h.queue(), true)).rejects.toThrow();
    expect(await broker.getDlqCount(h.queue())).toBe(1);
    expect(await broker.getQueueSize(h.queue())).toBe(0);
  });

  it("deleteFromDlq and purgeDlq remove entries", async () => {
    const broker = h.broker();
    const first = await deadLettered(h, encodeTask(h.codec), "one");
    await deadLettered(h, encodeTask(h.codec), "two");
    await deadLettered(h, encodeTask(h.codec), "three");
    expect(await broker.getDlqCount(h.queue())).toBe(3);
    expect(await broker.deleteFromDlq(first.messageId, h.queue())).toBe(true);
    expect(await broker.deleteFromDlq(first.messageId, h.queue())).toBe(false);
    expect(await broker.getDlqCount(h.queue())).toBe(2);
    expect(await broker.replayFromDlq(first.messageId, h.queue())).toBe(false);
    const left = await broker.getDlqMessages(h.queue(), 10);
    expect(left.map((m) => m.error).sort()).toEqual(["three", "two"]);
    expect((await broker.getDlqMessages(h.queue(), 1)).length).toBe(1);
    expect(await broker.purgeDlq(h.queue())).toBe(2);
    expect(await broker.getDlqCount(h.queue())).toBe(0);
    expect(await broker.getDlqMessages(h.queue())).toEqual([]);
    expect(await broker.purgeDlq(h.queue())).toBe(0);
  });

  it("getDlqMessages refuses a count that is not a whole number >= 0", async () => {
    const broker = h.broker();
    for (const count of [1.5, -1, Number.NaN]) {
      await expect(broker.getDlqMessages(h.queue(), count), String(count)).rejects.toBeInstanceOf(ValidationError);
    }
    expect(await broker.getDlqMessages(h.queue(), 0)).toEqual([]);
  });

  it("getDlqMessages returns the oldest entries first and keeps tricky bodies exact", async () => {
    const broker = h.broker();
    const first = encodeTask(h.codec, { args: ['🎉 \u0000 "q" é'] });
    const second = encodeTask(h.codec);
    await deadLettered(h, first, "first");
    await deadLettered(h, second, "second");
    const entries = await broker.getDlqMessages(h.queue(), 100);
    expect(entries.map((m) => m.body)).toEqual([first.body, second.body]);
  });

  it("getDlqMessagesAfter pages past an entry, also one no longer there, within its queue", async (ctx) => {
    const broker = h.broker();
    if (!h.target.listsDlqAfter) {
      console.info(`skipped: broker "${broker.kind}" does not list a DLQ past an id`);
      ctx.skip();
      return;
    }
    if (!broker.getDlqMessagesAfter) throw new Error(`broker "${broker.kind}" lost getDlqMessagesAfter`);
    const other = h.newQueue();
    const errors = ["a", "b", "c", "d"];
    for (const error of errors) {
      await deadLettered(h, encodeTask(h.codec), error);
      // another queue's dead letters in between (one table or one sequence on some brokers)
      await deadLettered(h, encodeTask(h.codec), `other ${error}`, other);
    }
    const all = await broker.getDlqMessages(h.queue(), 100);
    expect(all.map((m) => m.error)).toEqual(errors);
    const [a, b, , d] = all.map((m) => m.messageId) as [string, string, string, string];
    const page = await broker.getDlqMessagesAfter(a, h.queue(), 2);
    expect(page.map((m) => m.error)).toEqual(["b", "c"]);
    expect(page[0]).toEqual(all[1]);
    // past an entry since deleted (or replayed): the ones after it
    expect(await broker.deleteFromDlq(b, h.queue())).toBe(true);
    expect((await broker.getDlqMessagesAfter(b, h.queue(), 10)).map((m) => m.error)).toEqual(["c", "d"]);
    expect(await broker.getDlqMessagesAfter(d, h.queue(), 10)).toEqual([]);
    expect(await broker.getDlqMessagesAfter(a, h.queue(), 0)).toEqual([]);
    // an entry dead-lettered later comes after the last one
    await deadLettered(h, encodeTask(h.codec), "e");
    expect((await broker.getDlqMessagesAfter(d, h.queue(), 10)).map((m) => m.error)).toEqual(["e"]);
    await expect(broker.getDlqMessagesAfter("not an id", h.queue(), 10)).rejects.toBeInstanceOf(ValidationError);
  });
}

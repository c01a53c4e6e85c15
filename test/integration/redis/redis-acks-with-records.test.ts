/**
 * Redis broker + Redis backend on one server: a delivery's terminal record and its ack are one
 * script call (`ack-with-records.lua`), written before the ack, atomic, and fenced like an ack;
 * so are a DEAD_LETTERED record and the DLQ move (`dead-letter.lua`), and an acknowledged
 * (`at_most_once`) message's dead letter and its record (`write-dead-letter.lua`).
 */
import { describe, expect, it } from "vitest";
import type { TaskRecord } from "../../../src/backends/backend.js";
import { MemoryBackend } from "../../../src/backends/memory.js";
import { RedisBackend } from "../../../src/backends/redis/index.js";
import type { Delivery } from "../../../src/brokers/broker.js";
import { RedisBroker } from "../../../src/brokers/redis/index.js";
import { MessageCodec } from "../../../src/core/message.js";
import { Chicory, Worker } from "../../../src/index.js";
import type { RedisRecordWriter } from "../../../src/redis/redis-record-writer.js";
import { encodeTask, eventually, fetchN, fetchOne, successRecord as success } from "../../contract/contract-helpers.js";
import { useCleanups } from "../../helpers/cleanups.js";
import { deferred } from "../../helpers/deferred.js";
import { SERVICES, skipUnless } from "../../helpers/services.js";
import { openBrokerSandbox } from "./redis-broker-sandbox.js";
import {
  deletePrefix,
  dropConnection,
  monitorCommands,
  otherDatabase,
  rawRedis,
  settleByHand,
  testPrefix,
} from "./redis-test-keys.js";

const skip = await skipUnless("redis");
const codec = new MessageCodec();

describe.skipIf(skip)("redis broker: acks that carry the backend's records", () => {
  const cleanups = useCleanups();

  async function setup() {
    const sandbox = await openBrokerSandbox({ claimMinIdleMs: 500 }, codec, cleanups);
    const { prefix, broker, queue } = sandbox;
    const backend = new RedisBackend({ url: SERVICES.redis, keyPrefix: prefix, env: {} });
    await backend.connect();
    cleanups.push(() => backend.disconnect());
    const publish = async () => {
      const task = encodeTask(codec);
      await broker.publish(queue, { id: task.id, body: task.body });
      return task.id;
    };
    return { ...sandbox, backend, publish };
  }

  /**
   * Another broker of the sandbox whose attached record writer fails inside the script (an
   * invalid expire time, as an OOM would), and the key it would have written.
   */
  async function brokerWithFailingRecords(s: Awaited<ReturnType<typeof setup>>) {
    const key = s.backend.resultKey("broken");
    const failing: RedisRecordWriter = {
      sharesServerWith: () => true,
      encodeRecord: (record) => JSON.stringify(record),
      storeRecordInPieces: async () => false,
      storeResultsCall: (records) => ({
        keys: [key],
        args: [-1, s.backend.doneChannel, 0, 2048, JSON.stringify(records[0])],
      }),
      recordsWritten: () => undefined,
      storeRecords: async () => undefined,
    };
    const broker = await s.newBroker();
    expect(broker.attachResults(failing as unknown as RedisBackend)).toBe(true);
    return { broker, key };
  }

  it("attaches a Redis backend on the same server and database only", async () => {
    const s = await setup();
    expect(s.broker.attachResults(s.backend)).toBe(true);
    const elsewhere = new RedisBackend({ url: otherDatabase(SERVICES.redis), keyPrefix: s.prefix, env: {} });
    await elsewhere.connect();
    try {
      expect(s.broker.attachResults(elsewhere)).toBe(false);
    } finally {
      await elsewhere.disconnect();
    }
    expect(s.broker.attachResults(new MemoryBackend())).toBe(false);
    // Not attached: deliveries refuse to carry a record rather than drop it.
    await s.publish();
    const d = await fetchOne(s.consumer());
    await expect(d.ackWithRecord?.(success("x", 1))).rejects.toThrow(/no result backend attached/);
    await d.ack();
    expect(await s.raw.xlen(s.stream)).toBe(0);
  });

  it("an ack of an entry the group lost (deleted and recreated meanwhile) deletes it and writes its record", async () => {
    const s = await setup();
    expect(s.broker.attachResults(s.backend)).toBe(true);
    const id = await s.publish();
    const d = await fetchOne(s.consumer());
    // An operator deletes the group while the job runs; a worker recreates it (at id 0).
    await s.raw.xgroup("DESTROY", s.stream, s.group);
    await s.raw.xgroup("CREATE", s.stream, s.group, "0");
    await d.ackWithRecord?.(success(id, "done"));
    expect(JSON.parse((await s.raw.get(s.backend.resultKey(id))) ?? "null")).toMatchObject({ state: "SUCCESS" });
    expect(await s.raw.xlen(s.stream)).toBe(0); // not run a second time by the new group
    // and with no group at all
    const other = await s.publish();
    const e = await fetchOne(s.consumer());
    await s.raw.xgroup("DESTROY", s.stream, s.group);
    await e.ackWithRecord?.(success(other, "done"));
    expect(JSON.parse((await s.raw.get(s.backend.resultKey(other))) ?? "null")).toMatchObject({ state: "SUCCESS" });
    expect(await s.raw.xlen(s.stream)).toBe(0);
  });

  it("an ack whose entry is gone from the stream (lost in a restart without persistence) stores its record unless a final one is there", async () => {
    const s = await setup();
    expect(s.broker.attachResults(s.backend)).toBe(true);
    const lost = await s.publish();
    const takenOver = await s.publish();
    const [a, b] = await fetchN(s.consumer(), 2);
    // Both entries leave the stream under the worker: one lost with the data, the other settled
    // by a worker that took it over and stored its own outcome.
    for (const d of [a, b]) {
      await settleByHand(s.raw, s.stream, s.group, d?.deliveryId ?? "");
    }
    await s.backend.storeResult(success(takenOver, "theirs"));
    const ids = [a, b].map((d) => (d?.body.includes(lost) ? lost : takenOver));
    await Promise.all([a, b].map((d, i) => d?.ackWithRecord?.(success(ids[i] as string, "mine"))));
    const value = async (id: string) => JSON.parse((await s.raw.get(s.backend.resultKey(id))) ?? "null")?.result;
    await eventually(async () => expect(await value(lost)).toBe("mine"));
    expect(await value(takenOver)).toBe("theirs");
  });

  it("an ack or lease check of an entry gone from the stream leaves the record to a newer job of the same caller-chosen id", async () => {
    const s = await setup();
    expect(s.broker.attachResults(s.backend)).toBe(true);
    const [old, gone] = [encodeTask(codec), encodeTask(codec)];
    for (const t of [old, gone]) await s.broker.publish(s.queue, { id: t.id, body: t.body, unique: true });
    const [a, b] = await fetchN(s.consumer(), 2);
    if (!a || !b) throw new Error("two deliveries expected");
    // A worker that took both over settled them (dropping their unique markers); `old`'s id was
    // then published again (its marker set again): a newer job of that id is queued.
    const uniqueKey = `${s.prefix}:unique:{${s.queue}}`;
    for (const d of [a, b]) await settleByHand(s.raw, s.stream, s.group, d.deliveryId);
    await s.raw.srem(uniqueKey, old.id, gone.id);
    await s.broker.publish(s.queue, { id: old.id, body: old.body, unique: true });
    const [ofOld, ofGone] = a.body === old.body ? [a, b] : [b, a];
    // (asked of Redis once the read that handed them out is half a lease old)
    await eventually(async () => expect(await ofOld.leaseState?.()).toBe("taken"));
    expect(await ofGone.leaseState?.()).toBe("ownerless");
    await Promise.all([
      ofOld.ackWithRecord?.(success(old.id, "stale")),
      ofGone.ackWithRecord?.(success(gone.id, "mine")),
    ]);
    const value = async (id: string) => JSON.parse((await s.raw.get(s.backend.resultKey(id))) ?? "null")?.result;
    await eventually(async () => expect(await value(gone.id)).toBe("mine"));
    expect(await value(old.id)).toBeUndefined(); // the newer job has not run: no record yet
  });

  it("writes the record of an untrusted entry (an `id` field that is not its message's id) with its ack", async () => {
    const s = await setup();
    expect(s.broker.attachResults(s.backend)).toBe(true);
    const task = encodeTask(codec);
    await s.raw.xadd(s.stream, "*", "data", task.body, "id", "not-its-id");
    const d = await fetchOne(s.consumer());
    d.decodedTaskId?.(task.id); // as the worker does once the body is decoded: marks it untrusted
    await d.ackWithRecord?.(success(task.id, "done"));
    expect(JSON.parse((await s.raw.get(s.backend.resultKey(task.id))) ?? "null")).toMatchObject({ state: "SUCCESS" });
    expect(await s.raw.xlen(s.stream)).toBe(0);
  });

  it("writes and announces the record, then acks, in one call", async () => {
    const s = await setup();
    expect(s.broker.attachResults(s.backend)).toBe(true);
    const id = await s.publish();
    const d = await fetchOne(s.consumer());
    const sub = rawRedis();
    const announced = new Promise<string>((resolve) => sub.on("message", (_channel, message) => resolve(message)));
    await sub.subscribe(s.backend.doneChannel);
    // A waiter of this process is woken by the write itself.
    const wait = s.backend.waitForResult(id, { timeoutMs: 10_000, pollIntervalMs: 60_000 });
    await d.ackWithRecord?.(success(id, "done"));
    expect((await wait)?.result).toBe("done");
    expect(JSON.parse((await s.raw.get(s.backend.resultKey(id))) ?? "null")).toMatchObject({
      taskId: id,
      state: "SUCCESS",
      result: "done",
    });
    expect(JSON.parse(await announced)).toEqual([expect.objectContaining({ taskId: id, result: "done" })]);
    expect(await s.raw.ttl(s.backend.resultKey(id))).toBeGreaterThan(0);
    expect(await s.raw.xlen(s.stream)).toBe(0);
    expect(await s.raw.xpending(s.stream, s.group)).toEqual([0, null, null, null]);
    sub.disconnect();
  });

  /**
   * A consumer of another broker (records attached) whose command connection the test can drop:
   * `drop()` kills it, and the settle called next goes out while it reconnects.
   */
  async function consumerOnDroppableConnection(s: Awaited<ReturnType<typeof setup>>, consumerId: string) {
    const main = rawRedis();
    cleanups.push(() => main.disconnect());
    const broker = await s.newBroker({ claimMinIdleMs: 60_000, client: main });
    expect(broker.attachResults(s.backend)).toBe(true);
    const c = broker.consumer({ queues: [s.queue], consumerId });
    cleanups.push(() => c.close());
    return { c, drop: () => dropConnection(main, s.raw) };
  }

  it("an ack or dead letter resent after a reconnect, its entry settled already, writes its record again (gone with a Redis restart without persistence)", async () => {
    const s = await setup();
    const { c, drop } = await consumerOnDroppableConnection(s, "resent");
    for (const settle of ["ack", "deadLetter"] as const) {
      const id = await s.publish();
      const d = await fetchOne(c);
      // What the resent call meets after a restart that lost the first copy's writes (or
      // after a first copy applied without them): the entry is gone, no record stored.
      await settleByHand(s.raw, s.stream, s.group, d.deliveryId);
      const reconnected = await drop(); // the settle goes out while it reconnects
      const wait = s.backend.waitForResult(id, { timeoutMs: 10_000, pollIntervalMs: 50 });
      if (settle === "ack") await d.ackWithRecord?.(success(id, "done"));
      else
        await d.deadLetterWithRecord?.("poison", {
          taskId: id,
          state: "DEAD_LETTERED",
          error: { type: "Error", message: "poison" },
          updatedAt: new Date().toISOString(),
        });
      await reconnected.ready;
      // before, the record was taken as written by the first copy: get() waited for ever
      expect((await wait)?.state).toBe(settle === "ack" ? "SUCCESS" : "DEAD_LETTERED");
      expect(await s.raw.ttl(s.backend.resultKey(id))).toBeGreaterThan(0);
    }
  });

  it("a resent ack writes its records again only where the task has no final record (another worker's stays)", async () => {
    const s = await setup();
    const { c, drop } = await consumerOnDroppableConnection(s, "resent-final");
    const theirs = await s.publish();
    const lost = await s.publish();
    const deliveries = await fetchN(c, 2);
    const idOf = (d: Delivery) => (d.body.includes(theirs) ? theirs : lost);
    // Both entries were settled before the resent acks arrive; one task has a final record
    // (written by a worker that took the job over while this one was cut off), the other none
    // (its first copy's write was lost in a restart without persistence).
    for (const d of deliveries) {
      await settleByHand(s.raw, s.stream, s.group, d.deliveryId);
    }
    await s.backend.storeResult(success(theirs, "theirs"));
    const { ready } = await drop();
    // the task with the final record first: its write again is sent first on the backend's connection
    deliveries.sort((a, b) => (idOf(a) === theirs ? -1 : idOf(b) === theirs ? 1 : 0));
    await Promise.all(deliveries.map((d) => d.ackWithRecord?.(success(idOf(d), "mine"))));
    await ready;
    const value = async (taskId: string) =>
      JSON.parse((await s.raw.get(s.backend.resultKey(taskId))) ?? "null")?.result;
    await eventually(async () => expect(await value(lost)).toBe("mine"));
    expect(await value(theirs)).toBe("theirs");
  });

  /**
   * A published task, its delivery to a consumer that then closed (no more lease renewal), the
   * same entry reclaimed by another consumer, and a late FAILURE record of the first.
   */
  async function stolenTask(s: Awaited<ReturnType<typeof setup>>) {
    expect(s.broker.attachResults(s.backend)).toBe(true);
    const id = await s.publish();
    const a = s.consumer();
    const held = await fetchOne(a);
    await a.close();
    const stolen = await fetchOne(s.consumer());
    const late: TaskRecord = {
      taskId: id,
      state: "FAILURE",
      error: { type: "Error", message: "late" },
      updatedAt: new Date().toISOString(),
    };
    return { id, held, stolen, late };
  }

  it("a fenced ack writes no record: the job and its result stay with the new owner", async () => {
    const s = await setup();
    const { id, held, stolen, late } = await stolenTask(s);
    // Late, while the new owner still runs the job: nothing is written or acknowledged.
    await held.ackWithRecord?.(late);
    expect(await s.raw.get(s.backend.resultKey(id))).toBeNull();
    const pending = (await s.raw.xpending(s.stream, s.group, "-", "+", 10)) as Array<[string, string]>;
    expect(pending.map(([entry]) => entry)).toEqual([stolen.deliveryId]);
    await stolen.ackWithRecord?.(success(id, "done"));
    expect(await s.raw.xlen(s.stream)).toBe(0);
    expect(JSON.parse((await s.raw.get(s.backend.resultKey(id))) ?? "null")).toMatchObject({ state: "SUCCESS" });
  });

  it("a fenced ack after the new owner finished leaves that owner's result in place", async () => {
    const s = await setup();
    const { id, held, stolen, late } = await stolenTask(s);
    await stolen.ackWithRecord?.(success(id, "done"));
    // A waiter of this process is not woken by the stale record either.
    const wait = s.backend.waitForResult(id, { timeoutMs: 10_000, pollIntervalMs: 60_000 });
    await held.ackWithRecord?.(late);
    expect(JSON.parse((await s.raw.get(s.backend.resultKey(id))) ?? "null")).toMatchObject({
      state: "SUCCESS",
      result: "done",
    });
    expect(await wait).toMatchObject({ state: "SUCCESS", result: "done" });
  });

  it("a record over 512 KiB is written apart, in pieces, then acked: held, written; taken, left to the new owner; gone, written unless a final one is there", async () => {
    const s = await setup();
    const seen = await monitorCommands(cleanups);
    const big = "x".repeat(600 * 1024);
    const value = async (id: string) => JSON.parse((await s.raw.get(s.backend.resultKey(id))) ?? "null")?.result;
    // Held: written in pieces and announced, then the entry is acked.
    const { id, held, stolen } = await stolenTask(s);
    const wait = s.backend.waitForResult(id, { timeoutMs: 10_000, pollIntervalMs: 60_000 });
    // Taken (the lease ran out and another consumer holds it): nothing written or acked.
    await held.ackWithRecord?.(success(id, big));
    expect(await s.raw.get(s.backend.resultKey(id))).toBeNull();
    const pending = (await s.raw.xpending(s.stream, s.group, "-", "+", 10)) as Array<[string, string]>;
    expect(pending.map(([entry]) => entry)).toEqual([stolen.deliveryId]);
    await stolen.ackWithRecord?.(success(id, big));
    expect((await wait)?.result).toBe(big);
    expect(await s.raw.xlen(s.stream)).toBe(0);
    expect(await s.raw.ttl(s.backend.resultKey(id))).toBeGreaterThan(0);
    // Gone from the stream under the worker: one lost with the data gets this run's record, the
    // other, settled by a worker that took it over, keeps that worker's.
    const lost = await s.publish();
    const takenOver = await s.publish();
    const [a, b] = await fetchN(s.consumer(), 2);
    for (const d of [a, b]) await settleByHand(s.raw, s.stream, s.group, d?.deliveryId ?? "");
    await s.backend.storeResult(success(takenOver, "theirs"));
    const ids = [a, b].map((d) => (d?.body.includes(lost) ? lost : takenOver));
    await Promise.all([a, b].map((d, i) => d?.ackWithRecord?.(success(ids[i] as string, big))));
    expect(await value(lost)).toBe(big);
    expect(await value(takenOver)).toBe("theirs");
    // In pieces (no argument over 512 KiB), none left behind.
    await eventually(() =>
      expect(seen.filter((c) => c.args[0] === "APPEND" && c.args[1]?.startsWith(`${s.prefix}:pieces:`))).toHaveLength(
        3,
      ),
    );
    const ours = seen.filter((c) => c.args.some((arg) => arg.startsWith(s.prefix)));
    expect(ours.filter((c) => c.args.some((arg) => arg.length > 512 * 1024))).toEqual([]);
    expect(await s.raw.keys(`${s.prefix}:pieces:*`)).toEqual([]);
  });

  it("a record over 512 KiB whose write in pieces outlasts the lease keeps the entry's lease renewed: no other consumer takes it meanwhile", async () => {
    const s = await setup(); // lease 500 ms
    const big = "x".repeat(600 * 1024);
    // the pieces' write held back until the test lets it go
    const held = deferred();
    const started = deferred();
    const write = s.backend.storeRecordInPieces.bind(s.backend);
    s.backend.storeRecordInPieces = async (...args) => {
      started.resolve();
      await held.promise;
      return write(...args);
    };
    expect(s.broker.attachResults(s.backend)).toBe(true);
    const id = await s.publish();
    const d = await fetchOne(s.consumer());
    const acked = d.ackWithRecord?.(success(id, big));
    await started.promise;
    // four leases go by while the record is written; another consumer keeps asking
    const thief = s.consumer();
    const until = Date.now() + 4 * 500;
    while (Date.now() < until) expect(await thief.fetch(1, AbortSignal.timeout(100))).toEqual([]);
    held.resolve();
    await acked;
    expect(JSON.parse((await s.raw.get(s.backend.resultKey(id))) ?? "null")?.result).toBe(big);
    expect(await s.raw.xlen(s.stream)).toBe(0);
  });

  it("a batch mixing plain acks, records and a fenced entry writes each record for its own entry", async () => {
    const s = await setup();
    expect(s.broker.attachResults(s.backend)).toBe(true);
    const ids = [await s.publish(), await s.publish(), await s.publish()];
    const [plain, stolen, kept] = await fetchN(s.consumer(), 3);
    if (!plain || !stolen || !kept) throw new Error("three deliveries expected");
    await s.raw.xclaim(s.stream, s.group, "thief", 0, stolen.deliveryId); // its lease is lost
    // One event-loop turn: one script call, the plain ack first in the batch.
    await Promise.all([
      plain.ack(),
      stolen.ackWithRecord?.(success(ids[1] as string, "stolen")),
      kept.ackWithRecord?.(success(ids[2] as string, "kept")),
    ]);
    expect(await s.raw.get(s.backend.resultKey(ids[1] as string))).toBeNull();
    expect(JSON.parse((await s.raw.get(s.backend.resultKey(ids[2] as string))) ?? "null")).toMatchObject({
      result: "kept",
    });
    const pending = (await s.raw.xpending(s.stream, s.group, "-", "+", 10)) as Array<[string, string]>;
    expect(pending).toEqual([[stolen.deliveryId, "thief", expect.any(Number), expect.any(Number)]]);
  });

  /** The DEAD_LETTERED record of `id`. */
  /**
   * Two deliveries of a broker whose DLQ holds one entry (records attached), and their task ids:
   * the first dead letter fits, the second finds the DLQ full.
   */
  async function twoDeliveriesOverFullDlq(s: Awaited<ReturnType<typeof setup>>) {
    const broker = await s.newBroker({ dlqMaxLength: 1 });
    expect(broker.attachResults(s.backend)).toBe(true);
    const first = await s.publish();
    const second = await s.publish();
    const [a, b] = await fetchN(s.consumer(broker), 2);
    if (!a || !b) throw new Error("two deliveries expected");
    return { first, second, a, b };
  }

  /** A delivery of a broker whose attached records fail inside the script, and that record's key. */
  async function deliveryWithFailingRecords(s: Awaited<ReturnType<typeof setup>>) {
    const { broker, key } = await brokerWithFailingRecords(s);
    await s.publish();
    const d: Delivery = await fetchOne(s.consumer(broker));
    return { d, key };
  }

  const deadRecord = (id: string): TaskRecord => ({
    taskId: id,
    state: "DEAD_LETTERED",
    error: { type: "Error", message: "poison" },
    updatedAt: new Date().toISOString(),
  });

  it("a DLQ move writes and announces the DEAD_LETTERED record in the same call", async () => {
    const s = await setup();
    expect(s.broker.attachResults(s.backend)).toBe(true);
    const id = await s.publish();
    const d = await fetchOne(s.consumer());
    const wait = s.backend.waitForResult(id, { timeoutMs: 10_000, pollIntervalMs: 60_000 });
    await d.deadLetterWithRecord?.("Error: poison", deadRecord(id));
    expect(await wait).toMatchObject({ taskId: id, state: "DEAD_LETTERED" });
    expect(await s.raw.ttl(s.backend.resultKey(id))).toBeGreaterThan(0);
    expect(await s.raw.xlen(s.stream)).toBe(0);
    const [entry] = await s.broker.getDlqMessages(s.queue);
    expect(entry).toMatchObject({ error: "Error: poison" });
  });

  it("a full DLQ moves nothing and writes no record: the message stays in the work stream", async () => {
    const s = await setup();
    const { first, second, a, b } = await twoDeliveriesOverFullDlq(s);
    await a.deadLetterWithRecord?.("Error: poison", deadRecord(first));
    await expect(b.deadLetterWithRecord?.("Error: poison", deadRecord(second))).rejects.toThrow(/DLQ .* is full/);
    expect(await s.raw.get(s.backend.resultKey(second))).toBeNull();
    expect(await s.raw.xlen(s.dlq)).toBe(1);
    const pending = (await s.raw.xpending(s.stream, s.group, "-", "+", 10)) as Array<[string, string]>;
    expect(pending.map(([entry]) => entry)).toEqual([b.deliveryId]);
  });

  it("a fenced DLQ move writes no record: the job and its result stay with the new owner", async () => {
    const s = await setup();
    const { id, held, stolen } = await stolenTask(s);
    await stolen.ackWithRecord?.(success(id, "done"));
    await held.deadLetterWithRecord?.("Error: late", deadRecord(id));
    expect(JSON.parse((await s.raw.get(s.backend.resultKey(id))) ?? "null")).toMatchObject({ state: "SUCCESS" });
    expect(await s.raw.xlen(s.dlq)).toBe(0);
    // Fenced while the new owner still runs the job too: its entry stays pending for it.
    const again = await stolenTask(s);
    await again.held.deadLetterWithRecord?.("Error: late", deadRecord(again.id));
    expect(await s.raw.get(s.backend.resultKey(again.id))).toBeNull();
    const pending = (await s.raw.xpending(s.stream, s.group, "-", "+", 10)) as Array<[string, string]>;
    expect(pending.map(([entry]) => entry)).toEqual([again.stolen.deliveryId]);
    expect(await s.raw.xlen(s.dlq)).toBe(0);
  });

  it("a DLQ move whose record cannot be written moves nothing (redelivered, not lost)", async () => {
    const s = await setup();
    const { d, key } = await deliveryWithFailingRecords(s);
    await expect(d.deadLetterWithRecord?.("Error: poison", deadRecord("broken"))).rejects.toThrow(/expire/i);
    expect(await s.raw.exists(key)).toBe(0);
    expect(await s.raw.xlen(s.dlq)).toBe(0);
    const pending = (await s.raw.xpending(s.stream, s.group, "-", "+", 10)) as Array<[string, string]>;
    expect(pending.map(([entry]) => entry)).toEqual([d.deliveryId]);
  });

  it("an acknowledged message's dead letter and its DEAD_LETTERED record are written and announced in one call", async () => {
    const s = await setup();
    expect(s.broker.attachResults(s.backend)).toBe(true);
    const id = await s.publish();
    const d = await fetchOne(s.consumer());
    await d.ack(); // at_most_once: acknowledged before the run
    const wait = s.backend.waitForResult(id, { timeoutMs: 10_000, pollIntervalMs: 60_000 });
    await d.writeDeadLetterWithRecord?.("Error: poison", deadRecord(id));
    expect(await wait).toMatchObject({ taskId: id, state: "DEAD_LETTERED" });
    expect(await s.raw.ttl(s.backend.resultKey(id))).toBeGreaterThan(0);
    const [entry] = await s.broker.getDlqMessages(s.queue);
    expect(entry).toMatchObject({ error: "Error: poison", originalMessage: expect.objectContaining({ id }) });
  });

  it("an acknowledged message's dead letter refused by a full DLQ writes no record either", async () => {
    const s = await setup();
    const { first, second, a, b } = await twoDeliveriesOverFullDlq(s);
    await Promise.all([a.ack(), b.ack()]);
    await a.writeDeadLetterWithRecord?.("Error: poison", deadRecord(first));
    await expect(b.writeDeadLetterWithRecord?.("Error: poison", deadRecord(second))).rejects.toThrow(/DLQ .* is full/);
    expect(await s.raw.get(s.backend.resultKey(second))).toBeNull();
    expect(await s.raw.xlen(s.dlq)).toBe(1);
  });

  it("an acknowledged message's dead letter whose record cannot be written appends nothing", async () => {
    const s = await setup();
    const { d, key } = await deliveryWithFailingRecords(s);
    await d.ack();
    await expect(d.writeDeadLetterWithRecord?.("Error: poison", deadRecord("broken"))).rejects.toThrow(/expire/i);
    expect(await s.raw.exists(key)).toBe(0);
    expect(await s.raw.xlen(s.dlq)).toBe(0);
  });

  it("acks nothing when the record cannot be written (the delivery is redelivered, not lost)", async () => {
    const s = await setup();
    const { d, key } = await deliveryWithFailingRecords(s);
    await expect(d.ackWithRecord?.(success("broken", 1))).rejects.toThrow(/expire/i);
    expect(await s.raw.exists(key)).toBe(0);
    const pending = (await s.raw.xpending(s.stream, s.group, "-", "+", 10)) as Array<[string, string]>;
    expect(pending.map(([entry]) => entry)).toEqual([d.deliveryId]);
    // Not settled: a plain ack still works.
    await d.ack();
    expect(await s.raw.xlen(s.stream)).toBe(0);
  });

  it("a read right after acks with records sends them in its call: records written, entries acked, next handed out", async () => {
    const s = await setup();
    expect(s.broker.attachResults(s.backend)).toBe(true);
    const ids = [await s.publish(), await s.publish(), await s.publish()];
    const c = s.consumer();
    const held = await c.fetch(2, AbortSignal.timeout(1000));
    expect(held).toHaveLength(2);
    const acked = held.map((d, i) => d.ackWithRecord?.(success(ids[i] as string, i)));
    const next = await c.fetch(2, AbortSignal.timeout(1000));
    await Promise.all(acked);
    expect(next).toHaveLength(1);
    for (const [i, id] of ids.slice(0, 2).entries()) {
      expect(JSON.parse((await s.raw.get(s.backend.resultKey(id))) ?? "null")).toMatchObject({ result: i });
    }
    const pending = (await s.raw.xpending(s.stream, s.group, "-", "+", 10)) as Array<[string, string]>;
    expect(pending.map(([entry]) => entry)).toEqual([next[0]?.deliveryId]);
    expect(await s.raw.xlen(s.stream)).toBe(1);
  });

  it("when the records of waiting acks cannot be written, the read in the same call fails too and takes nothing", async () => {
    const s = await setup();
    const { broker } = await brokerWithFailingRecords(s);
    await s.publish();
    await s.publish();
    const c = s.consumer(broker);
    const d = await fetchOne(c);
    const acked = d.ackWithRecord?.(success("broken", 1));
    await expect(c.fetch(1, AbortSignal.timeout(1000))).rejects.toThrow(/expire/i);
    await expect(acked).rejects.toThrow(/expire/i);
    // nothing acked, nothing read: the held entry is the only one pending, the other still new
    const pending = (await s.raw.xpending(s.stream, s.group, "-", "+", 10)) as Array<[string, string]>;
    expect(pending.map(([entry]) => entry)).toEqual([d.deliveryId]);
    await d.ack();
    const rest = await fetchOne(c);
    await rest.ack();
    expect(await s.raw.xlen(s.stream)).toBe(0);
  });

  it("a worker stores results with its acks when the backend shares the broker's server, and says so", async () => {
    for (const [backendUrl, together] of [
      [SERVICES.redis, true],
      [otherDatabase(SERVICES.redis), false],
    ] as const) {
      const prefix = testPrefix();
      const app = new Chicory({
        broker: new RedisBroker({ url: SERVICES.redis, keyPrefix: prefix, env: {} }),
        backend: new RedisBackend({ url: backendUrl, keyPrefix: prefix, env: {} }),
        config: { env: {} },
      });
      const add = app.task({ name: "add" }, async (a: number, b: number) => a + b);
      const started: Array<Record<string, unknown>> = [];
      const logger = {
        debug: () => {},
        info: (fields: unknown, message?: string) => {
          if (message === "worker started") started.push(fields as Record<string, unknown>);
        },
        warn: () => {},
        error: () => {},
        child: () => logger,
      };
      const worker = new Worker(app, { concurrency: 4, logger });
      await worker.start();
      try {
        const results = await Promise.all([1, 2, 3].map(async (i) => (await add.delay(i, 10)).get({ timeout: 10 })));
        expect(results).toEqual([11, 12, 13]);
      } finally {
        await worker.stop(5);
        await deletePrefix(prefix);
        await deletePrefix(prefix, backendUrl);
      }
      expect(started).toEqual([expect.objectContaining({ resultsWithAcks: together })]);
    }
  });
});

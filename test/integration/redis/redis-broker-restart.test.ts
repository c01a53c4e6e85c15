/**
 * A consumer survives a Redis restart by itself: the test runs its OWN redis-server (random
 * free port, no persistence), kills it, restarts it on the same port, and checks that fetch
 * throws BrokerConnectionError while Redis is down and resumes delivering afterwards (the
 * group lost with the data is re-created on NOGROUP). On such a server too: a release that Redis
 * refuses (a write error) leaves the entry to be reclaimed after its lease, and a worker stops
 * within its shutdown timeout while Redis is down.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createServer } from "node:net";
import { Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import { RedisBackend } from "../../../src/backends/redis/index.js";
import type { Consumer, Delivery } from "../../../src/brokers/broker.js";
import { RedisBroker } from "../../../src/brokers/redis/index.js";
import type { RedisBrokerOptions } from "../../../src/brokers/redis/redis-broker-options.js";
import { MessageCodec } from "../../../src/core/message.js";
import { BrokerConnectionError } from "../../../src/errors.js";
import { Chicory, silentLogger, Worker } from "../../../src/index.js";
import { encodeTask, eventually, sleep } from "../../contract/contract-helpers.js";
import { useCleanups } from "../../helpers/cleanups.js";
import { canConnect, skipUnless, uniqueName } from "../../helpers/services.js";

const skip = await skipUnless("redis");
const codec = new MessageCodec();

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

async function startRedis(port: number): Promise<ChildProcess> {
  const child = spawn(
    "redis-server",
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"],
    { stdio: "ignore" },
  );
  const deadline = Date.now() + 5000;
  while (!(await canConnect(port))) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`redis-server did not start on ${port}`);
    await sleep(20);
  }
  return child;
}

async function stopRedis(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGKILL");
  await exited;
}

describe.skipIf(skip)("redis broker: server restart", () => {
  const cleanups = useCleanups();

  async function fetchUntil(consumer: Consumer, timeoutMs: number): Promise<{ delivery: Delivery; errors: number }> {
    const deadline = Date.now() + timeoutMs;
    let errors = 0;
    for (;;) {
      if (Date.now() > deadline) throw new Error(`no delivery within ${timeoutMs} ms (${errors} fetch errors)`);
      try {
        const [delivery] = await consumer.fetch(1, AbortSignal.timeout(500));
        if (delivery) return { delivery, errors };
      } catch (error) {
        expect(error).toBeInstanceOf(BrokerConnectionError);
        errors++;
        await sleep(100); // the worker's back-off
      }
    }
  }

  /** A broker on a redis-server of its own (gone with the test), a raw client, a consumer of a fresh queue. */
  async function ownServerConsumer(keyPrefix: string, options: Partial<RedisBrokerOptions> = {}) {
    const port = await freePort();
    const server = await startRedis(port);
    const url = `redis://127.0.0.1:${port}/0`;
    const broker = new RedisBroker({ url, keyPrefix, env: {}, claimMinIdleMs: 60_000, blockMs: 100, ...options });
    const admin = new Redis(url, { maxRetriesPerRequest: null });
    const queue = uniqueName("q");
    const consumerId = uniqueName("c-");
    cleanups.push(async () => {
      await broker.disconnect(); // closes its consumers
      admin.disconnect();
      await stopRedis(server);
    });
    broker.bind({ codec });
    await broker.connect();
    const consumer = broker.consumer({ queues: [queue], consumerId });
    return { broker, admin, queue, consumerId, consumer, stream: `${keyPrefix}:stream:{${queue}}` };
  }

  it("a consumer resumes fetching on its own after Redis restarts", { timeout: 30_000 }, async () => {
    const port = await freePort();
    let server: ChildProcess | undefined = await startRedis(port);
    const url = `redis://127.0.0.1:${port}/0`;
    const broker = new RedisBroker({
      url,
      keyPrefix: "restart",
      env: {},
      claimMinIdleMs: 1000,
      blockMs: 1000,
      publishTimeoutMs: 300,
    });
    const backend = new RedisBackend({ url, keyPrefix: "restart", env: {} });
    cleanups.push(async () => {
      await consumer.close();
      await broker.disconnect();
      await backend.disconnect();
      await stopRedis(server);
    });
    broker.bind({ codec });
    await broker.connect();
    await backend.connect();
    const queue = uniqueName("q");
    const consumer = broker.consumer({ queues: [queue], consumerId: uniqueName("c-") });

    const before = encodeTask(codec);
    await broker.publish(queue, { id: before.id, body: before.body });
    const first = await fetchUntil(consumer, 3000);
    expect(first.delivery.body).toBe(before.body);
    await first.delivery.ack();

    const blocked = consumer.fetch(1, AbortSignal.timeout(20_000)).then(
      () => "returned",
      (error: unknown) => (error instanceof BrokerConnectionError ? "connection error" : String(error)),
    );
    await sleep(100);
    await stopRedis(server);
    const killedAt = Date.now();
    // the read in flight fails at once instead of hanging until Redis is back
    expect(await blocked).toBe("connection error");
    expect(Date.now() - killedAt).toBeLessThan(10_000);
    await expect(consumer.fetch(1, AbortSignal.timeout(500))).rejects.toBeInstanceOf(BrokerConnectionError);
    expect((await broker.healthcheck()).connected).toBe(false);
    // a publish while Redis is down rejects after publishTimeoutMs instead of hanging
    const lost = encodeTask(codec);
    const publishedAt = Date.now();
    await expect(broker.publish(queue, { id: lost.id, body: lost.body })).rejects.toThrow(/outcome is unknown/);
    expect(Date.now() - publishedAt).toBeLessThan(5000);

    server = await startRedis(port);
    const after = encodeTask(codec);
    // a producer retries until the broker has reconnected (each try bounded by publishTimeoutMs)
    for (let tries = 0; ; tries++) {
      try {
        await broker.publish(queue, { id: after.id, body: after.body, unique: true });
        break;
      } catch (error) {
        expect(error).toBeInstanceOf(BrokerConnectionError);
        if (tries > 40) throw error;
      }
    }
    // the publish that timed out is sent once Redis is back: its outcome was unknown, not failed
    const bodies: string[] = [];
    for (let i = 0; i < 2; i++) {
      const next = await fetchUntil(consumer, 10_000);
      bodies.push(next.delivery.body);
      await next.delivery.ack();
    }
    expect(bodies).toContain(after.body);
    expect((await broker.healthcheck()).connected).toBe(true);

    // the backend's command connection came back too
    await backend.storeResult({ taskId: after.id, state: "SUCCESS", result: 1, updatedAt: new Date().toISOString() });
    expect((await backend.getResult(after.id))?.state).toBe("SUCCESS");
  });

  it("after a reconnect, a consumer takes back at once the entries a read handed it unseen", async () => {
    const { broker, admin, queue, consumerId, consumer, stream } = await ownServerConsumer("unseen");
    const tasks = [encodeTask(codec), encodeTask(codec), encodeTask(codec)];
    for (const t of tasks) await broker.publish(queue, { id: t.id, body: t.body });
    const held = (await fetchUntil(consumer, 3000)).delivery;
    // A read for this consumer whose reply it never got (lost with the connection).
    await admin.call(
      "XREADGROUP",
      "GROUP",
      broker.settings.consumerGroup,
      consumerId,
      "COUNT",
      1,
      "STREAMS",
      stream,
      ">",
    );
    await admin.call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes");
    const next = (await fetchUntil(consumer, 10_000)).delivery;
    expect(next.body).toBe(tasks[1]?.body); // not the third, newer one: the unseen entry comes first
    expect(next.deliveryCount).toBe(1); // the lost read counted this delivery; it is not counted twice
    const last = (await fetchUntil(consumer, 3000)).delivery;
    expect(last.body).toBe(tasks[2]?.body);
    expect(last.deliveryCount).toBe(1);
    const counts = (await admin.call("XPENDING", stream, broker.settings.consumerGroup, "-", "+", 10)) as unknown[][];
    expect(counts.map((p) => [p[0], p[3]])).toEqual([held, next, last].map((d) => [d.deliveryId, 1]));
    for (const d of [held, next, last]) await d.ack();
    expect(await admin.xpending(stream, broker.settings.consumerGroup)).toEqual([0, null, null, null]);
  });

  it("an entry this consumer released, taken back after a reconnect, counts the delivery its release left", async () => {
    const { broker, admin, queue, consumer, stream } = await ownServerConsumer("released");
    const task = encodeTask(codec);
    await broker.publish(queue, { id: task.id, body: task.body });
    const first = (await fetchUntil(consumer, 3000)).delivery;
    await first.release(); // not counted: the pending count drops to 0 until the next claim
    const pelCount = async () =>
      ((await admin.call("XPENDING", stream, broker.settings.consumerGroup, "-", "+", 10)) as unknown[][]).map(
        (p) => p[3],
      );
    expect(await pelCount()).toEqual([0]);
    await admin.call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes");
    const again = (await fetchUntil(consumer, 10_000)).delivery;
    expect(again.deliveryId).toBe(first.deliveryId);
    expect(again.deliveryCount).toBe(1);
    expect(await pelCount()).toEqual([1]);
    await again.ack();
  });

  it("after a reconnect, an entry a full DLQ refused is left to its lease, not taken back at once", async () => {
    const { broker, admin, queue, consumer, stream } = await ownServerConsumer("parked", { dlqMaxLength: 1 });
    for (const t of [encodeTask(codec), encodeTask(codec)]) await broker.publish(queue, { id: t.id, body: t.body });
    const first = (await fetchUntil(consumer, 3000)).delivery;
    const second = (await fetchUntil(consumer, 3000)).delivery;
    await first.deadLetter("poison");
    await expect(second.deadLetter("poison")).rejects.toThrow(/DLQ .* is full/);
    await admin.call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes");
    // The next fetches (after the reconnect) take nothing back: the refused entry waits for its lease.
    const next = await eventually(async () => consumer.fetch(5, AbortSignal.timeout(300)), 10_000);
    expect(next).toEqual([]);
    const pending = (await admin.call("XPENDING", stream, broker.settings.consumerGroup)) as [number];
    expect(Number(pending[0])).toBe(1);
  });

  it("a release that Redis refuses (NOREPLICAS) stops lease renewal: another consumer reclaims the entry", async () => {
    const port = await freePort();
    const server = await startRedis(port);
    const url = `redis://127.0.0.1:${port}/0`;
    const broker = new RedisBroker({ url, keyPrefix: "refused", env: {}, claimMinIdleMs: 300, blockMs: 100 });
    const admin = new Redis(port, "127.0.0.1");
    const queue = uniqueName("q");
    const consumers: Consumer[] = [];
    cleanups.push(async () => {
      await Promise.allSettled(consumers.map((c) => c.close()));
      await broker.disconnect();
      admin.disconnect();
      await stopRedis(server);
    });
    broker.bind({ codec });
    await broker.connect();
    const [a, b] = ["a", "b"].map((consumerId) => broker.consumer({ queues: [queue], consumerId })) as [
      Consumer,
      Consumer,
    ];
    consumers.push(a, b);
    const task = encodeTask(codec);
    await broker.publish(queue, { id: task.id, body: task.body });
    const held = (await fetchUntil(a, 3000)).delivery;
    // Every write is refused now (a primary without the replicas it needs): the release fails.
    await admin.config("SET", "min-replicas-to-write", "1");
    await expect(held.release({ countDelivery: true })).rejects.toThrow(/NOREPLICAS/);
    await admin.config("SET", "min-replicas-to-write", "0");
    expect(a.inFlight).toBe(0);
    // Redis takes writes again, and `a` no longer renews the lease: it expires and `b` takes it.
    const reclaimed = (await fetchUntil(b, 5000)).delivery;
    expect(reclaimed.deliveryId).toBe(held.deliveryId);
    await reclaimed.ack();
  });

  it("a worker stops within its shutdown timeout while Redis is down", { timeout: 30_000 }, async () => {
    const port = await freePort();
    let server: ChildProcess | undefined = await startRedis(port);
    const url = `redis://127.0.0.1:${port}/0`;
    const app = new Chicory({
      broker: new RedisBroker({ url, keyPrefix: "stop", env: {}, blockMs: 200 }),
      backend: new RedisBackend({ url, keyPrefix: "stop", env: {} }),
      config: { env: {} },
    });
    const worker = new Worker(app, { concurrency: 2, logger: silentLogger, heartbeatInterval: 0.1, heartbeatTtl: 1 });
    cleanups.push(async () => {
      await stopRedis(server);
    });
    await worker.start();
    await stopRedis(server); // heartbeats and the last heartbeat now wait for a server that is gone
    server = undefined;
    const started = performance.now();
    await worker.stop(1);
    expect(performance.now() - started).toBeLessThan(10_000);
  });

  it("a delay() whose publish has no answer rejects naming the task and its id, which the job keeps once sent", {
    timeout: 30_000,
  }, async () => {
    const port = await freePort();
    let server: ChildProcess | undefined = await startRedis(port);
    cleanups.push(() => stopRedis(server));
    const url = `redis://127.0.0.1:${port}/0`;
    const broker = new RedisBroker({ url, keyPrefix: "named", env: {}, publishTimeoutMs: 300 });
    const app = new Chicory({ broker, config: { env: {} } });
    cleanups.push(() => app.disconnect());
    const work = app.task({ name: "named.work" }, (n: number) => n);
    await app.connect();
    await stopRedis(server);
    server = undefined;
    const error = await work.delay(1).then(
      () => undefined,
      (caught: unknown) => caught,
    );
    expect(error).toBeInstanceOf(BrokerConnectionError);
    const { taskId, message, isRefused } = error as BrokerConnectionError;
    expect(taskId).toMatch(/\S/);
    expect(isRefused).toBe(false); // its outcome is unknown: it lands once Redis is back
    expect(message).toContain("outcome is unknown");
    expect(message).toContain(`(task named.work, id ${taskId})`);
    // the publish is sent once Redis is back: the job it queued carries that id
    server = await startRedis(port);
    const admin = new Redis(url);
    cleanups.push(() => admin.quit().then(() => undefined));
    const stream = "named:stream:{default}";
    await eventually(async () => expect(await admin.xlen(stream)).toBe(1), 10_000);
    const [[, fields]] = (await admin.xrange(stream, "-", "+")) as [[string, string[]]];
    expect(JSON.parse(fields[fields.indexOf("data") + 1] as string).id).toBe(taskId);
  });

  it("the backend disconnects at once when Redis went away before its first wait", { timeout: 30_000 }, async () => {
    const port = await freePort();
    let server: ChildProcess | undefined = await startRedis(port);
    const backend = new RedisBackend({ url: `redis://127.0.0.1:${port}/0`, keyPrefix: "gone", env: {} });
    cleanups.push(async () => {
      await backend.disconnect();
      await stopRedis(server);
    });
    await backend.connect();
    await stopRedis(server);
    server = undefined;
    // The first wait opens the result subscriber: its SUBSCRIBE waits for a server that is gone.
    expect(await backend.waitForResult("never", { timeoutMs: 300 })).toBeNull();
    const started = Date.now();
    await backend.disconnect();
    expect(Date.now() - started).toBeLessThan(3000);
  });
});

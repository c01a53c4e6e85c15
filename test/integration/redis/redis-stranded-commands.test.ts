/**
 * Commands a Redis client still holds when the app disconnects during an outage. ioredis 6
 * never settles the commands of a client closed while it waits to reconnect (its offline queue,
 * and the commands sent before the drop): an admin call without a time limit hung for ever, an
 * inspection call until its 10 s limit, and that limit's timer kept the process alive. Closing
 * a connection Chicory opened now rejects every command it holds with a connection error, at
 * once; with Redis up, pending replies still arrive before the close (publishes too when Redis
 * answers them only after QUIT's 1 s wait); a client the caller gave
 * is left as it was (nothing closed, nothing rejected). On a redis-server of this file's own.
 */
import { Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import { RedisBackend } from "../../../src/backends/redis/index.js";
import type { Delivery } from "../../../src/brokers/broker.js";
import { RedisBroker } from "../../../src/brokers/redis/index.js";
import { BackendConnectionError, BrokerConnectionError, Chicory } from "../../../src/index.js";
import { useCleanups } from "../../helpers/cleanups.js";
import { skipUnless, uniqueName } from "../../helpers/services.js";
import { useOwnRedis } from "./own-redis.js";

const skip = await skipUnless("redis");

/**
 * Resolves once `ready()` holds (checked every 10 ms, the first time after 10 ms: a healthcheck
 * made before the client has seen its socket close would wait 2 s for its PING), rejects after
 * `timeoutMs`.
 */
function until(ready: () => Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const check = (): void => {
      ready().then(
        (isReady) => {
          if (isReady) resolve();
          else if (Date.now() - started > timeoutMs) reject(new Error(`${what}: not within ${timeoutMs} ms`));
          else setTimeout(check, 10);
        },
        (error: unknown) => reject(error),
      );
    };
    setTimeout(check, 10);
  });
}

/** A promise's outcome, readable at any time (`undefined` while pending). */
function track<T>(promise: Promise<T>): { outcome: () => { value?: T; error?: unknown } | undefined } {
  let outcome: { value?: T; error?: unknown } | undefined;
  promise.then(
    (value) => {
      outcome = { value };
    },
    (error: unknown) => {
      outcome = { error };
    },
  );
  return { outcome: () => outcome };
}

const afterTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

describe.skipIf(skip)("redis: commands held by a connection closed during an outage", () => {
  const own = useOwnRedis("stranded");
  const cleanups = useCleanups();

  async function appOnOwnServer(options: { client?: Redis } = {}): Promise<Chicory> {
    if (own.server.pid === undefined) await own.server.start();
    const url = own.server.url;
    const keyPrefix = uniqueName("stranded");
    const app = new Chicory({
      broker: new RedisBroker({ url, keyPrefix, env: {}, blockMs: 200, ...options }),
      backend: new RedisBackend({ url, keyPrefix, env: {} }),
      config: { env: {} },
    });
    cleanups.push(() => app.disconnect().catch(() => undefined));
    await app.connect();
    return app;
  }

  /** Redis killed, and both adapters' command connections waiting to reconnect. */
  async function outage(app: Chicory): Promise<void> {
    await own.server.kill();
    await until(async () => !(await app.broker.healthcheck()).connected, "broker sees the outage");
    await until(async () => !(await (app.backend as RedisBackend).healthcheck()).connected, "backend sees the outage");
  }

  it("app.disconnect() rejects every call still waiting for Redis, at once, with a connection error", async () => {
    const app = await appOnOwnServer();
    const broker = app.broker as RedisBroker;
    const backend = app.backend as RedisBackend;
    const queue = uniqueName("q");
    await broker.publish(queue, { id: "m-1", body: "{}" });
    const consumer = broker.consumer({ queues: [queue], consumerId: uniqueName("c-") });
    let delivery: Delivery | undefined;
    await until(async () => {
      delivery ??= (await consumer.fetch(1, AbortSignal.timeout(1000)))[0];
      return delivery !== undefined;
    }, "the message fetched");

    await outage(app);
    const calls = {
      // inspection calls (were: a rejection at their 10 s limit, whose timer held the process)
      getQueueSize: track(broker.getQueueSize(queue)),
      getDlqCount: track(broker.getDlqCount(queue)),
      // an admin call without a time limit (was: never settled)
      replayFromDlq: track(broker.replayFromDlq("0-1", queue)),
      // the settlement of a delivery, on the command connection (was: never settled)
      ack: track((delivery as Delivery).ack()),
      // a backend call
      getResult: track(backend.getResult("t-1")),
    };
    await afterTurn(); // the commands are in the clients' queues
    expect(Object.values(calls).map((c) => c.outcome())).toEqual(Object.values(calls).map(() => undefined));

    await app.disconnect();
    await afterTurn();
    for (const [name, call] of Object.entries(calls)) {
      const outcome = call.outcome();
      expect(outcome, `${name} settled`).toBeDefined();
      const error = outcome?.error;
      expect(error, `${name} rejected`).toBeInstanceOf(
        name === "getResult" ? BackendConnectionError : BrokerConnectionError,
      );
      expect(String(error), name).toMatch(/disconnected before redis:\/\/127\.0\.0\.1:\d+\/0 answered/);
    }
  });

  it("with Redis up, calls made just before app.disconnect() still get their answers", async () => {
    const app = await appOnOwnServer();
    const broker = app.broker as RedisBroker;
    const queue = uniqueName("q");
    const published = broker.publish(queue, { id: "m-1", body: "{}" });
    const size = broker.getQueueSize(queue);
    const record = (app.backend as RedisBackend).getResult("t-1");
    await app.disconnect();
    expect(await published).toEqual({ published: true });
    expect(await size).toBe(1);
    expect(await record).toBeNull();
  });

  it("with Redis busy past QUIT's 1 s wait, publishes in flight at app.disconnect() get their answers", async () => {
    // Was: the connection was dropped 1 s after QUIT and the publishes still unanswered were
    // rejected as "outcome unknown", though Redis applied them (a caller would send them again).
    const app = await appOnOwnServer();
    const broker = app.broker as RedisBroker;
    const queue = uniqueName("q");
    const pid = own.server.pid as number;
    process.kill(pid, "SIGSTOP"); // busy: the connections stay open, the answers come later
    let resume: NodeJS.Timeout | undefined;
    cleanups.push(() => {
      clearTimeout(resume);
      process.kill(pid, "SIGCONT");
    });
    const published = Array.from({ length: 200 }, (_, i) => broker.publish(queue, { id: `m-${i}`, body: "{}" }));
    const disconnected = app.disconnect();
    resume = setTimeout(() => process.kill(pid, "SIGCONT"), 1_500);
    await disconnected;
    const outcomes = await Promise.allSettled(published);
    expect(outcomes.filter((o) => o.status === "rejected").map((o) => String(o.reason))).toEqual([]);
    const check = new Redis(own.server.url);
    cleanups.push(() => check.disconnect());
    expect(await check.xlen(`${broker.settings.keyPrefix}:stream:{${queue}}`)).toBe(200);
  });

  it("a call made after app.disconnect() says the broker was disconnected, not that it never connected", async () => {
    const app = await appOnOwnServer();
    await app.disconnect();
    const broker = app.broker as RedisBroker;
    await expect(broker.publish(uniqueName("q"), { id: "m-1", body: "{}", unique: true })).rejects.toThrow(
      /redis broker is disconnected \(disconnect\(\) was called/,
    );
    await broker.connect(); // connected again: usable again
    expect(await broker.publish(uniqueName("q"), { id: "m-2", body: "{}", unique: true })).toEqual({ published: true });
  });

  it("a client the caller gave is not closed, and keeps the commands it holds (they run once Redis is back)", async () => {
    if (own.server.pid === undefined) await own.server.start();
    const client = new Redis(own.server.url, { retryStrategy: () => 50, maxRetriesPerRequest: null });
    client.on("error", () => undefined);
    cleanups.push(() => client.disconnect());
    const app = await appOnOwnServer({ client });
    const queue = uniqueName("q");
    await outage(app);
    await until(async () => client.status === "reconnecting" || client.status === "connecting", "client sees it");
    const size = track(app.broker.getQueueSize(queue));
    const ping = client.ping();
    await app.disconnect();
    await afterTurn();
    expect(client.status).not.toBe("end");
    expect(size.outcome()).toBeUndefined(); // still waiting for Redis in the caller's client

    await own.server.start();
    expect(await ping).toBe("PONG");
    await until(async () => size.outcome() !== undefined, "the queued call answered");
    expect(size.outcome()?.value).toBe(0);
  });
});

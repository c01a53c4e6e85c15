// Chicory on RabbitMQ, loaded from the BUILT package (`dist/`, or the folder in CHICORY_DIST).
//   producer: N individual `task.delay()` calls at once (Promise.all), then completion
//   worker:   `new Worker(app, { concurrency: 32, logger: silentLogger })`
// Variants, by system name:
//   redis      `chicory`: RabbitMqBroker + RedisBackend (DB 3, the run's key prefix); the
//              producer awaits every `AsyncResult.get()`.
//   none       `chicory-nobackend`: `backend: null`. Completion signal: the worker wraps the
//              broker's deliveries and, after each successful `ack()`, sends one tiny transient
//              message to the run's `<prefix>.done` queue on its own amqplib channel (the same
//              per-job cost as the reference's direct reply-to); the producer counts them.
//   durable    `chicory-durable`: like `redis` but with the broker's DEFAULT queue options
//              (durable queue + persistent messages, prefetchCount 16), for reference.
// `chicory` and `chicory-nobackend` use `durable: false` (the reference's queue is non-durable
// with transient messages) and `prefetchCount: CONCURRENCY` (the docs' advice: "near the
// worker's concurrency").
import path from "node:path";
import { pathToFileURL } from "node:url";
import { AMQP_URL, CONCURRENCY, now, REDIS_URL, REPO, runWorkload } from "../lib.mjs";

const DIST = process.env.CHICORY_DIST ? path.resolve(process.env.CHICORY_DIST) : path.join(REPO, "dist");
const load = (file) => import(pathToFileURL(path.join(DIST, file)).href);
const { Chicory, Worker, silentLogger } = await load("index.js");
const { RabbitMqBroker } = await load("rabbitmq.js");

/** The variant of a system name (see above). */
export function variantOf(system) {
  return { chicory: "redis", "chicory-nobackend": "none", "chicory-durable": "durable" }[system] ?? "redis";
}
/** Seconds a `get()` may wait (the script's own batch timeout is shorter). */
const GET_TIMEOUT_S = 900;
const QUEUE = "default";

async function makeApp(prefix, variant) {
  const brokerOptions =
    variant === "durable"
      ? { url: AMQP_URL, prefix }
      : { url: AMQP_URL, prefix, durable: false, prefetchCount: CONCURRENCY };
  let backend = null;
  if (variant !== "none") {
    const { RedisBackend } = await load("redis.js");
    backend = new RedisBackend({ url: REDIS_URL, keyPrefix: prefix, resultTtl: 3600 });
  }
  const app = new Chicory({ broker: new RabbitMqBroker(brokerOptions), backend });
  const work = app.task({ name: "work" }, async (w, v) => runWorkload(w, v));
  return { app, work };
}

/** RabbitMQ queues Chicory declares for `prefix` (plus the side channel's). */
export function queuesOf(prefix) {
  return [`${prefix}.${QUEUE}`, `${prefix}.${QUEUE}.dlq`, `${prefix}.done`];
}

/** Wraps the broker's consumers so that every successful ack also sends one "done" message. */
async function instrumentAcks(app, prefix) {
  const amqp = (await import("amqplib")).default;
  const conn = await amqp.connect(AMQP_URL);
  const ch = await conn.createChannel();
  const done = `${prefix}.done`;
  const signal = () => ch.sendToQueue(done, Buffer.from("1"));
  const broker = app.broker;
  const consumerOf = broker.consumer.bind(broker);
  broker.consumer = (options) => {
    const inner = consumerOf(options);
    const wrap = (d) => ({
      get queue() {
        return d.queue;
      },
      get deliveryId() {
        return d.deliveryId;
      },
      get body() {
        return d.body;
      },
      get deliveryCount() {
        return d.deliveryCount;
      },
      ack: () => d.ack().then(signal),
      retry: (body, delayMs) => d.retry(body, delayMs),
      deadLetter: (error) => d.deadLetter(error),
      release: () => d.release(),
    });
    return {
      async fetch(max, sig) {
        return (await inner.fetch(max, sig)).map(wrap);
      },
      get inFlight() {
        return inner.inFlight;
      },
      close: () => inner.close(),
    };
  };
  return async () => {
    await ch.close().catch(() => {});
    await conn.close().catch(() => {});
  };
}

export async function startWorker({ prefix, system }) {
  const variant = variantOf(system);
  const { app } = await makeApp(prefix, variant);
  const closeSignal = variant === "none" ? await instrumentAcks(app, prefix) : async () => {};
  const worker = new Worker(app, { concurrency: CONCURRENCY, logger: silentLogger });
  await worker.start();
  return {
    async close() {
      await worker.stop(5);
      await closeSignal();
    },
  };
}

async function doneCounter(prefix) {
  const amqp = (await import("amqplib")).default;
  const conn = await amqp.connect(AMQP_URL);
  const ch = await conn.createChannel();
  const done = `${prefix}.done`;
  await ch.assertQueue(done, { durable: false });
  let count = 0;
  let target = Number.POSITIVE_INFINITY;
  let wake = () => {};
  await ch.consume(
    done,
    () => {
      count++;
      if (count >= target) wake();
    },
    { noAck: true },
  );
  return {
    /** Resolves once `n` more done signals arrived (counted from the call). */
    expect(n) {
      const start = count;
      target = start + n;
      return {
        start,
        promise: new Promise((res) => {
          wake = res;
          if (count >= target) res();
        }),
      };
    },
    get count() {
      return count;
    },
    async close() {
      await ch.close().catch(() => {});
      await conn.close().catch(() => {});
    },
  };
}

export async function createProducer({ prefix, system }) {
  const variant = variantOf(system);
  const { app, work } = await makeApp(prefix, variant);
  await app.connect();
  const counter = variant === "none" ? await doneCounter(prefix) : null;
  return {
    queues: queuesOf(prefix),
    async runBatch(w, n) {
      const expected = counter?.expect(n);
      const t0 = now();
      const handles = await Promise.all(Array.from({ length: n }, (_, i) => work.delay(w, i)));
      const t1 = now();
      let sample = null;
      if (expected) {
        await expected.promise;
        sample = counter.count - expected.start;
      } else {
        const vals = await Promise.all(handles.map((h) => h.get({ timeout: GET_TIMEOUT_S })));
        sample = vals[n - 1];
      }
      const t2 = now();
      return { enqueueMs: t1 - t0, resultMs: t2 - t1, sample };
    },
    async close() {
      await counter?.close();
      await app.disconnect();
    },
  };
}

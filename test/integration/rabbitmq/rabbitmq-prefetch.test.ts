/**
 * RabbitMQ prefetch bound under a backlog of trivial jobs: a consumer goes idle between
 * batches, cancels its subscription and subscribes again; it must never hold more than its
 * capacity (in flight) plus its prefetch (buffered), and RabbitMQ's own count of the channel's
 * unacknowledged messages must stay within the same bound. A consumer told to stop fetching
 * (a worker draining its running jobs) takes no more messages meanwhile.
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { afterEach, describe, expect, it } from "vitest";
import type { Delivery } from "../../../src/brokers/broker.js";
import type { RabbitMqBroker } from "../../../src/brokers/rabbitmq/index.js";
import type { RabbitMqConsumer } from "../../../src/brokers/rabbitmq/rabbitmq-consumer.js";
import { skipUnless, uniqueName } from "../../helpers/services.js";
import { deleteQueues, testBroker } from "./rabbitmq-test-utils.js";

const skip = await skipUnless("rabbitmq");
const run = promisify(execFile);

describe.skipIf(skip)("rabbitmq prefetch bound", () => {
  const brokers: RabbitMqBroker[] = [];
  afterEach(async () => {
    for (const broker of brokers.splice(0)) {
      await broker.disconnect();
      await deleteQueues(broker);
    }
  });

  it("a consumer draining a backlog holds at most capacity + prefetch messages", async () => {
    const broker = testBroker();
    brokers.push(broker);
    await broker.connect();
    const queue = uniqueName("q");
    const jobs = 3000;
    const capacity = 8;
    for (let sent = 0; sent < jobs; sent += 500) {
      await Promise.all(
        Array.from({ length: 500 }, (_, k) => broker.publish(queue, { id: `t${sent + k}`, body: `{"i":${sent + k}}` })),
      );
    }
    const consumer = broker.consumer({ queues: [queue], consumerId: "w1", capacity }) as RabbitMqConsumer;
    // RabbitMQ's view: unacknowledged messages of this consumer's channels, sampled meanwhile
    const workQueue = `${broker.settings.prefix}.${queue}`;
    let serverPeak = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const { stdout } = await run("rabbitmqctl", [
          "list_queues",
          "-q",
          "--no-table-headers",
          "name",
          "messages_unacknowledged",
        ]);
        for (const line of stdout.split("\n")) {
          const [name, unacked] = line.trim().split(/\s+/);
          if (name === workQueue) serverPeak = Math.max(serverPeak, Number(unacked));
        }
      }
    })();

    // a worker's loop: fetch only free slots, run trivially, ack
    let held = 0;
    let done = 0;
    const running = new Set<Promise<void>>();
    const observe = () => {
      held = Math.max(held, consumer.bufferedCount(queue) + consumer.pendingCount(queue));
    };
    const deadline = Date.now() + 60_000;
    while (done < jobs && Date.now() < deadline) {
      const free = capacity - running.size;
      if (free === 0) {
        await Promise.race(running);
        continue;
      }
      const deliveries: Delivery[] = await consumer.fetch(free, AbortSignal.timeout(5000));
      observe();
      for (const delivery of deliveries) {
        const job = (async () => {
          await Promise.resolve();
          observe();
          await delivery.ack();
          done += 1;
        })();
        running.add(job);
        void job.finally(() => running.delete(job));
      }
    }
    await Promise.all(running);
    sampling = false;
    await sampler;
    await consumer.close();

    expect(done).toBe(jobs);
    expect(held, "messages held by the consumer (in flight + buffered)").toBeLessThanOrEqual(2 * capacity);
    expect(serverPeak, "RabbitMQ's unacknowledged count of the queue").toBeLessThanOrEqual(2 * capacity);
  }, 90_000);

  it("a consumer told to stop fetching (a stopping worker) takes no more while its jobs drain", async () => {
    const broker = testBroker();
    brokers.push(broker);
    await broker.connect();
    const queue = uniqueName("q");
    await Promise.all(Array.from({ length: 10 }, (_, i) => broker.publish(queue, { id: `t${i}`, body: `{"i":${i}}` })));
    const stopping = broker.consumer({ queues: [queue], consumerId: "w1", capacity: 2 }) as RabbitMqConsumer;
    const stop = new AbortController();
    const running: Delivery[] = [];
    while (running.length < 2) running.push(...(await stopping.fetch(2 - running.length, stop.signal)));
    stop.abort();
    stopping.stopFetching(); // as a stopping worker does; its two jobs still run
    for (const delivery of running) await delivery.ack();
    // Another worker gets the eight others, each on its first delivery, while the first one
    // is still open (its channel would give back anything pushed to it only when it closes).
    const other = broker.consumer({ queues: [queue], consumerId: "w2", capacity: 8 });
    const taken: Delivery[] = [];
    const deadline = Date.now() + 10_000;
    while (taken.length < 8 && Date.now() < deadline) taken.push(...(await other.fetch(8, AbortSignal.timeout(2000))));
    expect(taken.map((d) => d.deliveryCount)).toEqual(Array(8).fill(1));
    expect(stopping.bufferedCount(queue)).toBe(0);
    for (const delivery of taken) await delivery.ack();
    await other.close();
    await stopping.close();
  }, 30_000);
});

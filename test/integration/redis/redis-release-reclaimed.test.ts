/**
 * A delivery released while the consumer goes on fetching: `release.lua` (on the command
 * connection) makes the entry claimable at once, so the consumer's own reclaim (on its reader
 * connection) may take it back before the release's reply has come in, while the released
 * delivery is still held here. That entry is then pending for this consumer and held by nobody:
 * once the release is done, the next fetch takes it back, its delivery count kept, instead of
 * leaving it a whole lease and counting one more delivery.
 */
import { Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import { RedisBroker } from "../../../src/brokers/redis/index.js";
import { MessageCodec } from "../../../src/core/message.js";
import { encodeTask } from "../../contract/contract-helpers.js";
import { useCleanups } from "../../helpers/cleanups.js";
import { SERVICES, skipUnless, uniqueName } from "../../helpers/services.js";
import { deletePrefix, rawRedis, testPrefix } from "./redis-test-keys.js";

const skip = await skipUnless("redis");

describe.skipIf(skip)("redis consumer: an entry its own reclaim takes back during a release", () => {
  const cleanups = useCleanups();

  it("is fetched again once the release is done, its delivery count kept", async () => {
    const prefix = testPrefix();
    cleanups.push(() => deletePrefix(prefix));
    const main = new Redis(SERVICES.redis, { enableAutoPipelining: true });
    cleanups.push(async () => void main.disconnect());
    // claimMinIdle 200 ms: a released entry is claimable at once, a reclaim is due every 100 ms
    const broker = new RedisBroker({ client: main, keyPrefix: prefix, env: {}, claimMinIdleMs: 200 });
    broker.bind({ codec: new MessageCodec() });
    await broker.connect();
    cleanups.push(() => broker.disconnect());
    const raw = rawRedis();
    cleanups.push(async () => void raw.disconnect());
    const stream = `${prefix}:stream:{q}`;
    const group = broker.settings.consumerGroup;
    const owner = async () => ((await raw.xpending(stream, group, "-", "+", 1)) as string[][])[0]?.[1];

    const task = encodeTask(new MessageCodec());
    await broker.publish("q", { id: task.id, body: task.body });
    const consumerId = uniqueName("c-");
    const consumer = broker.consumer({ queues: ["q"], consumerId });
    cleanups.push(() => consumer.close());
    const [delivery] = await consumer.fetch(1, AbortSignal.timeout(5000));
    expect(delivery?.deliveryCount).toBe(1);

    // The release's reply is held back (as a busy command connection's may come after the
    // reader's): release.lua runs, its answer waits until `answer()`.
    let answer: () => void = () => undefined;
    const answered = new Promise<void>((resolve) => {
      answer = resolve;
    });
    type Call = (this: unknown, ...args: unknown[]) => Promise<unknown>;
    const scripts = main as unknown as Record<string, Call>;
    const release = scripts.chicoryRelease as Call;
    // (auto-pipelining calls the method again on its pipeline: only the client's own call waits)
    scripts.chicoryRelease = function (this: unknown, ...args: unknown[]) {
      const reply = release.apply(this, args);
      return this === main ? reply.then((r) => answered.then(() => r)) : reply;
    };
    const released = delivery?.release({ countDelivery: true });
    while ((await owner()) !== "chicory:released") await new Promise((resolve) => setImmediate(resolve));
    // the consumer goes on fetching: its reclaim takes the entry back while the release is out
    while ((await owner()) !== consumerId) {
      expect(await consumer.fetch(1, AbortSignal.timeout(150))).toEqual([]);
    }
    answer();
    await released;
    scripts.chicoryRelease = release;

    const [again] = await consumer.fetch(1, AbortSignal.timeout(5000));
    expect(again?.body).toBe(task.body);
    // the release counted the run (1), the reclaim's claim made it 2: before, the entry waited
    // for its lease and a second claim made it 3
    expect(again?.deliveryCount).toBe(2);
    await again?.ack();
  });
});

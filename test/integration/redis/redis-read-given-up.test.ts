/**
 * A read of the consumer's reader connection that gets no reply for its block time + 5 s is
 * ended by the client (ioredis's `blockingTimeout`), which resolves it with nothing, reads
 * without `BLOCK` included. Redis may still run it later and hand it entries: they are then
 * pending for this consumer, which never saw them. The next fetch takes them back at once, with
 * their delivery count kept, instead of leaving them until the lease expires.
 */
import { describe, expect, it } from "vitest";
import { RedisBroker } from "../../../src/brokers/redis/index.js";
import { MessageCodec } from "../../../src/core/message.js";
import { encodeTask } from "../../contract/contract-helpers.js";
import { useCleanups } from "../../helpers/cleanups.js";
import { SERVICES, skipUnless, uniqueName } from "../../helpers/services.js";
import { redisProxy } from "./redis-proxy.js";
import { deletePrefix, rawRedis, testPrefix } from "./redis-test-keys.js";

const skip = await skipUnless("redis");

/**
 * A proxy to the test Redis that, once `arm()`ed, holds back the next non-blocking
 * `XREADGROUP` a consumer's reader connection sends (and what follows it) for `holdMs`.
 */
async function holdingProxy(
  holdMs: number,
): Promise<{ port: number; arm: () => Promise<void>; close: () => Promise<void> }> {
  const target = new URL(SERVICES.redis);
  let armed = false;
  let onHeld: () => void = () => undefined;
  const proxy = await redisProxy(target.hostname, Number(target.port || 6379), {
    fromClient: () => {
      let isReader = false;
      let held: Buffer[] | undefined;
      return (chunk, forward) => {
        const text = chunk.toString("latin1");
        if (text.includes("chicory-consumer-")) isReader = true;
        if (armed && held === undefined && isReader && text.includes("XREADGROUP") && !text.includes("BLOCK")) {
          armed = false;
          held = [];
          onHeld();
          setTimeout(() => {
            for (const b of held ?? []) forward(b);
            held = undefined;
          }, holdMs);
        }
        if (held !== undefined) held.push(chunk);
        else forward(chunk);
      };
    },
  });
  return {
    ...proxy,
    arm: () =>
      new Promise<void>((resolve) => {
        armed = true;
        onHeld = resolve;
      }),
  };
}

describe.skipIf(skip)("redis consumer: a read the client gave up on", () => {
  const cleanups = useCleanups();

  it("entries Redis hands to a non-blocking read after the client ended it are fetched at once, delivery count kept", {
    timeout: 30_000,
  }, async () => {
    const proxy = await holdingProxy(6500); // longer than the read's limit: blockMs 500 + 5 s
    cleanups.push(() => proxy.close());
    const prefix = testPrefix();
    cleanups.push(() => deletePrefix(prefix));
    const url = new URL(SERVICES.redis);
    url.host = `127.0.0.1:${proxy.port}`;
    const broker = new RedisBroker({
      url: url.toString(),
      keyPrefix: prefix,
      env: {},
      blockMs: 500,
      claimMinIdleMs: 60_000,
    });
    await broker.connect();
    cleanups.push(() => broker.disconnect());
    // two queues: every fetch starts with a read without BLOCK
    const consumer = broker.consumer({ queues: ["qa", "qb"], consumerId: uniqueName("c-") });
    cleanups.push(() => consumer.close());
    const raw = rawRedis();
    cleanups.push(async () => void raw.disconnect());
    const codec = new MessageCodec();
    const held = proxy.arm();
    const added = held.then(async () => {
      for (let i = 0; i < 3; i++) await raw.xadd(`${prefix}:stream:{qa}`, "*", "data", encodeTask(codec).body);
    });
    const counts: number[] = [];
    const deadline = Date.now() + 20_000; // before: only after the 60 s lease, each counted twice
    while (counts.length < 3 && Date.now() < deadline) {
      for (const d of await consumer.fetch(4, AbortSignal.timeout(2000))) {
        counts.push(d.deliveryCount);
        await d.ack();
      }
    }
    await added;
    expect(counts).toEqual([1, 1, 1]);
  });
});

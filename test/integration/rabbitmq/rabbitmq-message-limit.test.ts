/**
 * A retry that RabbitMQ refuses for its size (its `max_message_size`, lowered here to 2 MiB with
 * `rabbitmqctl` for the test's own connections and restored after). AMQP does not tell a
 * client the limit, so the first message over it closes the publish channel; the publisher
 * learns the limit from the reason and refuses later ones before sending them:
 * - a retry whose `lastError` pushes it over the limit goes without it, and every retry runs;
 * - one that does not fit even without it fails its task after one run (`MessageTooLarge`);
 * - a `delay()` over the limit fails alone: the publishes sent around it are confirmed.
 * While it is lowered, other test files' channels may be held to it too: none sends a message
 * over 2 MiB but the 129 MiB one of `rabbitmq-broker.test.ts`, which any limit under 128 MiB
 * refuses the same way (its assertions hold for any such limit).
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import { RabbitMqBroker } from "../../../src/brokers/rabbitmq/index.js";
import { Chicory, MessageTooLargeError } from "../../../src/index.js";
import { useCleanups } from "../../helpers/cleanups.js";
import { SERVICES, skipUnless, uniqueName } from "../../helpers/services.js";
import { retriesOverLimit } from "../retries-over-limit.js";
import { deleteQueues, hasRabbitmqctl } from "./rabbitmq-test-utils.js";

const run = promisify(execFile);
const skip = (await skipUnless("rabbitmq")) || (await skipUnless("redis")) || !(await hasRabbitmqctl());

/** The server's limit set here. */
const LIMIT = 2 * 1024 * 1024;

async function setMaxMessageSize(bytes: number): Promise<void> {
  await run("rabbitmqctl", ["eval", `application:set_env(rabbit, max_message_size, ${bytes}).`]);
}

describe.skipIf(skip)("rabbitmq: a retry over the server's max_message_size", () => {
  const cleanups = useCleanups();

  /** An app (RabbitMQ broker, Redis backend) on the lowered server. */
  async function start(label: string): Promise<Chicory> {
    const { stdout } = await run("rabbitmqctl", ["eval", "application:get_env(rabbit, max_message_size)."]);
    const before = Number(/\{ok,(\d+)\}/.exec(stdout)?.[1] ?? 134217728);
    await setMaxMessageSize(LIMIT);
    cleanups.push(() => setMaxMessageSize(before));
    const name = uniqueName(label.replace(/_/g, "-"));
    const app = new Chicory({
      broker: new RabbitMqBroker({ url: SERVICES.rabbitmq, prefix: name, connectionName: name }),
      backend: SERVICES.redis,
      config: { maxMessageBytes: 8 * LIMIT, env: { CHICORY_BACKEND_REDIS_KEY_PREFIX: name } },
    });
    cleanups.push(async () => {
      await app.disconnect();
      await deleteQueues(app.broker as RabbitMqBroker);
      const redis = new Redis(SERVICES.redis);
      const keys = await redis.keys(`${name}:*`);
      if (keys.length > 0) await redis.del(...keys);
      redis.disconnect();
    });
    return app;
  }

  it("a message over the limit fails alone: the publishes sent with it, before and after, are confirmed", async () => {
    const app = await start("alone");
    const echo = app.task({ name: "echo" }, async (text: string) => text.length);
    await echo.delay("warm"); // the queue is declared; the next publishes leave together
    // Sent in one turn: on a channel shared with the long one, those after it would be dropped
    // with the channel it closes (and fail, outcome unknown).
    const small = Array.from({ length: 40 }, (_, i) => `small ${i}`);
    const sent = [
      ...small.slice(0, 20).map((text) => echo.delay(text)),
      echo.delay("x".repeat(LIMIT + 1024)),
      ...small.slice(20).map((text) => echo.delay(text)),
    ];
    const settled = await Promise.allSettled(sent);
    const refused = settled.filter((r) => r.status === "rejected");
    expect(refused).toHaveLength(1);
    expect((refused[0] as PromiseRejectedResult).reason).toBeInstanceOf(MessageTooLargeError);
    expect(String((refused[0] as PromiseRejectedResult).reason.message)).toContain(String(LIMIT));
    expect(settled[20]?.status).toBe("rejected");
    expect(await app.broker.getQueueSize()).toBe(1 + small.length);
  });

  for (const deliveryMode of ["at_least_once", "at_most_once"] as const) {
    retriesOverLimit({
      deliveryMode,
      limit: LIMIT,
      source: "RabbitMQ's max_message_size",
      cleanups,
      timeoutMs: 60_000,
      start,
    });
  }
});

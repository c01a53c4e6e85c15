/**
 * A retry that RabbitMQ refuses for its size (its `max_message_size`, lowered here to 2 MiB with
 * `rabbitmqctl` for the test's own connections and restored after). AMQP does not tell a
 * client the limit, so the first message over it closes the publish channel; the publisher
 * learns the limit from the reason and refuses later ones before sending them:
 * - a retry whose `lastError` pushes it over the limit goes without it, and every retry runs;
 * - one that does not fit even without it fails its task after one run (`MessageTooLarge`).
 * While it is lowered, other test files' channels may be held to it too: none sends a message
 * over 2 MiB but the 129 MiB one of `rabbitmq-broker.test.ts`, which any limit under 128 MiB
 * refuses the same way (its assertions hold for any such limit).
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import { RabbitMqBroker } from "../../../src/brokers/rabbitmq/index.js";
import { Chicory, silentLogger, TaskFailedError, Worker } from "../../../src/index.js";
import { useCleanups } from "../../helpers/cleanups.js";
import { SERVICES, skipUnless, uniqueName } from "../../helpers/services.js";
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

  for (const deliveryMode of ["at_least_once", "at_most_once"] as const) {
    /** A worker (RabbitMQ broker, Redis backend) with a task that always fails with a 2,000-character message. */
    async function startFlaky() {
      const { stdout } = await run("rabbitmqctl", ["eval", "application:get_env(rabbit, max_message_size)."]);
      const before = Number(/\{ok,(\d+)\}/.exec(stdout)?.[1] ?? 134217728);
      await setMaxMessageSize(LIMIT);
      cleanups.push(() => setMaxMessageSize(before));
      const name = uniqueName("limit");
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
      let runs = 0;
      const flaky = app.task(
        { name: "flaky", deliveryMode, retryPolicy: { maxRetries: 3, retryDelay: 0 } },
        async (text: string) => {
          runs++;
          throw new Error(`failed on ${text.length} characters: ${"e".repeat(2000)}`);
        },
      );
      const worker = new Worker(app, { concurrency: 2, logger: silentLogger });
      await worker.start();
      cleanups.push(() => worker.stop(5));
      return { app, flaky, worker, runs: () => runs };
    }

    /** The length of a string argument that makes flaky's first message `bytes` long. */
    function argumentFor(app: Chicory, bytes: number): number {
      const empty = app.codec.encode({
        v: 1,
        id: "00000000-0000-4000-8000-000000000000", // as long as the ids delay() makes
        name: "flaky",
        args: [""],
        retries: 0,
        eta: null,
        priority: null,
        firstFailureAt: null,
        lastError: null,
      });
      return bytes - Buffer.byteLength(empty);
    }

    it(`a retry whose lastError pushes it over the limit goes without it (${deliveryMode})`, {
      timeout: 60_000,
    }, async () => {
      const { app, flaky, worker, runs } = await startFlaky();
      const length = argumentFor(app, LIMIT - 1024); // 1 KiB to spare: not for the error
      const failed = await (await flaky.delay("x".repeat(length))).get({ timeout: 30 }).catch((e: unknown) => e);
      expect(failed).toBeInstanceOf(TaskFailedError);
      expect(failed).toMatchObject({
        errorType: "Error",
        remoteMessage: `failed on ${length} characters: ${"e".repeat(2000)}`,
      });
      expect(runs()).toBe(4); // every retry ran
      expect(await app.broker.getQueueSize()).toBe(0);
      expect(worker.getStats().tasksFailed).toBe(1);
    });

    it(`a retry that does not fit even without its lastError fails its task after one run (${deliveryMode})`, {
      timeout: 60_000,
    }, async () => {
      const { app, flaky, worker, runs } = await startFlaky();
      // 10 bytes to spare: the next attempt's eta and firstFailureAt take more
      const length = argumentFor(app, LIMIT - 10);
      const handle = await flaky.delay("x".repeat(length));
      const failed = await handle.get({ timeout: 30 }).catch((e: unknown) => e);
      expect(failed).toBeInstanceOf(TaskFailedError);
      expect(failed).toMatchObject({
        errorType: "MessageTooLarge",
        remoteMessage: expect.stringMatching(
          new RegExp(
            `^cannot retry: the next attempt's message is \\d+ bytes, over the limit of ${LIMIT} bytes \\(RabbitMQ's max_message_size; .*\\); the failure that asked for the retry: Error: failed on ${length} characters`,
          ),
        ),
      });
      expect(runs()).toBe(1);
      expect(await handle.state()).toBe("FAILURE");
      expect(await app.broker.getQueueSize()).toBe(0);
      expect(worker.getStats().tasksFailed).toBe(1);
    });
  }
});

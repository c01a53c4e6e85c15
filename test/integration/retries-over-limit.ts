/**
 * The tests of a retry that the broker's server refuses for its size, shared by the brokers
 * whose server has such a limit (Redis's `proto-max-bulk-len`, RabbitMQ's `max_message_size`):
 * - a retry whose `lastError` pushes it over the limit goes without it, and every retry runs;
 * - one that does not fit even without it fails its task after one run (`MessageTooLarge`).
 */
import { expect, it } from "vitest";
import { type Chicory, type DeliveryMode, silentLogger, TaskFailedError, Worker } from "../../src/index.js";
import { eventually } from "../contract/contract-helpers.js";
import type { Cleanups } from "../helpers/cleanups.js";

export interface RetriesOverLimitOptions {
  readonly deliveryMode: DeliveryMode;
  /** The server's limit, in bytes, once `start` resolved. */
  readonly limit: number;
  /** How the refusal names the limit's source, as a regular expression's text. */
  readonly source: string;
  readonly cleanups: Cleanups;
  /** An app whose broker's server takes at most `limit` bytes in a message (`label` tells the tests apart). */
  start(label: string): Promise<Chicory>;
  /** Per test, in ms. */
  readonly timeoutMs: number;
}

/** Registers both tests for one delivery mode (see module doc). */
export function retriesOverLimit(options: RetriesOverLimitOptions): void {
  const { deliveryMode, limit, cleanups } = options;

  /** A worker with a task that always fails with a 2,000-character message. */
  async function startFlaky(label: string) {
    const app = await options.start(`${label}-${deliveryMode}`);
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

  /** Nothing left pending or queued, and the worker counted one failed task. */
  async function expectSettled(app: Chicory, worker: Worker): Promise<void> {
    await eventually(async () => (await app.broker.getPendingCount()) === 0);
    expect(await app.broker.getQueueSize()).toBe(0);
    expect(worker.getStats().tasksFailed).toBe(1);
  }

  it(`a retry whose lastError pushes it over the limit goes without it (${deliveryMode})`, {
    timeout: options.timeoutMs,
  }, async () => {
    const { app, flaky, worker, runs } = await startFlaky("lasterror");
    const length = argumentFor(app, limit - 1024); // 1 KiB to spare: not for the error
    const failed = await (await flaky.delay("x".repeat(length))).get({ timeout: 20 }).catch((e: unknown) => e);
    expect(failed).toBeInstanceOf(TaskFailedError);
    expect(failed).toMatchObject({
      errorType: "Error",
      remoteMessage: `failed on ${length} characters: ${"e".repeat(2000)}`,
    });
    expect(runs()).toBe(4); // every retry ran
    await expectSettled(app, worker);
  });

  it(`a retry that does not fit even without its lastError fails its task after one run (${deliveryMode})`, {
    timeout: options.timeoutMs,
  }, async () => {
    const { app, flaky, worker, runs } = await startFlaky("nofit");
    // 10 bytes to spare: the next attempt's eta and firstFailureAt take more
    const length = argumentFor(app, limit - 10);
    const handle = await flaky.delay("x".repeat(length));
    const failed = await handle.get({ timeout: 20 }).catch((e: unknown) => e);
    expect(failed).toBeInstanceOf(TaskFailedError);
    expect(failed).toMatchObject({
      errorType: "MessageTooLarge",
      remoteMessage: expect.stringMatching(
        new RegExp(
          `^cannot retry: the next attempt's message is \\d+ bytes, over the limit of ${limit} bytes \\(${options.source}.*\\); the failure that asked for the retry: Error: failed on ${length} characters`,
        ),
      ),
    });
    expect(runs()).toBe(1);
    expect(await handle.state()).toBe("FAILURE");
    await expectSettled(app, worker);
  });
}

/**
 * A task still running when Redis loses its stream entry (a restart without persistence, the
 * stream deleted): nobody else will run it, so its run goes on and its result is stored, with
 * the result backend on another server (here in memory) and beside the broker alike. Before,
 * the next lease renewal took the entry as taken by another worker: the run was aborted (or its
 * outcome dropped) and `get()` waited until its timeout.
 */
import { describe, expect, it } from "vitest";
import type { Backend } from "../../../src/backends/backend.js";
import { RedisBackend } from "../../../src/backends/redis/index.js";
import { RedisBroker } from "../../../src/brokers/redis/index.js";
import { Chicory, MemoryBackend, type TaskContext, Worker } from "../../../src/index.js";
import { capturingLogger } from "../../helpers/capturing-logger.js";
import { useCleanups } from "../../helpers/cleanups.js";
import { SERVICES, skipUnless, uniqueName } from "../../helpers/services.js";
import { deletePrefix, rawRedis, testPrefix } from "./redis-test-keys.js";

const skip = await skipUnless("redis");

describe.skipIf(skip)("redis: a running task whose stream entry Redis lost", () => {
  const cleanups = useCleanups();

  /** An app on a fresh prefix with a short lease (renewals every 200 ms find a loss while a task runs). */
  function appWith(backendOf: (keyPrefix: string) => Backend) {
    const keyPrefix = testPrefix();
    const queue = uniqueName("q");
    const raw = rawRedis();
    const app = new Chicory({
      broker: new RedisBroker({ url: SERVICES.redis, keyPrefix, env: {}, claimMinIdleMs: 600, blockMs: 200 }),
      backend: backendOf(keyPrefix),
      config: { env: {} },
    });
    cleanups.push(async () => {
      await app.disconnect();
      await deletePrefix(keyPrefix);
      raw.disconnect();
    });
    return { keyPrefix, queue, raw, app };
  }

  async function lostWhileRunning(backendOf: (keyPrefix: string) => Backend) {
    const { keyPrefix, queue, raw, app } = appWith(backendOf);
    let openGate: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => {
      openGate = resolve;
    });
    let onStarted: () => void = () => undefined;
    const started = new Promise<void>((resolve) => {
      onStarted = resolve;
    });
    let runs = 0;
    const long = app.task({ name: "long", queue }, async () => {
      runs++;
      onStarted();
      await gate;
      return "done";
    });
    const { logger, lines, until } = capturingLogger();
    const worker = new Worker(app, { queue, concurrency: 2, logger });
    await worker.start();
    cleanups.push(() => worker.stop(5));
    const result = await long.delay();
    await started;
    await raw.del(`${keyPrefix}:stream:{${queue}}`); // the entry and its group, as an empty restart leaves them
    await until(/left the stream, held by no consumer/);
    openGate();
    expect(await result.get({ timeout: 10 })).toBe("done");
    expect(runs).toBe(1);
    return lines;
  }

  it("with the result backend elsewhere, stores the run's result", async () => {
    const lines = await lostWhileRunning(() => new MemoryBackend());
    expect(lines.some((l) => /no longer holds this job's message .* its outcome is stored/.test(l.message))).toBe(true);
  });

  it("with the result backend beside the broker, stores the run's result with its ack", async () => {
    await lostWhileRunning((keyPrefix) => new RedisBackend({ url: SERVICES.redis, keyPrefix, env: {} }));
  });

  it("aborts the run, and stores nothing, when a worker that took the message over has finished the task", async () => {
    const backend = new MemoryBackend();
    const { keyPrefix, queue, raw, app } = appWith(() => backend);
    let onStarted: () => void = () => undefined;
    const started = new Promise<void>((resolve) => {
      onStarted = resolve;
    });
    let onAborted: (reason: string) => void = () => undefined;
    const aborted = new Promise<string>((resolve) => {
      onAborted = resolve;
    });
    const long = app.task({ name: "long", queue, context: true }, async (ctx: TaskContext) => {
      onStarted();
      await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve, { once: true }));
      onAborted(String((ctx.signal.reason as Error).message));
      return "this run's";
    });
    const { logger, until } = capturingLogger();
    const worker = new Worker(app, { queue, concurrency: 2, logger });
    await worker.start();
    cleanups.push(() => worker.stop(5));
    const result = await long.delay();
    await started;
    // The heir (after this worker stalled past its lease) took the entry, stored its result, acked it.
    const stream = `${keyPrefix}:stream:{${queue}}`;
    const entryId = ((await raw.xrange(stream, "-", "+")) as Array<[string, string[]]>)[0]?.[0] ?? "";
    await backend.storeResult({
      taskId: result.taskId,
      state: "SUCCESS",
      result: "the heir's",
      updatedAt: new Date().toISOString(),
    });
    // in one step, so that no renewal sees the entry pending for the heir
    await raw.eval(
      "redis.call('XCLAIM', KEYS[1], ARGV[1], 'heir', 0, ARGV[2], 'JUSTID'); redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]); return redis.call('XDEL', KEYS[1], ARGV[2])",
      1,
      stream,
      "chicory-workers",
      entryId,
    );
    await until(/left the stream, held by no consumer/);
    expect(await result.get({ timeout: 10 })).toBe("the heir's");
    // the run was told (ctx.signal), and its outcome not stored over the heir's
    expect(await aborted).toMatch(/another worker that took this message over finished the task/);
    expect((await backend.getResult(result.taskId))?.result).toBe("the heir's");
  });
});

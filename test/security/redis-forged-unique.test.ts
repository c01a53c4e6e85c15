/**
 * With signing on, a forged entry written straight into a Redis stream (no key, so unsigned or
 * badly signed, or not even decodable) claiming the task id of a genuine unique job must not
 * free that id: the genuine job keeps its unique marker until it settles, so a re-publish of
 * its id (an idempotent retry of a publish) is still refused.
 */
import { Redis } from "ioredis";
import { afterEach, describe, expect, it } from "vitest";
import { RedisBroker } from "../../src/brokers/redis/index.js";
import { Chicory, MemoryBackend, Worker } from "../../src/index.js";
import { SERVICES, skipUnless, uniqueName } from "../helpers/services.js";
import { eventually, recordingLogger } from "./security-helpers.js";

const skip = await skipUnless("redis");
const KEY = "forged-unique-test-key";

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()?.();
});

const unsigned = (id: string) => JSON.stringify({ v: 1, id, name: "work", args: [], retries: 0 });
const badlySigned = (id: string) => JSON.stringify({ v: 1, id, name: "work", args: [], retries: 0, sig: "00" });
const garbage = () => "not json at all";

/** A signing app on a fresh key prefix, its task `work`, and a raw client (all cleaned up). */
function signingApp() {
  const prefix = uniqueName("chforge");
  const raw = new Redis(SERVICES.redis, { maxRetriesPerRequest: null });
  cleanups.push(async () => {
    const keys = await raw.keys(`${prefix}:*`);
    if (keys.length > 0) await raw.del(...keys);
    raw.disconnect();
  });
  const app = new Chicory({
    broker: new RedisBroker({ url: SERVICES.redis, keyPrefix: prefix, blockMs: 200, env: {} }),
    backend: new MemoryBackend(),
    config: { env: {}, signingKey: KEY },
  });
  const work = app.task({ name: "work" }, async (label: string) => label);
  return { prefix, raw, app, work };
}

describe.skipIf(skip)("a forged entry claiming a genuine unique job's task id (signing on, Redis)", () => {
  it.each([
    { dlq: true, kind: "unsigned", body: unsigned },
    { dlq: false, kind: "badly signed", body: badlySigned },
    { dlq: true, kind: "undecodable", body: garbage },
  ])("$kind, DLQ $dlq: settling it does not free the id, and a re-publish is still refused", async ({ dlq, body }) => {
    const { prefix, raw, app, work } = signingApp();
    cleanups.push(() => app.disconnect());
    // the genuine unique job, due in an hour: it holds its id's marker meanwhile
    await work.applyAsync(["genuine"], { taskId: "order-42", countdown: 3600 });
    const stream = `${prefix}:stream:{default}`;
    await raw.xadd(stream, "*", "data", body("order-42"), "id", "order-42");
    const worker = new Worker(app, { concurrency: 1, useDeadLetterQueue: dlq, logger: recordingLogger() });
    await worker.start();
    cleanups.push(() => worker.stop(2));
    // the forged entry is rejected and settled
    await eventually(async () => (await raw.xlen(stream)) === 0 && (await app.broker.getPendingCount("default")) === 0);
    expect(await app.broker.getDlqCount("default")).toBe(dlq ? 1 : 0);
    expect(await raw.sismember(`${prefix}:unique:{default}`, "order-42")).toBe(1);
    // an idempotent re-publish of the genuine job: refused (only the delayed one is queued)
    await work.applyAsync(["again"], { taskId: "order-42" });
    expect(await app.broker.getQueueSize("default")).toBe(1);
    expect(await raw.xlen(stream)).toBe(0);
  });

  it("a copy of a genuinely signed message of another task, given the id field of a genuine unique job, frees nothing and takes no delayed slot", async () => {
    const { prefix, raw, app, work } = signingApp();
    let flakyRuns = 0;
    app.task({ name: "flaky", retryPolicy: { maxRetries: 1, retryDelay: 3600, jitter: false } }, async () => {
      flakyRuns++;
      throw new Error("fails");
    });
    cleanups.push(() => app.disconnect());
    await work.applyAsync(["genuine 42"], { taskId: "order-42", countdown: 3600 });
    await work.applyAsync(["genuine 43"], { taskId: "order-43", countdown: 3600 });
    const genuine43 = await raw.hget(`${prefix}:delayed-data:{default}`, "order-43");
    // signed bodies someone with Redis access copied, added back next to another job's id
    const copy = (id: string, name: string) =>
      app.codec.encode({
        v: 1,
        id,
        name,
        args: ["copied"],
        retries: 0,
        eta: null,
        priority: null,
        firstFailureAt: null,
        lastError: null,
      });
    const stream = `${prefix}:stream:{default}`;
    await raw.xadd(stream, "*", "data", copy("x-1", "work"), "id", "order-42");
    await raw.xadd(stream, "*", "data", copy("x-2", "flaky"), "id", "order-43");
    const worker = new Worker(app, { concurrency: 1, logger: recordingLogger() });
    await worker.start();
    cleanups.push(() => worker.stop(2));
    await eventually(async () => (await raw.xlen(stream)) === 0 && (await app.broker.getPendingCount("default")) === 0);
    expect(flakyRuns).toBe(1); // the copy ran (a documented limit of copies), and retries in an hour
    // before: the ack dropped order-42's marker, and the retry replaced order-43's delayed body
    expect(await raw.sismember(`${prefix}:unique:{default}`, "order-42")).toBe(1);
    expect(await raw.hget(`${prefix}:delayed-data:{default}`, "order-43")).toBe(genuine43);
    expect(await raw.hexists(`${prefix}:delayed-data:{default}`, "x-2")).toBe(1); // the copy's retry, under its own id
    await work.applyAsync(["again"], { taskId: "order-42" });
    expect(await raw.xlen(stream)).toBe(0); // still refused: the genuine order-42 is queued
  });
});

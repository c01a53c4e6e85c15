import type { StandardSchemaV1 } from "@standard-schema/spec";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { Delivery } from "../../src/brokers/broker.js";
import { Chicory, MemoryBackend, MemoryBroker, type TaskContext } from "../../src/index.js";
import { runDelivery } from "../../src/worker/runner.js";
import { taskMessage } from "../contract/contract-helpers.js";
import { fakeDelivery } from "../helpers/fake-delivery.js";

const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown) => void unhandled.push(reason);
afterEach(() => {
  process.off("unhandledRejection", onUnhandled);
  unhandled.length = 0;
});

describe("runDelivery: an attempt ended before it began", () => {
  it("an argument schema that rejects after the attempt was aborted leaves no unhandled rejection", async () => {
    process.on("unhandledRejection", onUnhandled);
    const app = new Chicory({ broker: new MemoryBroker(), backend: new MemoryBackend(), config: { env: {} } });
    const rejecting: StandardSchemaV1<unknown[], unknown[]> = {
      "~standard": {
        version: 1,
        vendor: "test",
        validate: async () => ({ issues: [{ message: "not valid" }] }),
      },
    };
    app.task({ name: "validated", args: rejecting }, async () => "ran");
    const message = taskMessage({ id: "t1", name: "validated", args: [] });
    const delivery: Delivery = { ...fakeDelivery(false).delivery, body: app.codec.encode(message) };
    const shutdown = new AbortController();
    shutdown.abort(); // a forced shutdown before the attempt began
    const attempt = await runDelivery(delivery, {
      codec: app.codec,
      tasks: app.tasks,
      maxDeliveries: 5,
      maxResultBytes: 1024 * 1024,
      shutdownSignal: shutdown.signal,
      onStart: () => {},
    });
    expect(attempt.outcome).toMatchObject({ kind: "aborted", error: { type: "TaskAbortedError" } });
    await new Promise(setImmediate); // (an unhandled rejection is reported before the next turn)
    expect(unhandled).toEqual([]);
  });

  it("a task timeout longer than setTimeout's longest delay (24.8 days) is waited whole", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    try {
      const app = new Chicory({ broker: new MemoryBroker(), backend: new MemoryBackend(), config: { env: {} } });
      let signal: AbortSignal | undefined;
      app.task({ name: "month", timeout: "30d", context: true }, (ctx: TaskContext) => {
        signal = ctx.signal;
        return new Promise<never>(() => undefined); // runs until its timeout
      });
      const message = taskMessage({ id: "t2", name: "month", args: [] });
      const delivery: Delivery = { ...fakeDelivery(false).delivery, body: app.codec.encode(message) };
      const attempt = runDelivery(delivery, {
        codec: app.codec,
        tasks: app.tasks,
        maxDeliveries: 5,
        maxResultBytes: 1024 * 1024,
        shutdownSignal: new AbortController().signal,
        onStart: () => {},
      });
      const day = 86_400_000;
      await vi.advanceTimersByTimeAsync(25 * day);
      expect(signal?.aborted).toBe(false); // before: aborted after 24.86 days
      await vi.advanceTimersByTimeAsync(5 * day);
      expect(signal?.aborted).toBe(true);
      expect((await attempt).outcome).toMatchObject({
        error: { type: "TaskTimeoutError", message: "task month exceeded its timeout of 2592000 s" },
      });
    } finally {
      vi.useRealTimers();
    }
  });
});

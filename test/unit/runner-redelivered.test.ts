import { describe, expect, it } from "vitest";
import type { TaskState } from "../../src/backends/backend.js";
import type { Delivery } from "../../src/brokers/broker.js";
import { Chicory, MemoryBackend, MemoryBroker } from "../../src/index.js";
import { runDelivery } from "../../src/worker/runner.js";
import { taskMessage } from "../contract/contract-helpers.js";
import { fakeDelivery } from "../helpers/fake-delivery.js";

/**
 * Runs a delivery of task "job" (delivered `deliveryCount` times) whose task's final state reads
 * as `final` (`"unreadable"`: the read fails). Returns the outcome and how often the handler ran.
 */
async function deliver(deliveryCount: number, final: TaskState | null | "unreadable") {
  const app = new Chicory({ broker: new MemoryBroker(), backend: new MemoryBackend(), config: { env: {} } });
  let runs = 0;
  app.task({ name: "job" }, async () => {
    runs++;
    return "ran";
  });
  const body = app.codec.encode(taskMessage({ id: "t1", name: "job", args: [] }));
  const delivery: Delivery = { ...fakeDelivery(false).delivery, body, deliveryCount };
  const attempt = await runDelivery(delivery, {
    codec: app.codec,
    tasks: app.tasks,
    maxDeliveries: 3,
    maxResultBytes: 1024 * 1024,
    shutdownSignal: new AbortController().signal,
    onStart: () => {},
    finalState: async () => {
      if (final === "unreadable") throw new Error("backend down");
      return final;
    },
  });
  return { outcome: attempt.outcome, runs };
}

describe("runDelivery: a message delivered again after its task succeeded", () => {
  it("is done without a run, even past maxDeliveries (not poison)", async () => {
    for (const count of [2, 4]) {
      const { outcome, runs } = await deliver(count, "SUCCESS");
      expect(outcome).toEqual({ kind: "done" });
      expect(runs).toBe(0);
    }
  });

  it("runs on its first delivery (a new job may reuse a finished task's id), and after another final state", async () => {
    for (const [count, final] of [
      [1, "SUCCESS"],
      [2, "FAILURE"],
      [2, "DEAD_LETTERED"],
      [2, null],
    ] as const) {
      const { outcome, runs } = await deliver(count, final);
      expect(outcome).toEqual({ kind: "success", value: "ran" });
      expect(runs).toBe(1);
    }
  });

  it("runs when the backend cannot be read (at least once), and is poison past maxDeliveries as before", async () => {
    expect((await deliver(2, "unreadable")).runs).toBe(1);
    const poison = await deliver(4, "unreadable");
    expect(poison.outcome).toMatchObject({ kind: "rejected", error: { type: "PoisonMessage" } });
    expect(poison.runs).toBe(0);
  });
});

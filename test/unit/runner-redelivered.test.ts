import { describe, expect, it } from "vitest";
import type { Delivery } from "../../src/brokers/broker.js";
import { Chicory, MemoryBackend, MemoryBroker } from "../../src/index.js";
import { runDelivery } from "../../src/worker/runner.js";
import { taskMessage } from "../contract/contract-helpers.js";
import { fakeDelivery } from "../helpers/fake-delivery.js";

/**
 * Runs a delivery of task "job" (delivered `deliveryCount` times) in a worker that remembers a
 * successful run of that message (`earlier`) or none. Returns the outcome, how often the handler
 * ran, and what the worker was asked.
 */
async function deliver(deliveryCount: number, earlier: { readonly value: unknown } | undefined) {
  const app = new Chicory({ broker: new MemoryBroker(), backend: new MemoryBackend(), config: { env: {} } });
  let runs = 0;
  app.task({ name: "job" }, async () => {
    runs++;
    return "ran";
  });
  const body = app.codec.encode(taskMessage({ id: "t1", name: "job", args: [] }));
  const delivery: Delivery = { ...fakeDelivery(false).delivery, body, deliveryCount };
  const asked: string[] = [];
  const attempt = await runDelivery(delivery, {
    codec: app.codec,
    tasks: app.tasks,
    maxDeliveries: 3,
    maxResultBytes: 1024 * 1024,
    shutdownSignal: new AbortController().signal,
    onStart: () => {},
    earlierSuccess: (d, message) => {
      asked.push(`${d.deliveryCount}:${message.id}`);
      return earlier;
    },
  });
  return { outcome: attempt.outcome, runs, asked };
}

describe("runDelivery: a message delivered again after this worker's run of it succeeded", () => {
  it("is done with that run's value, not run, even past maxDeliveries (not poison)", async () => {
    for (const deliveryCount of [2, 4]) {
      const { outcome, runs } = await deliver(deliveryCount, { value: "first run" });
      expect(outcome).toEqual({ kind: "done", value: "first run" });
      expect(runs).toBe(0);
    }
  });

  it("runs when this worker remembers no successful run of it; a first delivery is not even looked up", async () => {
    const again = await deliver(2, undefined);
    expect(again.outcome).toEqual({ kind: "success", value: "ran" });
    expect(again.asked).toEqual(["2:t1"]);
    const first = await deliver(1, { value: "never asked" });
    expect(first.outcome).toEqual({ kind: "success", value: "ran" });
    expect(first.asked).toEqual([]);
    const poison = await deliver(4, undefined);
    expect(poison.outcome).toMatchObject({ kind: "rejected", error: { type: "PoisonMessage" } });
  });
});

import { describe, expect, it } from "vitest";
import type { TaskRecord } from "../../src/backends/backend.js";
import type { Delivery } from "../../src/brokers/broker.js";
import { Chicory, MemoryBackend, MemoryBroker, silentLogger } from "../../src/index.js";
import { executeActions } from "../../src/worker/executor.js";
import type { Attempt } from "../../src/worker/runner.js";
import { settle } from "../../src/worker/settle.js";
import { taskMessage } from "../contract/contract-helpers.js";

/** A delivery that records which settle calls it got. */
function fakeDelivery(withRecords: boolean) {
  const calls: string[] = [];
  const records: TaskRecord[] = [];
  const delivery: Delivery = {
    queue: "q",
    deliveryId: "1-0",
    body: "{}",
    deliveryCount: 1,
    ack: async () => void calls.push("ack"),
    retry: async () => void calls.push("retry"),
    deadLetter: async () => void calls.push("deadLetter"),
    release: async () => void calls.push("release"),
    ...(withRecords
      ? {
          ackWithRecord: async (record: TaskRecord) => {
            calls.push("ackWithRecord");
            records.push(record);
          },
        }
      : {}),
  };
  return { delivery, calls, records };
}

const message = taskMessage({ id: "task-1", name: "t", args: [] });

async function run(
  outcome: Attempt["outcome"],
  acksCarryRecords: boolean,
  useDeadLetterQueue = false,
  deliveryWritesRecords = true,
) {
  const backend = new MemoryBackend();
  const app = new Chicory({ broker: new MemoryBroker(), backend, config: { env: {} } });
  await app.connect();
  const fake = fakeDelivery(deliveryWritesRecords);
  const attempt: Attempt = { outcome, message, task: null, alreadyAcked: false };
  const actions = settle(outcome, {
    deliveryMode: "at_least_once",
    useDeadLetterQueue,
    alreadyAcked: false,
    acksCarryRecords,
  });
  await executeActions(actions, {
    delivery: fake.delivery,
    attempt,
    app,
    logger: silentLogger,
    stopSignal: new AbortController().signal,
  });
  const stored = await backend.getResult("task-1");
  await app.disconnect();
  return { ...fake, stored };
}

describe("settle + executeActions: a terminal store and its ack", () => {
  it("become one ackWithRecord call when the broker writes the backend's records", async () => {
    const { calls, records, stored } = await run({ kind: "success", value: 42 }, true);
    expect(calls).toEqual(["ackWithRecord"]);
    expect(records).toEqual([expect.objectContaining({ taskId: "task-1", state: "SUCCESS", result: 42 })]);
    expect(stored).toBeNull(); // written by the broker's call, not through the backend
  });

  it("stay two steps (store, then ack) otherwise", async () => {
    const { calls, stored } = await run({ kind: "success", value: 42 }, false);
    expect(calls).toEqual(["ack"]);
    expect(stored).toMatchObject({ state: "SUCCESS", result: 42 });
  });

  it("a dead-letter move is never merged: the record is stored, then the delivery moved", async () => {
    const error = { type: "Error", message: "boom" };
    const { calls, stored } = await run({ kind: "failure", error }, true, true);
    expect(calls).toEqual(["deadLetter"]);
    expect(stored).toMatchObject({ state: "DEAD_LETTERED" });
  });

  it("a delivery without the one-call ack stores through the backend, then acks", async () => {
    const { calls, stored } = await run({ kind: "success", value: 42 }, true, false, false);
    expect(calls).toEqual(["ack"]);
    expect(stored).toMatchObject({ state: "SUCCESS", result: 42 });
  });
});

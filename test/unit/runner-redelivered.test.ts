import { describe, expect, it } from "vitest";
import type { TaskRecord, TaskState } from "../../src/backends/backend.js";
import type { Delivery } from "../../src/brokers/broker.js";
import { Chicory, MemoryBackend, MemoryBroker } from "../../src/index.js";
import { OWN_SUCCESS_AFTER_MS, runDelivery } from "../../src/worker/runner.js";
import { taskMessage } from "../contract/contract-helpers.js";
import { fakeDelivery } from "../helpers/fake-delivery.js";

const QUEUED_AT = Date.parse("2026-01-01T00:00:00.000Z");

/** A record of the task in `state`, written `afterMs` after the message was queued. */
const stamp = (state: TaskState, afterMs: number): Pick<TaskRecord, "state" | "updatedAt"> => ({
  state,
  updatedAt: new Date(QUEUED_AT + afterMs).toISOString(),
});

interface Case {
  readonly deliveryCount: number;
  /** The task's record as read (`"unreadable"`: the read fails). */
  readonly record: Pick<TaskRecord, "state" | "updatedAt"> | null | "unreadable";
  /** The record once the handler ran (another run of the job finished meanwhile). */
  readonly recordAfterRun?: Pick<TaskRecord, "state" | "updatedAt"> | undefined;
  readonly queuedAtMs?: number | undefined;
  /** What the handler does. */
  readonly handler?: "succeeds" | "fails" | "retries";
}

/** Runs a delivery of task "job" as `c` says; returns the outcome and how often the handler ran. */
async function deliver(c: Case) {
  const app = new Chicory({ broker: new MemoryBroker(), backend: new MemoryBackend(), config: { env: {} } });
  let runs = 0;
  let record = c.record;
  const behaviour = c.handler ?? "succeeds";
  app.task({ name: "job", retryPolicy: { maxRetries: behaviour === "retries" ? 1 : 0, retryDelay: 0 } }, async () => {
    runs++;
    if (c.recordAfterRun !== undefined) record = c.recordAfterRun;
    if (behaviour === "fails") throw new Error("card already charged");
    if (behaviour === "retries") throw new Error("try again");
    return "ran";
  });
  const body = app.codec.encode(taskMessage({ id: "t1", name: "job", args: [] }));
  const delivery: Delivery = {
    ...fakeDelivery(false).delivery,
    body,
    deliveryCount: c.deliveryCount,
    enqueuedAtMs: "queuedAtMs" in c ? c.queuedAtMs : QUEUED_AT,
  };
  const attempt = await runDelivery(delivery, {
    codec: app.codec,
    tasks: app.tasks,
    maxDeliveries: 3,
    maxResultBytes: 1024 * 1024,
    shutdownSignal: new AbortController().signal,
    onStart: () => {},
    resultStamp: async () => {
      if (record === "unreadable") throw new Error("backend down");
      return record;
    },
  });
  return { outcome: attempt.outcome, runs };
}

const ownSuccess = stamp("SUCCESS", OWN_SUCCESS_AFTER_MS + 1000);

describe("runDelivery: a message delivered again after a run of it succeeded", () => {
  it("is done without a run when the SUCCESS was written well after the message was queued, even past maxDeliveries", async () => {
    for (const deliveryCount of [2, 4]) {
      const { outcome, runs } = await deliver({ deliveryCount, record: ownSuccess });
      expect(outcome).toEqual({ kind: "done", ran: false });
      expect(runs).toBe(0);
    }
  });

  it("runs on its first delivery, after another final state, and when the SUCCESS may be an older job's", async () => {
    for (const c of [
      { deliveryCount: 1, record: ownSuccess }, // a new job may reuse a finished task's id
      { deliveryCount: 2, record: stamp("FAILURE", 5000) },
      { deliveryCount: 2, record: stamp("DEAD_LETTERED", 5000) },
      { deliveryCount: 2, record: null },
      // written before the message was queued, or too soon after to tell clocks apart: an older
      // job that used the same id, whose record was not deleted
      { deliveryCount: 2, record: stamp("SUCCESS", -60_000) },
      { deliveryCount: 2, record: stamp("SUCCESS", OWN_SUCCESS_AFTER_MS - 1) },
      // the broker does not say when the message was queued
      { deliveryCount: 2, record: ownSuccess, queuedAtMs: undefined },
    ] satisfies Case[]) {
      const { outcome, runs } = await deliver(c);
      expect(outcome).toEqual({ kind: "success", value: "ran" });
      expect(runs).toBe(1);
    }
  });

  it("runs when the record cannot be read (at least once), and is poison past maxDeliveries as before", async () => {
    expect((await deliver({ deliveryCount: 2, record: "unreadable" })).runs).toBe(1);
    const poison = await deliver({ deliveryCount: 4, record: "unreadable" });
    expect(poison.outcome).toMatchObject({ kind: "rejected", error: { type: "PoisonMessage" } });
    expect(poison.runs).toBe(0);
  });

  it("a failed or retrying run of it keeps a SUCCESS another run stored meanwhile; a first delivery's does not", async () => {
    for (const handler of ["fails", "retries"] as const) {
      const again = await deliver({ deliveryCount: 2, record: null, recordAfterRun: ownSuccess, handler });
      expect(again.outcome).toEqual({ kind: "done", ran: true });
      expect(again.runs).toBe(1);
      const first = await deliver({ deliveryCount: 1, record: null, recordAfterRun: ownSuccess, handler });
      expect(first.outcome.kind).toBe(handler === "fails" ? "failure" : "retry");
    }
  });
});

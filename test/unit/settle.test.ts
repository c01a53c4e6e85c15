import { describe, expect, it } from "vitest";
import { type Action, type Outcome, type SettleMode, settle } from "../../src/worker/settle.js";

const err = { type: "Error", message: "boom" };
const outcomes: Record<string, Outcome> = {
  success: { kind: "success", value: 1 },
  retry: { kind: "retry", error: err, delayMs: 10 },
  failure: { kind: "failure", error: err },
  rejectedWithId: { kind: "rejected", error: err, taskId: "t1" },
  rejectedNoId: { kind: "rejected", error: err, taskId: null },
  aborted: { kind: "aborted", error: err },
  done: { kind: "done", value: 1 },
};

const names = (actions: readonly Action[]) =>
  actions.map((a) => (a.type === "store" ? `store:${a.state}` : a.type)).join(" > ");

// outcome, at_least_once (not acked) DLQ off, DLQ on, at_most_once (acked before run) DLQ off, DLQ on
const TABLE: Array<[keyof typeof outcomes, string, string, string, string]> = [
  ["success", "store:SUCCESS > ack", "store:SUCCESS > ack", "store:SUCCESS", "store:SUCCESS"],
  ["retry", "store:RETRY > retry", "store:RETRY > retry", "store:RETRY > republish", "store:RETRY > republish"],
  [
    "failure",
    "store:FAILURE > ack",
    "store:DEAD_LETTERED > deadLetter",
    "store:FAILURE",
    "writeDeadLetter > store:DEAD_LETTERED",
  ],
  [
    "rejectedWithId",
    "store:FAILURE > ack",
    "store:DEAD_LETTERED > deadLetter",
    "store:FAILURE",
    "writeDeadLetter > store:DEAD_LETTERED",
  ],
  ["rejectedNoId", "ack", "deadLetter", "", "writeDeadLetter"],
  ["aborted", "release", "release", "store:FAILURE", "store:FAILURE"],
  // delivered again to the worker whose run of it succeeded: that SUCCESS stored (unless a final record is there), no run
  ["done", "store:SUCCESS > ack", "store:SUCCESS > ack", "", ""],
];

describe("settle: outcome x delivery mode x DLQ -> actions", () => {
  for (const [outcome, aloOff, aloOn, amoOff, amoOn] of TABLE) {
    const cases: Array<[string, SettleMode, string]> = [
      [
        "at_least_once, DLQ off",
        { deliveryMode: "at_least_once", useDeadLetterQueue: false, alreadyAcked: false },
        aloOff,
      ],
      [
        "at_least_once, DLQ on",
        { deliveryMode: "at_least_once", useDeadLetterQueue: true, alreadyAcked: false },
        aloOn,
      ],
      [
        "at_most_once, DLQ off",
        { deliveryMode: "at_most_once", useDeadLetterQueue: false, alreadyAcked: true },
        amoOff,
      ],
      ["at_most_once, DLQ on", { deliveryMode: "at_most_once", useDeadLetterQueue: true, alreadyAcked: true }, amoOn],
    ];
    for (const [label, mode, expected] of cases) {
      it(`${outcome} / ${label}: ${expected || "(nothing)"}`, () => {
        expect(names(settle(outcomes[outcome] as Outcome, mode))).toBe(expected);
      });
    }
  }

  it("always stores the outcome before acknowledging under at_least_once", () => {
    for (const outcome of Object.values(outcomes)) {
      for (const dlq of [false, true]) {
        const actions = settle(outcome, {
          deliveryMode: "at_least_once",
          useDeadLetterQueue: dlq,
          alreadyAcked: false,
        });
        const storeAt = actions.findIndex((a) => a.type === "store");
        const settleAt = actions.findIndex((a) => ["ack", "retry", "deadLetter"].includes(a.type));
        if (storeAt >= 0 && settleAt >= 0) expect(storeAt).toBeLessThan(settleAt);
      }
    }
  });
});

describe("settle: when the broker writes the backend's records with its acks", () => {
  const mode = (useDeadLetterQueue: boolean, alreadyAcked = false): SettleMode => ({
    deliveryMode: alreadyAcked ? "at_most_once" : "at_least_once",
    useDeadLetterQueue,
    alreadyAcked,
    acksCarryRecords: true,
  });
  const named = (actions: readonly Action[]) =>
    actions.map((a) => ("state" in a ? `${a.type}:${a.state}` : a.type)).join(" > ");

  it("a final record and its ack become one storeAndAck", () => {
    expect(named(settle(outcomes.success as Outcome, mode(false)))).toBe("storeAndAck:SUCCESS");
    expect(named(settle(outcomes.failure as Outcome, mode(false)))).toBe("storeAndAck:FAILURE");
    expect(named(settle(outcomes.rejectedWithId as Outcome, mode(false)))).toBe("storeAndAck:FAILURE");
  });

  it("a DEAD_LETTERED record and the DLQ move become one storeAndDeadLetter", () => {
    expect(named(settle(outcomes.failure as Outcome, mode(true)))).toBe("storeAndDeadLetter:DEAD_LETTERED");
    expect(named(settle(outcomes.rejectedWithId as Outcome, mode(true)))).toBe("storeAndDeadLetter:DEAD_LETTERED");
  });

  it("an acknowledged message's dead letter and its DEAD_LETTERED record become one storeAndWriteDeadLetter", () => {
    expect(named(settle(outcomes.failure as Outcome, mode(true, true)))).toBe("storeAndWriteDeadLetter:DEAD_LETTERED");
    expect(named(settle(outcomes.rejectedWithId as Outcome, mode(true, true)))).toBe(
      "storeAndWriteDeadLetter:DEAD_LETTERED",
    );
  });

  it("every other plan is unchanged", () => {
    expect(named(settle(outcomes.retry as Outcome, mode(false)))).toBe("store:RETRY > retry");
    expect(named(settle(outcomes.rejectedNoId as Outcome, mode(true)))).toBe("deadLetter");
    expect(named(settle(outcomes.rejectedNoId as Outcome, mode(true, true)))).toBe("writeDeadLetter");
    expect(named(settle(outcomes.rejectedNoId as Outcome, mode(false)))).toBe("ack");
    expect(named(settle(outcomes.success as Outcome, mode(false, true)))).toBe("store:SUCCESS");
    expect(named(settle(outcomes.aborted as Outcome, mode(false)))).toBe("release");
  });
});

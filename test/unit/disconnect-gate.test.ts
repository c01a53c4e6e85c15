/**
 * The order of an adapter's `connect()` and `disconnect()` calls (the gate every adapter that
 * connects asynchronously uses).
 */
import { describe, expect, it } from "vitest";
import { DisconnectGate } from "../../src/core/disconnect-gate.js";
import { deferred } from "../helpers/deferred.js";

const overtaken = () => new Error("overtaken");

describe("DisconnectGate", () => {
  it("opens at once, in the same step, with no disconnect under way", async () => {
    const gate = new DisconnectGate();
    let opened = 0;
    const connecting = gate.connect(async () => void opened++, overtaken);
    expect(opened).toBe(1); // (a disconnect in the same turn then finds the open under way)
    await connecting;
  });

  it("opens after every disconnect under way, counting the waiting connect meanwhile", async () => {
    const gate = new DisconnectGate();
    const slow = deferred();
    const order: string[] = [];
    const first = gate.closing(slow.promise.then(() => void order.push("first closed")));
    const second = gate.closing(Promise.resolve().then(() => void order.push("second closed")));
    const connecting = gate.connect(async () => void order.push("opened"), overtaken);
    expect(gate.connectsWaiting).toBe(1);
    await second;
    expect(order).toEqual(["second closed"]);
    slow.resolve();
    await Promise.all([first, connecting]);
    expect(order).toEqual(["second closed", "first closed", "opened"]);
    expect(gate.connectsWaiting).toBe(0);
    expect(gate.pending).toBeUndefined();
  });

  it("a connect that a later disconnect overtakes rejects, opened or not", async () => {
    const gate = new DisconnectGate();
    // waiting for a disconnect under way: never opens
    const slow = deferred();
    void gate.closing(slow.promise);
    let opened = 0;
    const waiting = gate.connect(async () => void opened++, overtaken);
    const later = gate.closing(Promise.resolve());
    slow.resolve();
    await later;
    await expect(waiting).rejects.toThrow("overtaken");
    expect(opened).toBe(0);
    // opening: the disconnect closes what it opened
    const held = deferred();
    const opening = gate.connect(() => held.promise, overtaken);
    const closing = gate.closing(Promise.resolve());
    held.resolve();
    await closing;
    await expect(opening).rejects.toThrow("overtaken");
    // a failed disconnect counts as done
    await gate.closing(Promise.reject(new Error("close failed"))).catch(() => undefined);
    await gate.connect(async () => void opened++, overtaken);
    expect(opened).toBe(1);
  });
});

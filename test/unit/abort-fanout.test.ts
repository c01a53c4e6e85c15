import { getEventListeners } from "node:events";
import { afterEach, describe, expect, it } from "vitest";
import { offAbort, onAbort } from "../../src/core/abort-fanout.js";
import { TimeoutError } from "../../src/errors.js";
import { MemoryBackend } from "../../src/index.js";
import { AsyncResult } from "../../src/result.js";

const warnings: Error[] = [];
const onWarning = (warning: Error) => void warnings.push(warning);
afterEach(() => {
  process.off("warning", onWarning);
  warnings.length = 0;
});

describe("abort listeners shared per signal", () => {
  it("one listener on the signal for many; each called once on abort, in order; the last removal removes it", () => {
    const controller = new AbortController();
    const calls: number[] = [];
    const listeners = Array.from({ length: 20 }, (_, i) => () => void calls.push(i));
    for (const l of listeners) onAbort(controller.signal, l);
    expect(getEventListeners(controller.signal, "abort")).toHaveLength(1);
    offAbort(controller.signal, listeners[3] as () => void);
    controller.abort();
    expect(calls).toEqual(Array.from({ length: 20 }, (_, i) => i).filter((i) => i !== 3));
    // and removed as they go
    const other = new AbortController();
    const a = { handleEvent: () => undefined };
    onAbort(other.signal, a);
    onAbort(other.signal, listeners[0] as () => void);
    offAbort(other.signal, a);
    expect(getEventListeners(other.signal, "abort")).toHaveLength(1);
    offAbort(other.signal, listeners[0] as () => void);
    expect(getEventListeners(other.signal, "abort")).toHaveLength(0);
  });

  it("a hundred get()s on one signal: no MaxListenersExceededWarning, all end on abort, no listener left", async () => {
    process.on("warning", onWarning);
    const backend = new MemoryBackend();
    await backend.connect();
    const controller = new AbortController();
    const gets = Array.from({ length: 100 }, (_, i) =>
      new AsyncResult(`t${i}`, backend).get({ signal: controller.signal }).catch((error: unknown) => error),
    );
    // one that ends on its own takes its listener away, the signal's stays for the others
    await backend.storeResult({ taskId: "t0", state: "SUCCESS", result: 1, updatedAt: new Date().toISOString() });
    expect(await gets[0]).toBe(1);
    expect(getEventListeners(controller.signal, "abort")).toHaveLength(1);
    controller.abort();
    const ended = await Promise.all(gets.slice(1));
    expect(ended.every((e) => e instanceof TimeoutError && /the wait was aborted/.test(e.message))).toBe(true);
    expect(getEventListeners(controller.signal, "abort")).toHaveLength(0);
    await new Promise(setImmediate); // (a process warning is emitted on the next tick)
    expect(warnings.filter((w) => w.name === "MaxListenersExceededWarning")).toEqual([]);
    await backend.disconnect();
  });
});

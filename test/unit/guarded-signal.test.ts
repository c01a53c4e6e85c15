import { addAbortListener } from "node:events";
import { describe, expect, it } from "vitest";
import { guardListeners } from "../../src/core/guarded-signal.js";
import { RetryPolicy, TaskContext } from "../../src/index.js";

/** A signal whose listeners are guarded, and what they reported. */
function guarded(): { controller: AbortController; reported: unknown[] } {
  const controller = new AbortController();
  const reported: unknown[] = [];
  guardListeners(controller.signal, (error) => reported.push(error));
  return { controller, reported };
}

/** Waits for the rejections of async listeners to be reported. */
const settled = () => new Promise((resolve) => setImmediate(resolve));

describe("guardListeners", () => {
  it("reports what a listener throws or rejects with, and runs the listeners after it", async () => {
    const { controller, reported } = guarded();
    const seen: string[] = [];
    controller.signal.addEventListener("abort", () => {
      throw new Error("function");
    });
    controller.signal.addEventListener("abort", {
      handleEvent() {
        throw new Error("object");
      },
    });
    controller.signal.addEventListener("abort", () => Promise.reject(new Error("promise")));
    controller.signal.onabort = () => {
      throw new Error("onabort");
    };
    addAbortListener(controller.signal, () => {
      throw new Error("addAbortListener");
    });
    controller.signal.addEventListener("abort", () => seen.push("after"));
    controller.abort(new Error("reason"));
    await settled();
    expect(seen).toEqual(["after"]);
    expect(reported.map((error) => (error as Error).message).sort()).toEqual([
      "addAbortListener",
      "function",
      "object",
      "onabort",
      "promise",
    ]);
  });

  it("keeps a listener's this, event, options and removal as they were", () => {
    const { controller, reported } = guarded();
    const { signal } = controller;
    const calls: Array<[unknown, string]> = [];
    function listener(this: unknown, event: Event): void {
      calls.push([this, event.type]);
    }
    const removed = () => calls.push(["removed", "abort"]);
    const object = { handleEvent: (event: Event) => calls.push([object, event.type]) };
    signal.addEventListener("abort", listener);
    signal.addEventListener("abort", listener); // the same listener twice: added once
    signal.addEventListener("abort", object);
    signal.addEventListener("abort", removed);
    signal.removeEventListener("abort", removed);
    signal.removeEventListener("abort", () => undefined); // never added: nothing happens
    controller.abort();
    expect(calls).toEqual([
      [signal, "abort"],
      [object, "abort"],
    ]);
    expect(reported).toEqual([]);
  });

  it("runs a listener whose own call property is shadowed; ignores an object without handleEvent and reports one whose handleEvent is no function, as Node does (uncaught there)", () => {
    const { controller, reported } = guarded();
    let runs = 0;
    const listener = Object.assign(() => void runs++, { call: "not a function" });
    controller.signal.addEventListener("abort", listener);
    controller.signal.addEventListener("abort", {} as unknown as () => void);
    controller.signal.addEventListener("abort", { handleEvent: 1 } as unknown as () => void);
    controller.abort();
    expect(runs).toBe(1);
    expect(reported).toEqual([new TypeError("the listener's handleEvent is not a function")]);
  });

  it("leaves a stand-in signal of another class as it is", () => {
    class StandIn extends EventTarget {
      get aborted(): boolean {
        return false;
      }
    }
    const standIn = new StandIn() as unknown as AbortSignal;
    guardListeners(standIn, () => undefined);
    expect(Object.getPrototypeOf(standIn)).toBe(StandIn.prototype);
    expect(standIn.aborted).toBe(false);
  });

  it("a signal guarded twice keeps its first report, and its listeners stay removable", () => {
    const controller = new AbortController();
    const first: unknown[] = [];
    guardListeners(controller.signal, (error) => first.push(error));
    let runs = 0;
    const removed = () => void runs++;
    controller.signal.addEventListener("abort", removed);
    guardListeners(controller.signal, () => undefined);
    controller.signal.removeEventListener("abort", removed);
    controller.signal.addEventListener("abort", () => {
      throw new Error("to the first");
    });
    controller.abort();
    expect([runs, first]).toEqual([0, [new Error("to the first")]]);
  });

  it("a once listener runs once; a signal option removes it; bad listeners meet Node's own checks", () => {
    const { controller } = guarded();
    const { signal } = controller;
    let runs = 0;
    const cut = new AbortController();
    signal.addEventListener("abort", () => runs++, { once: true });
    signal.addEventListener("abort", () => runs++, { signal: cut.signal });
    cut.abort();
    expect(() => signal.addEventListener("abort", 42 as unknown as () => void)).toThrow(
      expect.objectContaining({ code: "ERR_INVALID_ARG_TYPE" }),
    );
    controller.abort();
    signal.dispatchEvent(new Event("abort"));
    expect(runs).toBe(1);
  });
});

describe("TaskContext.signal", () => {
  const context = (signal: AbortSignal, onListenerError?: (error: unknown) => void) =>
    new TaskContext({
      taskId: "id",
      taskName: "t",
      retries: 0,
      retryPolicy: new RetryPolicy(),
      signal,
      onListenerError,
    });

  it("is guarded with onListenerError, left as it is without", () => {
    const reported: unknown[] = [];
    const controller = new AbortController();
    const ctx = context(controller.signal, (error) => reported.push(error));
    expect(ctx.signal).toBe(controller.signal);
    expect(ctx.signal).toBeInstanceOf(AbortSignal);
    ctx.signal.addEventListener("abort", () => {
      throw new Error("reported");
    });
    controller.abort();
    expect(reported).toEqual([new Error("reported")]);
    const plain = new AbortController().signal;
    expect(context(plain).signal).toBe(plain);
    expect(Object.getPrototypeOf(plain)).toBe(AbortSignal.prototype);
  });

  it("is an own, enumerable property either way: a spread copy keeps it", () => {
    for (const report of [undefined, () => undefined]) {
      const signal = new AbortController().signal;
      const ctx = context(signal, report);
      expect(Object.keys(ctx)).toContain("signal");
      expect({ ...ctx }.signal).toBe(signal);
    }
  });
});

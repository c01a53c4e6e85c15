import { afterEach, describe, expect, it, vi } from "vitest";
import { sharedWithin } from "../../src/core/shared-calls.js";

describe("sharedWithin", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("shares one call per key among the calls of its window; a later call, another key or a failed call asks again", async () => {
    vi.useFakeTimers({ toFake: ["performance"] });
    const asked: string[] = [];
    let fail = false;
    const count = sharedWithin(100, async (queue: string) => {
      asked.push(queue);
      if (fail) throw new Error("broker away");
      return asked.length;
    });
    // 5,000 get()s timing out together: one count
    const counts = await Promise.all(Array.from({ length: 5000 }, () => count("nobody")));
    expect(new Set(counts)).toEqual(new Set([1]));
    expect(await count("other")).toBe(2);
    vi.advanceTimersByTime(100);
    expect(await count("nobody")).toBe(3); // a fresh count once the window passed
    vi.advanceTimersByTime(100);
    fail = true;
    await expect(count("nobody")).rejects.toThrow("broker away");
    fail = false;
    expect(await count("nobody")).toBe(5); // the failure was not kept
    expect(asked).toEqual(["nobody", "other", "nobody", "nobody", "nobody"]);
  });
});

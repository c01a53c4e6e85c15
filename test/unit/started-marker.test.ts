import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { TaskMessage } from "../../src/core/message.js";
import { StartedMarker } from "../../src/worker/started.js";
import { taskMessage } from "../contract/contract-helpers.js";

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe("StartedMarker", () => {
  it("marks the runs still going after its threshold, even when the wall clock steps back meanwhile", async () => {
    const marked: string[] = [];
    const marker = new StartedMarker(100, (message: TaskMessage) => marked.push(message.id));
    const long = taskMessage({ id: "long", name: "t", args: [] });
    const quick = taskMessage({ id: "quick", name: "t", args: [] });
    marker.started(long);
    marker.started(quick);
    vi.setSystemTime(Date.now() - 10 * 60_000); // an NTP correction backwards
    await vi.advanceTimersByTimeAsync(40);
    marker.ended(quick);
    await vi.advanceTimersByTimeAsync(200);
    expect(marked).toEqual(["long"]);
    marker.clear();
  });
});

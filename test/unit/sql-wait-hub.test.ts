/**
 * The SQL backends' wait hub: timers of long durations.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { TaskRecord } from "../../src/backends/backend.js";
import { SqlWaitHub } from "../../src/backends/sql/sql-wait-hub.js";
import { textLogger } from "../helpers/capturing-logger.js";

describe("SqlWaitHub", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("a timeout past what a timer holds (30 days) ends after 30 days, not at once", async () => {
    const days = 86_400_000;
    const { logger } = textLogger();
    const fetch = (): Promise<TaskRecord[]> => Promise.resolve([]);
    const hub = new SqlWaitHub(fetch, 10 * days, logger, { logger, backend: "sqlite backend" });
    let settled = false;
    const result = hub.wait("a", { timeoutMs: 30 * days }).finally(() => {
      settled = true;
    });
    await vi.advanceTimersByTimeAsync(29 * days);
    expect(settled).toBe(false);
    await vi.advanceTimersByTimeAsync(days);
    expect(await result).toBeNull();
    expect(hub.size).toBe(0);
  });

  it("a poll interval past what a timer holds (30 days) polls rarely, not every millisecond", async () => {
    const { logger } = textLogger();
    let reads = 0;
    const fetch = (): Promise<TaskRecord[]> => {
      reads++;
      return Promise.resolve([]);
    };
    const hub = new SqlWaitHub(fetch, 30 * 86_400_000, logger, { logger, backend: "sqlite backend" });
    const result = hub.wait("a", { timeoutMs: 1000 });
    await vi.advanceTimersByTimeAsync(1000);
    expect(await result).toBeNull();
    expect(reads).toBe(1); // the first read only
  });
});

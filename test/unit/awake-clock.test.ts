/**
 * `awakeNow()`: the monotonic clock plus the time the host was suspended (the wall clock run
 * ahead of the monotonic one); never back.
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import { awakeNow } from "../../src/core/clock.js";

describe("awakeNow", () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it("follows the monotonic clock, adds a suspend, and never goes back when the wall clock steps back", () => {
    const realNow = performance.now.bind(performance);
    const realDateNow = Date.now.bind(Date);
    const start = awakeNow();
    const at = realNow();
    // 10 s suspended: the monotonic clock stood still, the wall clock ran
    const monotonic = vi.spyOn(performance, "now").mockImplementation(() => at);
    const wall = vi.spyOn(Date, "now").mockImplementation(() => realDateNow() + 10_000);
    const afterSuspend = awakeNow();
    expect(afterSuspend - start).toBeGreaterThanOrEqual(9_990);
    // the wall clock stepped back an hour: no step back here
    wall.mockImplementation(() => realDateNow() - 3_600_000);
    expect(awakeNow()).toBeGreaterThanOrEqual(afterSuspend);
    // the monotonic clock runs on: so does this, from where it was
    monotonic.mockImplementation(() => at + 50);
    expect(awakeNow() - afterSuspend).toBeCloseTo(50, 0);
  });
});

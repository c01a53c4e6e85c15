import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ThrottledWarning } from "../../src/core/throttled-log.js";
import { capturingLogger } from "../helpers/capturing-logger.js";

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe("ThrottledWarning", () => {
  it("warns at most once per logger every interval; the lines between go to debug, counted in the next warning", () => {
    const warnings = new ThrottledWarning(5000, "notWarned");
    const first = capturingLogger();
    const second = capturingLogger();
    for (let i = 0; i < 200; i++) warnings.warn(first.logger, { i }, "could not store STARTED");
    warnings.warn(second.logger, { i: 0 }, "could not store STARTED"); // another worker's: its own
    expect(first.lines.filter((line) => line.level === "warn")).toHaveLength(1);
    expect(first.lines.filter((line) => line.level === "debug")).toHaveLength(199);
    expect(second.lines.map((line) => line.level)).toEqual(["warn"]);
    vi.advanceTimersByTime(5000);
    warnings.warn(first.logger, { i: 200 }, "could not store STARTED");
    expect(first.lines.at(-1)).toMatchObject({ level: "warn", fields: { i: 200, notWarned: 199 } });
  });
});

/** Ordering of Redis stream entry ids, used to bound the owner check of a batched ack. */
import { describe, expect, it } from "vitest";
import { compareEntryIds } from "../../src/brokers/redis/redis-settler.js";

describe("compareEntryIds", () => {
  it("orders by milliseconds, then sequence, numerically", () => {
    const sorted = ["9-0", "10-0", "10-2", "10-10", "1700000000000-0", "1700000000000-5", "1700000000001-0"];
    const shuffled = [...sorted].reverse();
    expect(shuffled.sort(compareEntryIds)).toEqual(sorted);
    expect(compareEntryIds("5-5", "5-5")).toBe(0);
  });

  it("falls back to string order for ids of another shape", () => {
    expect(compareEntryIds("a", "b")).toBeLessThan(0);
    expect(compareEntryIds("-1", "0-0")).toBeLessThan(0);
  });
});

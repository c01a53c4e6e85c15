/**
 * The Redis consumer's out-of-touch windows (`ContactClock`): a gap in Redis's replies longer
 * than the stall threshold makes the reclaim step wait for the claim idle time plus the gap,
 * for one claim idle time. Times are given explicitly (no clock in these tests).
 */
import { describe, expect, it } from "vitest";
import { ContactClock } from "../../src/brokers/redis/redis-contact.js";

describe("ContactClock", () => {
  it("the stall threshold is half the lease, never under the read cadence", () => {
    expect(new ContactClock(30_000, 10_000).stallMs).toBe(15_000);
    expect(new ContactClock(3000, 1000).stallMs).toBe(1500);
    expect(new ContactClock(300, 150).stallMs).toBe(400); // short leases: the cadence decides
  });

  it("replies at the normal cadence open no window", () => {
    const clock = new ContactClock(3000, 1000);
    for (let t = 0; t <= 10_000; t += 1000) expect(clock.replied(undefined, "", t)).toBeUndefined();
    expect(clock.extraMs(10_000)).toBe(0);
  });

  it("a gap opens a window of one lease that asks for the gap on top of the lease", () => {
    const clock = new ContactClock(3000, 1000);
    clock.replied(undefined, "", 1000);
    expect(clock.replied(undefined, "", 6000)).toEqual({ extraMs: 5000, untilMs: 9000 });
    expect(clock.extraMs(6000)).toBe(5000);
    expect(clock.extraMs(8999)).toBe(5000);
    expect(clock.extraMs(9000)).toBe(0); // the live owners had a lease to renew
    // the first reply never counts as a gap (a consumer that just started)
    expect(new ContactClock(3000, 1000).replied(undefined, "", 50_000)).toBeUndefined();
  });

  it("a wider gap widens the window; a narrower one, or the same one measured again, leaves it", () => {
    const clock = new ContactClock(3000, 1000); // stall threshold 1.5 s
    clock.outOfTouch(5000, 0);
    expect(clock.outOfTouch(2000, 1000)).toBeUndefined();
    expect(clock.outOfTouch(5300, 1000)).toBeUndefined(); // within a quarter of the threshold: the same stall
    expect(clock.extraMs(1000)).toBe(5000);
    expect(clock.outOfTouch(8000, 2000)).toEqual({ extraMs: 8000, untilMs: 5000 });
    expect(clock.extraMs(4000)).toBe(8000);
  });

  it("the Redis time of the last reply comes from the offset of that stream's server", () => {
    const clock = new ContactClock(3000, 1000);
    clock.replied(undefined, "", 100);
    expect(clock.lastReplyRedisMs("s1")).toBe(0); // no Redis time seen yet: the script skips its check
    clock.replied(1_800_000_000_500, "s1", 500); // s1's server says 1_800_000_000_500 at local 500
    clock.replied(1_800_000_020_600, "s2", 600); // s2's clock is 20 s ahead
    clock.replied(undefined, "", 900);
    expect(clock.lastReplyRedisMs("s1")).toBe(1_800_000_000_900);
    expect(clock.lastReplyRedisMs("s2")).toBe(1_800_000_020_900);
    expect(clock.quietForMs(1400)).toBe(500);
  });
});

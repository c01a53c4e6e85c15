import { describe, expect, it, vi } from "vitest";
import type { Delivery } from "../../src/brokers/broker.js";
import {
  EarlierSuccesses,
  KEEP_MS,
  MAX_ENTRIES,
  MAX_RESULT_CHARS,
  MAX_TOTAL_CHARS,
  REMEMBER_RUNS_FROM_MS,
} from "../../src/worker/earlier-successes.js";
import { fakeDelivery } from "../helpers/fake-delivery.js";

const withKey = (messageKey: string | undefined): Delivery => ({ ...fakeDelivery(false).delivery, messageKey });
const LONG = REMEMBER_RUNS_FROM_MS;

describe("EarlierSuccesses: successful runs remembered by message", () => {
  it("finds a long run's value by the message's key and task id only", () => {
    const runs = new EarlierSuccesses();
    runs.remember(withKey("1-0"), "t1", { ok: true }, LONG);
    expect(runs.find(withKey("1-0"), "t1")).toEqual({ value: { ok: true } });
    // another message of the same task (a retry, a replay, a new job reusing the id)
    expect(runs.find(withKey("2-0"), "t1")).toBeUndefined();
    // the same key naming another task (an entry id reused after a stream was recreated)
    expect(runs.find(withKey("1-0"), "t2")).toBeUndefined();
    // a broker that gives no key
    expect(runs.find(withKey(undefined), "t1")).toBeUndefined();
  });

  it("forgets runs once KEEP_MS old by a timer too: a worker that goes idle holds none longer", () => {
    vi.useFakeTimers();
    try {
      const runs = new EarlierSuccesses(() => Date.now());
      runs.remember(withKey("a"), "t", "x".repeat(1000), LONG);
      vi.advanceTimersByTime(KEEP_MS / 2);
      runs.remember(withKey("b"), "t", "y", LONG);
      // before, only a later remember() dropped them: with no more long run, both stayed
      vi.advanceTimersByTime(KEEP_MS / 2 + 10);
      expect(runs.size).toBe(1);
      vi.advanceTimersByTime(KEEP_MS / 2 + 10);
      expect(runs.size).toBe(0);
      expect(vi.getTimerCount()).toBe(0);
    } finally {
      vi.useRealTimers();
    }
  });

  it("keeps a copy of the result (JSON), and counts a key remembered again once", () => {
    const runs = new EarlierSuccesses();
    const value = { n: 1 };
    runs.remember(withKey("k"), "t", value, LONG);
    value.n = 2; // the handler changes its object afterwards
    expect(runs.find(withKey("k"), "t")).toEqual({ value: { n: 1 } });
    runs.remember(withKey("k"), "t", "again", LONG);
    expect(runs.size).toBe(1);
    expect(runs.find(withKey("k"), "t")).toEqual({ value: "again" });
  });

  it("remembers nothing it was not given: short runs, keyless messages, large or non-JSON results", () => {
    const runs = new EarlierSuccesses();
    runs.remember(withKey("a"), "t", 1, LONG - 1);
    runs.remember(withKey(undefined), "t", 1, LONG);
    runs.remember(withKey("b"), "t", "x".repeat(MAX_RESULT_CHARS), LONG);
    runs.remember(withKey("c"), "t", 10n, LONG);
    expect(runs.size).toBe(0);
  });

  it("forgets a run after KEEP_MS, and the oldest past MAX_ENTRIES or MAX_TOTAL_CHARS", () => {
    let now = 0;
    const runs = new EarlierSuccesses(() => now);
    runs.remember(withKey("old"), "t", 1, LONG);
    now = KEEP_MS + 1;
    expect(runs.find(withKey("old"), "t")).toBeUndefined();
    for (let i = 0; i <= MAX_ENTRIES; i++) runs.remember(withKey(`k${i}`), "t", i, LONG);
    expect(runs.size).toBe(MAX_ENTRIES);
    expect(runs.find(withKey("k0"), "t")).toBeUndefined();
    expect(runs.find(withKey(`k${MAX_ENTRIES}`), "t")).toEqual({ value: MAX_ENTRIES });
    const big = new EarlierSuccesses(() => now);
    const value = "x".repeat(MAX_RESULT_CHARS - 2); // (its JSON has the two quotes)
    const fits = Math.floor(MAX_TOTAL_CHARS / MAX_RESULT_CHARS);
    for (let i = 0; i <= fits; i++) big.remember(withKey(`b${i}`), "t", value, LONG);
    expect(big.size).toBe(fits);
    expect(big.find(withKey("b0"), "t")).toBeUndefined();
  });
});

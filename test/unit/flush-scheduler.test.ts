import { describe, expect, it } from "vitest";
import { FlushScheduler } from "../../src/core/flush-scheduler.js";

function counting() {
  const flushes: number[] = [];
  let pending = 0;
  const scheduler = new FlushScheduler(() => {
    flushes.push(pending);
    pending = 0;
  });
  const add = () => {
    pending++;
    scheduler.request();
  };
  return { flushes, add };
}

const nextIteration = () => new Promise((resolve) => setImmediate(resolve));

describe("FlushScheduler", () => {
  it("flushes the work of one callback at the end of its tick", async () => {
    const { flushes, add } = counting();
    add();
    add();
    expect(flushes).toEqual([]);
    await Promise.resolve();
    await new Promise((resolve) => process.nextTick(resolve));
    expect(flushes).toEqual([2]);
  });

  it("joins the later callbacks of one iteration (e.g. timers ending together) into one flush", async () => {
    const { flushes, add } = counting();
    // Ten callbacks of one check phase, each followed by its own nextTick queue.
    await new Promise<void>((resolve) => {
      let left = 10;
      for (let i = 0; i < 10; i++) {
        setImmediate(() => {
          add();
          if (--left === 0) resolve();
        });
      }
    });
    await nextIteration();
    // The first callback's tick flushed at once, the other nine went out together.
    expect(flushes).toEqual([1, 9]);
  });

  it("flushes at once again in a later iteration", async () => {
    const { flushes, add } = counting();
    add();
    await nextIteration();
    await nextIteration();
    add();
    await new Promise((resolve) => process.nextTick(resolve));
    expect(flushes).toEqual([1, 1]);
  });
});

import { describe, expect, it, vi } from "vitest";
import { MemoryBroker } from "../../src/brokers/memory.js";
import { BrokerConnectionError } from "../../src/errors.js";

describe("MemoryBroker specifics", () => {
  it("keeps delayed messages across disconnect and re-arms their timer on connect", async () => {
    const broker = new MemoryBroker();
    await broker.connect();
    await broker.publish("q", { id: "a", body: "A", delayMs: 50 });
    await broker.disconnect();
    await new Promise((resolve) => setTimeout(resolve, 80));
    await broker.connect();
    const consumer = broker.consumer({ queues: ["q"], consumerId: "c" });
    const [delivery] = await consumer.fetch(1, AbortSignal.timeout(2000));
    expect(delivery?.body).toBe("A");
    await delivery?.ack();
    await broker.disconnect();
  });

  it("a delay past what a timer holds (30 days) arms a few timers, not one every millisecond", async () => {
    vi.useFakeTimers();
    try {
      const broker = new MemoryBroker();
      await broker.connect();
      const armed = vi.spyOn(globalThis, "setTimeout");
      await broker.publish("q", { id: "a", body: "A", delayMs: 30 * 86_400_000 });
      await vi.advanceTimersByTimeAsync(1000);
      expect(armed.mock.calls.length).toBeLessThan(5); // (an overflowing timer fires after 1 ms)
      expect(await broker.getQueueSize("q")).toBe(1);
      await broker.disconnect();
    } finally {
      vi.useRealTimers();
      vi.restoreAllMocks();
    }
  });

  it("throws BrokerConnectionError when not connected", async () => {
    const broker = new MemoryBroker();
    await expect(broker.publish("q", { id: "a", body: "A" })).rejects.toBeInstanceOf(BrokerConnectionError);
    const consumer = broker.consumer({ queues: ["q"], consumerId: "c" });
    await expect(consumer.fetch(1, AbortSignal.timeout(100))).rejects.toBeInstanceOf(BrokerConnectionError);
    expect((await broker.healthcheck()).connected).toBe(false);
  });

  it("wakes a waiting fetch as soon as a message is published", async () => {
    const broker = new MemoryBroker();
    await broker.connect();
    const consumer = broker.consumer({ queues: ["a", "b"], consumerId: "c" });
    const fetching = consumer.fetch(5, AbortSignal.timeout(4000));
    await broker.publish("b", { id: "x", body: "X" });
    const got = await fetching;
    expect(got.map((d) => [d.queue, d.body])).toEqual([["b", "X"]]);
    await broker.disconnect();
  });

  it("prefers the first queue of a consumer", async () => {
    const broker = new MemoryBroker();
    await broker.connect();
    await broker.publish("low", { id: "1", body: "L" });
    await broker.publish("high", { id: "2", body: "H" });
    const consumer = broker.consumer({ queues: ["high", "low"], consumerId: "c" });
    const got = await consumer.fetch(2, AbortSignal.timeout(1000));
    expect(got.map((d) => d.body)).toEqual(["H", "L"]);
    await broker.disconnect();
  });

  it("exposes no settle methods on the broker itself", () => {
    const broker = new MemoryBroker() as unknown as Record<string, unknown>;
    for (const name of ["ack", "retry", "deadLetter", "release", "take"]) expect(broker[name]).toBeUndefined();
  });
});

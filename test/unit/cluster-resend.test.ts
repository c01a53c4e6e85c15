/** A publish call sent again while a Redis Cluster fails over or migrates its slot. */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { isClusterMoving, resendWhileClusterMoves } from "../../src/redis/cluster-resend.js";

describe("resendWhileClusterMoves", () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "performance"] });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  /** A send that fails with `errors` in turn, then answers "OK"; counts its calls. */
  function sendFailing(...errors: Error[]) {
    let calls = 0;
    const send = async () => {
      const error = errors[calls++];
      if (error) throw error;
      return "OK";
    };
    return { send, calls: () => calls };
  }

  it("tells a Cluster in transition from other errors", () => {
    expect(isClusterMoving(new Error("CLUSTERDOWN The cluster is down"))).toBe(true);
    expect(isClusterMoving(new Error("TRYAGAIN Multiple keys request during rehashing of slot"))).toBe(true);
    expect(isClusterMoving(new Error("Too many Cluster redirections. Last error: ReplyError: MOVED 1 x:1"))).toBe(true);
    expect(isClusterMoving(new Error("Connection is closed."))).toBe(false);
    expect(isClusterMoving(new Error("NOPERM this user has no permissions"))).toBe(false);
    expect(isClusterMoving("CLUSTERDOWN")).toBe(false);
  });

  it("sends again, with growing pauses, until the Cluster answers", async () => {
    const s = sendFailing(
      new Error("CLUSTERDOWN The cluster is down"),
      new Error("Too many Cluster redirections. Last error: CLUSTERDOWN"),
      new Error("TRYAGAIN"),
    );
    const answer = resendWhileClusterMoves(s.send, performance.now() + 10_000);
    await vi.advanceTimersByTimeAsync(0);
    expect(s.calls()).toBe(1);
    await vi.advanceTimersByTimeAsync(100);
    expect(s.calls()).toBe(2);
    await vi.advanceTimersByTimeAsync(199);
    expect(s.calls()).toBe(2);
    await vi.advanceTimersByTimeAsync(1);
    expect(s.calls()).toBe(3);
    await vi.advanceTimersByTimeAsync(400);
    await expect(answer).resolves.toBe("OK");
    expect(s.calls()).toBe(4);
  });

  it("does not send again after another error", async () => {
    const s = sendFailing(new Error("NOPERM this user has no permissions"));
    await expect(resendWhileClusterMoves(s.send, performance.now() + 10_000)).rejects.toThrow("NOPERM");
    expect(s.calls()).toBe(1);
  });

  it("gives up with the last error once its time is up", async () => {
    const moving = () => new Error("CLUSTERDOWN The cluster is down");
    const s = sendFailing(...Array.from({ length: 100 }, moving));
    const answer = resendWhileClusterMoves(s.send, performance.now() + 1500);
    const outcome = answer.catch((error: Error) => error.message);
    await vi.advanceTimersByTimeAsync(5000);
    expect(await outcome).toBe("CLUSTERDOWN The cluster is down");
    // sent at 0, 100, 300, 700, then at the limit (1500): the pause never passes it
    expect(s.calls()).toBe(5);
  });
});

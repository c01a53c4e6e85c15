/** One shared timer that times out pending operations in deadline order. */
import { once } from "node:events";
import { connect as netConnect, type Socket } from "node:net";
import { Worker } from "node:worker_threads";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { Deadlines } from "../../src/core/deadlines.js";

describe("Deadlines", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  const deadlines = () => new Deadlines(1000, (label, ms) => new Error(`${label} timed out after ${ms} ms`));

  it("passes through what settles in time, value or error", async () => {
    const d = deadlines();
    await expect(d.guard(Promise.resolve(1), "a")).resolves.toBe(1);
    await expect(d.guard(Promise.reject(new Error("boom")), "b")).rejects.toThrow("boom");
    await vi.advanceTimersByTimeAsync(5000);
  });

  it("rejects each pending operation at its own deadline, and only those", async () => {
    const d = deadlines();
    const never = new Promise<number>(() => undefined);
    let finishLater!: (v: number) => void;
    const first = d.guard(never, "first");
    const firstResult = first.catch((e: Error) => e.message);
    await vi.advanceTimersByTimeAsync(400);
    const second = d.guard(
      new Promise<number>((resolve) => {
        finishLater = resolve;
      }),
      "second",
    );
    const third = d.guard(never, "third");
    const thirdResult = third.catch((e: Error) => e.message);
    await vi.advanceTimersByTimeAsync(601); // (rejected a turn after its deadline: see the last test)
    expect(await firstResult).toBe("first timed out after 1000 ms");
    finishLater(2);
    expect(await second).toBe(2);
    let thirdDone = false;
    void thirdResult.then(() => {
      thirdDone = true;
    });
    await vi.advanceTimersByTimeAsync(300);
    expect(thirdDone).toBe(false);
    await vi.advanceTimersByTimeAsync(100);
    expect(await thirdResult).toBe("third timed out after 1000 ms");
  });

  it("times out a late operation queued after thousands that completed", async () => {
    const d = deadlines();
    for (let i = 0; i < 5000; i++) await d.guard(Promise.resolve(i), "q");
    const late = d.guard(new Promise(() => undefined), "late").catch((e: Error) => e.message);
    await vi.advanceTimersByTimeAsync(1001);
    expect(await late).toBe("late timed out after 1000 ms");
  });

  it("whenIdle() resolves once every pending operation is answered or timed out", async () => {
    const d = deadlines();
    await d.whenIdle(); // nothing pending: at once
    let answer!: (v: number) => void;
    const answered = d.guard(
      new Promise<number>((resolve) => {
        answer = resolve;
      }),
      "answered",
    );
    const timedOut = d.guard(new Promise<number>(() => undefined), "timed-out").catch((e: Error) => e.message);
    let idle = false;
    void d.whenIdle().then(() => {
      idle = true;
    });
    answer(1);
    expect(await answered).toBe(1);
    expect(idle).toBe(false); // one still pending
    await vi.advanceTimersByTimeAsync(1001);
    expect(await timedOut).toBe("timed-out timed out after 1000 ms");
    expect(idle).toBe(true);
  });

  it("whenIdle() resolves when rejectAll() ends the pending operations", async () => {
    const d = deadlines();
    const pending = d.guard(new Promise<number>(() => undefined), "p").catch((e: Error) => e.message);
    const idle = d.whenIdle();
    d.rejectAll((label) => new Error(`${label} dropped`));
    await idle;
    expect(await pending).toBe("p dropped");
  });
});

describe("Deadlines, on a real event loop", () => {
  it("takes a reply that came while the event loop was blocked past the limit: it is read before the timeout rejects", async () => {
    // an echo server on a thread of its own (it answers while this thread is blocked): the
    // operation is answered by a socket read, as a Redis reply is
    const server = new Worker(
      `const net = require("node:net");
       const { parentPort } = require("node:worker_threads");
       const server = net.createServer((socket) => socket.pipe(socket));
       server.listen(0, "127.0.0.1", () => parentPort.postMessage(server.address().port));`,
      { eval: true },
    );
    const [port] = (await once(server, "message")) as [number];
    const client: Socket = netConnect(port, "127.0.0.1");
    try {
      await once(client, "connect");
      const d = new Deadlines(50, (label) => new Error(`${label} timed out`));
      const reply = d.guard(
        once(client, "data").then(([data]) => String(data)),
        "echo",
      );
      client.write("pong");
      // a synchronous task holds the loop past the limit; the reply arrives meanwhile
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 200);
      // before, the overdue timer ran first (timers before the poll phase) and rejected it
      expect(await reply).toBe("pong");
    } finally {
      client.destroy();
      await server.terminate();
    }
  });
});

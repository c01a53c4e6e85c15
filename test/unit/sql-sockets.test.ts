/**
 * The socket bookkeeping under the SQL backends' pools (`sql-sockets.ts`): which sockets an
 * operation holds, what giving up on it closes, that release wrappers never pile up, and that
 * closing a pool the database no longer answers is bounded. The behaviour against real
 * databases is in `test/integration/sql/sql-backend-outage.test.ts`.
 */
import { EventEmitter } from "node:events";
import { describe, expect, it } from "vitest";
import {
  closeGraceMs,
  currentOperation,
  holdSocket,
  OpenSockets,
  onRelease,
  SqlOperation,
} from "../../src/backends/sql/sql-sockets.js";

/** A socket that records its destruction and closes on it. */
class FakeSocket extends EventEmitter {
  destroyed = false;
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    queueMicrotask(() => this.emit("close"));
  }
}

describe("SqlOperation", () => {
  it("holds the sockets checked out within run() until released, and abandon() destroys only those", async () => {
    const operation = new SqlOperation();
    const released = new FakeSocket();
    const kept = new FakeSocket();
    await operation.run(async () => {
      await Promise.resolve();
      const current = currentOperation();
      expect(current).toBe(operation);
      holdSocket(current, released)();
      holdSocket(current, kept);
    });
    expect(currentOperation()).toBeUndefined();
    operation.abandon();
    expect(kept.destroyed).toBe(true);
    expect(released.destroyed).toBe(false);
  });

  it("destroys a socket checked out after the operation was abandoned", () => {
    const operation = new SqlOperation();
    operation.abandon();
    const late = new FakeSocket();
    holdSocket(operation, late);
    expect(late.destroyed).toBe(true);
  });

  it("outside an operation nothing is held", () => {
    const socket = new FakeSocket();
    holdSocket(currentOperation(), socket)();
    expect(socket.destroyed).toBe(false);
  });
});

describe("onRelease", () => {
  it("wraps one checkout only: a prototype release is back after release, letGo runs once per checkout", () => {
    const calls: string[] = [];
    class Connection {
      release(): void {
        calls.push("release");
      }
    }
    const connection = new Connection();
    for (const checkout of [1, 2, 3]) {
      onRelease(connection, () => calls.push(`letGo ${checkout}`));
      connection.release();
      expect(Object.hasOwn(connection, "release")).toBe(false);
    }
    expect(calls).toEqual(["letGo 1", "release", "letGo 2", "release", "letGo 3", "release"]);
  });

  it("puts back an own release (pg-pool gives one per checkout) with its arguments passed on", () => {
    const seen: unknown[] = [];
    const ownRelease = (error?: unknown) => seen.push(error ?? "none");
    const client = { release: ownRelease };
    let letGo = 0;
    onRelease(client, () => letGo++);
    const failure = new Error("broken");
    client.release(failure);
    expect(client.release).toBe(ownRelease);
    expect(seen).toEqual([failure]);
    expect(letGo).toBe(1);
  });
});

describe("OpenSockets.close", () => {
  it("destroys the sockets when the pool's end does not settle within the grace", async () => {
    const sockets = new OpenSockets();
    const a = new FakeSocket();
    const b = new FakeSocket();
    sockets.add(a);
    sockets.add(b);
    await sockets.close(new Promise(() => undefined), 20);
    expect([a.destroyed, b.destroyed]).toEqual([true, true]);
    expect(sockets.size).toBe(0);
  });

  it("leaves sockets that close by themselves after a graceful end alone, and destroys those that linger", async () => {
    const sockets = new OpenSockets();
    const polite = new FakeSocket();
    const lingering = new FakeSocket();
    sockets.add(polite);
    sockets.add(lingering);
    const ending = Promise.resolve().then(() => {
      setTimeout(() => polite.emit("close"), 1);
    });
    await sockets.close(ending, 50);
    expect(polite.destroyed).toBe(false);
    expect(lingering.destroyed).toBe(true);
  });

  it("a rejected end still resolves close()", async () => {
    const sockets = new OpenSockets();
    await expect(sockets.close(Promise.reject(new Error("end failed")), 20)).resolves.toBeUndefined();
  });

  it("the grace is 5 s, or queryTimeout when shorter and not 0", () => {
    expect([closeGraceMs(60_000), closeGraceMs(500), closeGraceMs(0)]).toEqual([5_000, 500, 5_000]);
  });
});

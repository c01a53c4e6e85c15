/**
 * Leases of the SQLite broker with two connections on one file: expiry and reclaim, fencing
 * of a consumer that lost its lease, renewal by a live consumer.
 */
import Database from "better-sqlite3";
import { afterEach, describe, expect, it } from "vitest";
import type { Consumer, Delivery } from "../../../src/brokers/broker.js";
import { SqliteBroker } from "../../../src/brokers/sqlite/index.js";
import type { Logger } from "../../../src/core/logger.js";
import { uniqueName } from "../../helpers/services.js";
import { removeDb, tempDbPath } from "./sqlite-test-files.js";

const LEASE_MS = 300;

/** A logger that keeps the messages of `warn`. */
function recordingLogger(): Logger & { warnings: string[] } {
  const warnings: string[] = [];
  const noop = () => {};
  const logger: Logger & { warnings: string[] } = {
    warnings,
    debug: noop,
    info: noop,
    error: noop,
    warn: (fields: Record<string, unknown> | string, message?: string) => {
      warnings.push(typeof fields === "string" ? fields : (message ?? ""));
    },
    child: () => logger,
  };
  return logger;
}

async function fetchOne(consumer: Consumer, timeoutMs = 5000): Promise<Delivery> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const [delivery] = await consumer.fetch(1, AbortSignal.timeout(Math.max(1, deadline - Date.now())));
    if (delivery) return delivery;
  }
  throw new Error(`no delivery within ${timeoutMs} ms`);
}

describe("sqlite broker leases", () => {
  const path = tempDbPath();
  const logger = recordingLogger();
  let brokers: SqliteBroker[] = [];

  async function connect(options: { busyTimeoutMs?: number; claimMinIdleMs?: number } = {}): Promise<SqliteBroker> {
    const broker = new SqliteBroker({ path, claimMinIdleMs: LEASE_MS, logger, ...options });
    await broker.connect();
    brokers.push(broker);
    return broker;
  }

  /** Writes a fresh registration for `consumerId`, as a live worker of another process does. */
  function keepPulse(consumerId: string, queue: string): void {
    const db = new Database(path);
    try {
      db.prepare("INSERT OR REPLACE INTO chicory_consumers (consumer_id, queue, last_seen) VALUES (?, ?, ?)").run(
        consumerId,
        queue,
        Date.now(),
      );
    } finally {
      db.close();
    }
  }

  /**
   * Holds the file's write lock from another connection (as a `sqlite3` shell left in a
   * transaction would) until the lease of job `deliveryId` ran out `pastMs` ago: nobody
   * can renew a lease or write a registration meanwhile.
   */
  async function holdWriteLockPastLease(deliveryId: string, pastMs = LEASE_MS / 2): Promise<void> {
    const locker = new Database(path);
    try {
      locker.exec("BEGIN IMMEDIATE");
      const row = locker.prepare("SELECT locked_until FROM chicory_jobs WHERE id = ?").get(Number(deliveryId)) as {
        locked_until: number;
      };
      // waits for a time to pass (the lease's end), which no event marks
      while (Date.now() < row.locked_until + pastMs) await new Promise((r) => setTimeout(r, 10));
      locker.exec("COMMIT");
    } finally {
      locker.close();
    }
  }

  afterEach(async () => {
    for (const broker of brokers) await broker.disconnect();
    brokers = [];
    removeDb(path);
    logger.warnings.length = 0;
  });

  it("reclaims an expired lease on another connection with deliveryCount 2", async () => {
    const a = await connect();
    const b = await connect();
    const queue = uniqueName("q");
    await a.publish(queue, { id: "t1", body: "one" });
    const dead = a.consumer({ queues: [queue], consumerId: "dead" });
    const first = await fetchOne(dead);
    expect(first.deliveryCount).toBe(1);
    await dead.close(); // stops renewing: the lease runs out
    const second = await fetchOne(b.consumer({ queues: [queue], consumerId: "alive" }), LEASE_MS * 10);
    expect(second.deliveryId).toBe(first.deliveryId);
    expect(second.deliveryCount).toBe(2);
    await second.ack();
    expect(await b.getPendingCount(queue)).toBe(0);
  });

  it("a consumer that lost its lease cannot settle the new owner's job", async () => {
    const a = await connect();
    const b = await connect();
    const queue = uniqueName("q");
    await a.publish(queue, { id: "t1", body: "one" });
    const stale = a.consumer({ queues: [queue], consumerId: "stale" });
    const lost = await fetchOne(stale);
    await stale.close();
    const owner = b.consumer({ queues: [queue], consumerId: "owner" });
    const taken = await fetchOne(owner, LEASE_MS * 10);
    expect(taken.deliveryCount).toBe(2);

    await lost.ack();
    expect(logger.warnings.some((w) => w.includes("ack of delivery") && w.includes("ignored"))).toBe(true);
    expect(await b.getPendingCount(queue)).toBe(1);
    await lost.deadLetter("late");
    await lost.retry("late", 0);
    expect(await b.getDlqCount(queue)).toBe(0);
    expect(await b.getQueueSize(queue)).toBe(0);

    // the fenced ack settled the stale delivery: the later calls were no-ops, no more warnings
    expect(logger.warnings).toHaveLength(1);

    await taken.ack();
    expect(await b.getPendingCount(queue)).toBe(0);
  });

  it("a confirmed ack (at-most-once) after the lease was lost rejects; the new owner keeps the job", async () => {
    const a = await connect();
    const b = await connect();
    const queue = uniqueName("q");
    await a.publish(queue, { id: "t1", body: "one" });
    const stale = a.consumer({ queues: [queue], consumerId: "stale" });
    const lost = await fetchOne(stale);
    await stale.close();
    const taken = await fetchOne(b.consumer({ queues: [queue], consumerId: "owner" }), LEASE_MS * 10);
    await expect(lost.ack({ confirm: true })).rejects.toThrow(/lease expired/);
    expect(await b.getPendingCount(queue)).toBe(1);
    await taken.ack({ confirm: true });
    expect(await b.getPendingCount(queue)).toBe(0);
  });

  it("tells an unsettled delivery when a renewal finds its job taken over", async () => {
    const a = await connect();
    const queue = uniqueName("q");
    await a.publish(queue, { id: "t1", body: "one" });
    const consumer = a.consumer({ queues: [queue], consumerId: "owner" });
    const delivery = await fetchOne(consumer);
    const lost = new Promise<string>((resolve) => delivery.onLeaseLost?.(resolve));
    // Another consumer holds the job now (as after this one stalled past its lease).
    const db = new Database(path);
    db.prepare("UPDATE chicory_jobs SET locked_by = 'thief' WHERE task_id = 't1'").run();
    db.close();
    expect(await lost).toBe("taken");
    await expect(delivery.ack({ confirm: true })).rejects.toThrow(/lease expired/);
  });

  it("a stale release does not unlock the new owner's job", async () => {
    const a = await connect();
    const b = await connect();
    const queue = uniqueName("q");
    await a.publish(queue, { id: "t1", body: "one" });
    const stale = a.consumer({ queues: [queue], consumerId: "stale" });
    const lost = await fetchOne(stale);
    await stale.close();
    const taken = await fetchOne(b.consumer({ queues: [queue], consumerId: "owner" }), LEASE_MS * 10);
    await lost.release();
    expect(await b.getPendingCount(queue)).toBe(1);
    const thief = a.consumer({ queues: [queue], consumerId: "thief" });
    expect(await thief.fetch(1, AbortSignal.timeout(LEASE_MS * 2))).toEqual([]);
    await thief.close();
    await taken.ack();
  });

  it("a release that fails (database locked) stops lease renewal: the job is claimed again after its lease", async () => {
    const a = new SqliteBroker({ path, claimMinIdleMs: LEASE_MS, busyTimeoutMs: 100, logger });
    await a.connect();
    brokers.push(a);
    const queue = uniqueName("q");
    await a.publish(queue, { id: "t1", body: "one" });
    const held = await fetchOne(a.consumer({ queues: [queue], consumerId: "held" }));
    const locker = new Database(path);
    try {
      locker.exec("BEGIN IMMEDIATE"); // another writer holds the lock past the busy timeout
      await expect(held.release({ countDelivery: true })).rejects.toThrow(/locked|busy/i);
    } finally {
      locker.exec("ROLLBACK");
      locker.close();
    }
    const b = await connect();
    const again = await fetchOne(b.consumer({ queues: [queue], consumerId: "next" }), LEASE_MS * 10);
    expect(again.deliveryId).toBe(held.deliveryId);
    await again.ack();
  });

  it("a consumer that stalled past its lease warns once that it lost it and is fenced", async () => {
    const a = await connect();
    const b = await connect();
    const queue = uniqueName("q");
    await a.publish(queue, { id: "t1", body: "one" });
    const stalled = a.consumer({ queues: [queue], consumerId: "stalled" });
    const held = await fetchOne(stalled);
    const until = Date.now() + LEASE_MS + 100;
    while (Date.now() < until) {
      // a synchronous stall: the renewal timer cannot run
    }
    // Another worker process, alive during the stall, kept writing its registration (the file's
    // pulse): the stall was this process's alone, so the lease that ran out is taken at once.
    keepPulse("keeper", queue);
    // fetch claims synchronously, before the stalled consumer's timer gets a turn
    const taking = b.consumer({ queues: [queue], consumerId: "taker" }).fetch(1, AbortSignal.timeout(2000));
    const [taken] = await taking;
    expect(taken?.deliveryCount).toBe(2);
    const lostWarnings = () => logger.warnings.filter((w) => w.includes("leases of in-flight deliveries were lost"));
    const deadline = Date.now() + 2000;
    while (lostWarnings().length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(lostWarnings()).toHaveLength(1);
    await held.ack();
    expect(await b.getPendingCount(queue)).toBe(1);
    await taken?.ack();
    expect(await b.getPendingCount(queue)).toBe(0);
  });

  it("a write lock held past the lease by another connection: the live owner renews first, nobody takes its job", async () => {
    const a = await connect({ busyTimeoutMs: 20 });
    const b = await connect({ busyTimeoutMs: 20 });
    const queue = uniqueName("q");
    await a.publish(queue, { id: "t1", body: "one" });
    const held = await fetchOne(a.consumer({ queues: [queue], consumerId: "owner" }));
    const taker = b.consumer({ queues: [queue], consumerId: "taker" });
    expect(await taker.fetch(1, AbortSignal.timeout(20))).toEqual([]); // registered, renewing
    await holdWriteLockPastLease(held.deliveryId);
    // The lock is gone: the taker claims synchronously, before the owner's renewal gets a turn.
    const taking = taker.fetch(1, AbortSignal.timeout(LEASE_MS * 2));
    expect(await taking).toEqual([]);
    await held.ack();
    expect(await b.getPendingCount(queue)).toBe(0);
    expect(logger.warnings.filter((w) => w.includes("ignored"))).toEqual([]);
    expect(logger.warnings.filter((w) => w.includes("no consumer wrote to the database"))).toHaveLength(1);
  });

  it("a write lock held past the lease while the owner is gone: its job is reclaimed once the stall window ends", async () => {
    const a = await connect({ busyTimeoutMs: 20 });
    const b = await connect({ busyTimeoutMs: 20 });
    const queue = uniqueName("q");
    await a.publish(queue, { id: "t1", body: "one" });
    const owner = a.consumer({ queues: [queue], consumerId: "owner" });
    const held = await fetchOne(owner);
    await owner.close(); // no more renewals
    const taker = b.consumer({ queues: [queue], consumerId: "taker" });
    expect(await taker.fetch(1, AbortSignal.timeout(20))).toEqual([]);
    await holdWriteLockPastLease(held.deliveryId);
    const lockEndedAt = Date.now();
    expect(await taker.fetch(1, AbortSignal.timeout(20))).toEqual([]); // held back by the window
    const again = await fetchOne(taker, LEASE_MS * 20);
    expect(Date.now() - lockEndedAt).toBeGreaterThanOrEqual(LEASE_MS / 2); // not before the window let it go
    expect(again.deliveryId).toBe(held.deliveryId);
    expect(again.deliveryCount).toBe(2);
    await again.ack();
    expect(await b.getPendingCount(queue)).toBe(0);
  });

  it.each([
    ["a shorter lease than the taker's", LEASE_MS, LEASE_MS * 10],
    ["a longer lease than the taker's", LEASE_MS * 4, LEASE_MS],
  ])(
    "a write lock held past the lease of an owner with %s: the owner keeps its job",
    async (_, ownerLease, takerLease) => {
      const a = await connect({ busyTimeoutMs: 20, claimMinIdleMs: ownerLease });
      const b = await connect({ busyTimeoutMs: 20, claimMinIdleMs: takerLease });
      const queue = uniqueName("q");
      await a.publish(queue, { id: "t1", body: "one" });
      const held = await fetchOne(a.consumer({ queues: [queue], consumerId: "owner" }));
      const taker = b.consumer({ queues: [queue], consumerId: "taker" });
      expect(await taker.fetch(1, AbortSignal.timeout(20))).toEqual([]); // registered, renewing
      await holdWriteLockPastLease(held.deliveryId, LEASE_MS / 2);
      const taking = taker.fetch(1, AbortSignal.timeout(ownerLease));
      expect(await taking).toEqual([]);
      await held.ack();
      expect(await b.getPendingCount(queue)).toBe(0);
      expect(logger.warnings.filter((w) => w.includes("ignored"))).toEqual([]);
    },
  );

  it("a live consumer keeps its job past several lease periods", async () => {
    const a = await connect();
    const b = await connect();
    const queue = uniqueName("q");
    await a.publish(queue, { id: "t1", body: "one" });
    const live = a.consumer({ queues: [queue], consumerId: "live" });
    const held = await fetchOne(live);
    const other = b.consumer({ queues: [queue], consumerId: "other" });
    const deadline = Date.now() + LEASE_MS * 4;
    while (Date.now() < deadline) {
      expect(await other.fetch(1, AbortSignal.timeout(Math.max(1, deadline - Date.now())))).toEqual([]);
    }
    expect(await b.getPendingCount(queue)).toBe(1);
    await held.ack();
    expect(logger.warnings).toEqual([]);
  });
});

/**
 * The SQLite broker shared by several processes on one file: disjoint deliveries, concurrent
 * schema creation, and recovery of the jobs of a SIGKILLed consumer.
 */
import { rmSync, writeFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import type { Delivery } from "../../../src/brokers/broker.js";
import { SqliteBroker } from "../../../src/brokers/sqlite/index.js";
import { useCleanups } from "../../helpers/cleanups.js";
import { uniqueName } from "../../helpers/services.js";
import { startChild } from "./sqlite-child-process.js";
import { removeDb, tempDbPath } from "./sqlite-test-files.js";

describe("sqlite broker across processes", () => {
  const cleanups = useCleanups();

  async function broker(path: string, claimMinIdleMs = 30_000): Promise<SqliteBroker> {
    const b = new SqliteBroker({ path, claimMinIdleMs });
    await b.connect();
    cleanups.push(() => b.disconnect());
    return b;
  }

  function tempDb(): string {
    const path = tempDbPath();
    cleanups.push(() => removeDb(path));
    return path;
  }

  it("two consumers in two processes never receive the same job", async () => {
    const path = tempDb();
    const queue = uniqueName("q");
    const parent = await broker(path);
    const total = 1000;
    for (let i = 0; i < total; i++) await parent.publish(queue, { id: `job-${i}`, body: `job-${i}` });
    const goFile = `${path}.go`;
    cleanups.push(() => rmSync(goFile, { force: true }));
    const child = startChild({ mode: "drain", path, queue, goFile });
    cleanups.push(() => void child.process.kill("SIGKILL"));
    await child.waitFor((line) => line.ready === true);
    const consumer = parent.consumer({ queues: [queue], consumerId: "parent" });
    writeFileSync(goFile, ""); // both processes start draining now
    const mine: string[] = [];
    for (;;) {
      const batch = await consumer.fetch(5, AbortSignal.timeout(300));
      for (const delivery of batch) {
        mine.push(delivery.body);
        expect(delivery.deliveryCount).toBe(1);
        await delivery.ack();
      }
      if (batch.length === 0 && (await parent.getQueueSize(queue)) === 0) break;
      await new Promise((resolve) => setTimeout(resolve, 1)); // work takes time: the other process gets its turn
    }
    await child.waitFor((line) => line.done === true);
    expect(await child.exited).toBe(0);
    const theirLines = child.lines.filter((line) => typeof line.body === "string");
    const theirs = theirLines.map((line) => line.body as string);
    expect(theirLines.every((line) => line.deliveryCount === 1)).toBe(true);
    const overlap = mine.filter((body) => theirs.includes(body));
    expect(overlap).toEqual([]);
    // both processes took part (the test would prove nothing otherwise)
    expect(theirs.length).toBeGreaterThan(0);
    expect(mine.length).toBeGreaterThan(0);
    expect(new Set([...mine, ...theirs]).size).toBe(total);
    expect(mine.length + theirs.length).toBe(total);
    await consumer.close();
  });

  it("creates the schema safely when 4 processes open a new file at once", async () => {
    const path = tempDb();
    const queue = uniqueName("q");
    const children = [0, 1, 2, 3].map((n) => startChild({ mode: "publish", path, queue, count: 5, prefix: `p${n}` }));
    for (const child of children) cleanups.push(() => void child.process.kill("SIGKILL"));
    const codes = await Promise.all(children.map((child) => child.exited));
    expect(codes).toEqual([0, 0, 0, 0]);
    const parent = await broker(path);
    expect(await parent.getQueueSize(queue)).toBe(20);
  });

  it("every job claimed by a SIGKILLed process is claimable again after its lease expires", async () => {
    const path = tempDb();
    const queue = uniqueName("q");
    const leaseMs = 1500;
    const parent = await broker(path, leaseMs);
    const total = 10;
    for (let i = 0; i < total; i++) await parent.publish(queue, { id: `job-${i}`, body: `job-${i}` });
    const child = startChild({ mode: "hold", path, queue, leaseMs, count: 6 });
    cleanups.push(() => void child.process.kill("SIGKILL"));
    const line = await child.waitFor((l) => Array.isArray(l.claimed));
    const claimed = line.claimed as string[];
    expect(claimed).toHaveLength(6);
    expect(await parent.getPendingCount(queue)).toBe(6);
    child.process.kill("SIGKILL");
    await child.exited;
    const killedAt = Date.now();

    const consumer = parent.consumer({ queues: [queue], consumerId: "survivor" });
    // at once: only the jobs the dead process never claimed (its leases have >= 2/3 left)
    const first = await consumer.fetch(total, AbortSignal.timeout(1000));
    expect(first.map((d) => d.deliveryId).filter((id) => claimed.includes(id))).toEqual([]);
    expect(first).toHaveLength(total - claimed.length);
    const got: Delivery[] = [...first];
    const deadline = Date.now() + 10_000;
    while (got.length < total && Date.now() < deadline) {
      got.push(...(await consumer.fetch(total - got.length, AbortSignal.timeout(1000))));
    }
    expect(got).toHaveLength(total);
    const reclaimed = got.filter((d) => claimed.includes(d.deliveryId));
    expect(reclaimed).toHaveLength(6);
    for (const delivery of reclaimed) expect(delivery.deliveryCount).toBe(2);
    for (const delivery of got.filter((d) => !claimed.includes(d.deliveryId))) expect(delivery.deliveryCount).toBe(1);
    // reclaimed only after the dead process's lease ran out (it may have renewed just before dying)
    expect(Date.now() - killedAt).toBeGreaterThanOrEqual((leaseMs * 2) / 3 - 50);
    for (const delivery of got) await delivery.ack();
    expect(await parent.getQueueSize(queue)).toBe(0);
    expect(await parent.getPendingCount(queue)).toBe(0);
    await consumer.close();
  });
});

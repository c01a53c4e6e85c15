/**
 * Read-ahead of the Redis broker (`prefetch`): entries read beyond the free slots wait in the
 * consumer, leased and renewed, are handed out without a round trip, are never handed out
 * once their lease was lost, and go back to the group at once when the fetch signal aborts or
 * the consumer closes. Shared test Redis, random prefix.
 */
import { describe, expect, it } from "vitest";
import type { Delivery } from "../../../src/brokers/broker.js";
import type { RedisBrokerOptions } from "../../../src/brokers/redis/redis-broker-options.js";
import { RELEASED_CONSUMER } from "../../../src/brokers/redis/redis-keys.js";
import { MessageCodec } from "../../../src/core/message.js";
import { encodeTask, eventually } from "../../contract/contract-helpers.js";
import { useCleanups } from "../../helpers/cleanups.js";
import { skipUnless } from "../../helpers/services.js";
import { openBrokerSandbox } from "./redis-broker-sandbox.js";

const skip = await skipUnless("redis");
const codec = new MessageCodec();

/** Blocks the event loop for `ms` (a CPU-bound handler): no timer, no renewal runs meanwhile. */
function stall(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // busy
  }
}

describe.skipIf(skip)("redis broker: read-ahead (prefetch)", () => {
  const cleanups = useCleanups();

  async function setup(options: RedisBrokerOptions, jobs: number) {
    const sandbox = await openBrokerSandbox(options, codec, cleanups);
    const { broker, queue, raw, stream, group } = sandbox;
    for (let i = 0; i < jobs; i++) {
      const task = encodeTask(codec);
      await broker.publish(queue, { id: task.id, body: task.body });
    }
    /** Entries of the pending list per consumer name. */
    const pendingByConsumer = async (): Promise<Record<string, number>> => {
      const [, , , owners] = (await raw.xpending(stream, group)) as [number, string, string, Array<[string, string]>];
      return Object.fromEntries((owners ?? []).map(([name, n]) => [name, Number(n)]));
    };
    /** What a consumer of another broker takes, once it takes exactly `n` entries. */
    const takenByAnother = async (n: number): Promise<Delivery[]> => {
      const other = sandbox.consumer(await sandbox.newBroker());
      return eventually(async () => {
        const got = await other.fetch(n + 1, AbortSignal.timeout(200));
        expect(got).toHaveLength(n);
        return got;
      }, 5000);
    };
    /** Ids of the entries the (only) consumer holds besides `running`: its read-ahead. */
    const readAheadIds = async (running: Delivery | undefined): Promise<string[]> => {
      const [owner] = Object.keys(await pendingByConsumer()) as [string];
      const entries = (await raw.xpending(stream, group, "-", "+", 10, owner)) as Array<[string]>;
      return entries.map(([id]) => id).filter((id) => id !== running?.deliveryId);
    };
    return { ...sandbox, pendingByConsumer, takenByAnother, readAheadIds };
  }

  it("reads prefetch entries beyond max and hands them out on the next fetch without reading", async () => {
    const s = await setup({ prefetch: 3 }, 10);
    const c = s.consumer();
    const first = await c.fetch(2, AbortSignal.timeout(3000));
    expect(first).toHaveLength(2);
    expect(c.inFlight).toBe(2);
    expect(Object.values(await s.pendingByConsumer())).toEqual([5]);
    // the broker's counts see the buffered entries as waiting, not in flight
    expect(await s.broker.getPendingCount(s.queue)).toBe(2);
    expect(await s.broker.getQueueSize(s.queue)).toBe(8);

    const second = await c.fetch(5, AbortSignal.timeout(3000));
    expect(second).toHaveLength(3); // the buffer only: no read, nothing more pending
    expect(Object.values(await s.pendingByConsumer())).toEqual([5]);
    const third = await c.fetch(5, AbortSignal.timeout(3000));
    expect(third).toHaveLength(5);
    const ids = [...first, ...second, ...third].map((d) => d.deliveryId);
    expect(new Set(ids).size).toBe(10);
    expect([...ids].sort()).toEqual(ids); // in stream order
    for (const d of [...first, ...second, ...third]) await d.ack();
    expect(await s.raw.xlen(s.stream)).toBe(0);
  });

  it("renews the leases of buffered entries: no other consumer reclaims them while this one lives", async () => {
    const leaseMs = 300;
    const s = await setup({ prefetch: 2, claimMinIdleMs: leaseMs }, 3);
    const c = s.consumer();
    const [running] = await c.fetch(1, AbortSignal.timeout(3000));
    expect(running).toBeDefined();
    const other = s.consumer(await s.newBroker());
    // three lease times pass while the other consumer reads and reclaims
    const stolen = [];
    const until = Date.now() + 3 * leaseMs;
    while (Date.now() < until) stolen.push(...(await other.fetch(5, AbortSignal.timeout(leaseMs / 2))));
    expect(stolen.map((d) => d.deliveryId)).toEqual([]);
    const buffered = await c.fetch(5, AbortSignal.timeout(3000));
    expect(buffered.map((d) => d.deliveryCount)).toEqual([1, 1]);
    for (const d of [running, ...buffered]) await d?.ack();
  });

  it("never hands out a buffered entry whose lease was lost", async () => {
    const leaseMs = 300;
    const s = await setup({ prefetch: 2, claimMinIdleMs: leaseMs }, 3);
    const c = s.consumer();
    const [running] = await c.fetch(1, new AbortController().signal);
    const bufferedIds = await s.readAheadIds(running);
    expect(bufferedIds).toHaveLength(2);
    // another consumer takes one buffered entry over (as after a stall past the lease)
    await s.raw.xclaim(s.stream, s.group, "thief", 0, bufferedIds[0] as string, "JUSTID");
    // the next renewal finds it lost and drops it from the buffer
    await eventually(
      async () => expect((c as unknown as { bufferedCount(q: string): number }).bufferedCount(s.queue)).toBe(1),
      3000,
    );
    const next = await c.fetch(5, AbortSignal.timeout(3000));
    expect(next.map((d) => d.deliveryId)).toEqual([bufferedIds[1]]);
    for (const d of [running, ...next]) await d?.ack();
  });

  it("after a stall past half the lease, checks the buffered entries' owner before handing any out", async () => {
    const leaseMs = 400;
    const s = await setup({ prefetch: 2, claimMinIdleMs: leaseMs }, 3);
    const c = s.consumer();
    const [running] = await c.fetch(1, new AbortController().signal);
    const bufferedIds = await s.readAheadIds(running);
    expect(bufferedIds).toHaveLength(2);
    // Another consumer takes one over while this process is stalled (a CPU-bound handler):
    // the stall keeps the renewal timer from running before the next fetch.
    await s.raw.xclaim(s.stream, s.group, "thief", 0, bufferedIds[0] as string, "JUSTID");
    stall(leaseMs * 0.75);
    const next = await c.fetch(5, AbortSignal.timeout(3000));
    expect(next.map((d) => d.deliveryId)).toEqual([bufferedIds[1]]);
    for (const d of [running, ...next]) await d?.ack();
  });

  it("drops the buffer when its group is gone (Redis restarted empty) and goes on with a new group", async () => {
    const leaseMs = 100;
    const s = await setup({ prefetch: 2, claimMinIdleMs: leaseMs }, 3);
    const c = s.consumer();
    const [running] = await c.fetch(1, new AbortController().signal);
    expect(running).toBeDefined();
    // As after a restart without persistence: the stream, its group and the buffered entries
    // are gone; the renewals fail meanwhile and the buffered entries' leases go stale.
    await s.raw.del(s.stream);
    const task = encodeTask(codec);
    await s.broker.publish(s.queue, { id: task.id, body: task.body });
    stall(leaseMs); // no renewal confirms them meanwhile
    const next = await eventually(async () => {
      const got = await c.fetch(5, AbortSignal.timeout(500));
      expect(got).toHaveLength(1);
      return got;
    }, 5000);
    expect(next[0]?.body).toBe(task.body);
    await next[0]?.ack();
  });

  it("a queue whose group is gone does not stop the lease renewal of the consumer's other queues", async () => {
    const leaseMs = 300;
    const s = await setup({ prefetch: 0, claimMinIdleMs: leaseMs }, 0);
    const gone = `${s.queue}-gone`;
    for (const queue of [gone, s.queue]) {
      const task = encodeTask(codec);
      await s.broker.publish(queue, { id: task.id, body: task.body });
    }
    const c = s.consumer(s.broker, [gone, s.queue]);
    const held = await eventually(async () => {
      const got = await c.fetch(2, AbortSignal.timeout(500));
      expect(got).toHaveLength(2);
      return got;
    }, 3000);
    await s.raw.del(`${s.prefix}:stream:{${gone}}`); // its group with it
    const other = s.consumer(await s.newBroker());
    const stolen = [];
    const until = Date.now() + 3 * leaseMs;
    while (Date.now() < until) stolen.push(...(await other.fetch(5, AbortSignal.timeout(leaseMs / 2))));
    expect(stolen.map((d) => d.deliveryId)).toEqual([]);
    const kept = held.find((d) => d.queue === s.queue);
    await kept?.ack();
  });

  it("releases the buffer at once when told to stop fetching: another consumer takes it, no delivery burnt", async () => {
    const s = await setup({ prefetch: 3, claimMinIdleMs: 60_000 }, 4);
    const c = s.consumer();
    const signal = AbortSignal.timeout(300);
    const [running] = await c.fetch(1, signal);
    expect(running).toBeDefined();
    // a per-call signal that fires after its fetch returned leaves the buffer alone
    if (!signal.aborted) await new Promise((resolve) => signal.addEventListener("abort", resolve));
    expect((c as unknown as { bufferedCount(q: string): number }).bufferedCount(s.queue)).toBe(3);
    c.stopFetching?.(); // as a stopping worker does
    // the lease is 60 s: only a release makes them claimable now
    const taken = await s.takenByAnother(3);
    expect(taken.map((d) => d.deliveryCount)).toEqual([1, 1, 1]);
    expect(await c.fetch(5, AbortSignal.timeout(200))).toEqual([]);
    for (const d of [running, ...taken]) await d?.ack();
  });

  it("releases the buffer when the consumer closes", async () => {
    const s = await setup({ prefetch: 2, claimMinIdleMs: 60_000 }, 3);
    const c = s.consumer();
    const [running] = await c.fetch(1, AbortSignal.timeout(3000));
    await running?.ack();
    await c.close();
    const taken = await s.takenByAnother(2);
    for (const d of taken) await d.ack();
    expect(await s.raw.xlen(s.stream)).toBe(0);
  });

  it("a consumer that gave entries back leaves the group when it closes; they wait for any consumer", async () => {
    const s = await setup({ prefetch: 2, claimMinIdleMs: 60_000 }, 3);
    const c = s.consumer();
    const [running] = await c.fetch(1, AbortSignal.timeout(3000));
    await running?.ack();
    await c.close();
    // the two read-ahead entries belong to the shared holder of given-back entries, not to c
    expect(await s.pendingByConsumer()).toEqual({ [RELEASED_CONSUMER]: 2 });
    const names = async () =>
      ((await s.raw.call("XINFO", "CONSUMERS", s.stream, s.group)) as string[][]).map((c) => c[1]);
    expect(await names()).toEqual([RELEASED_CONSUMER]);
    expect(await s.broker.getConsumerCount(s.queue)).toBe(0);
    expect(await s.broker.getPendingCount(s.queue)).toBe(0);
    expect(await s.broker.getQueueSize(s.queue)).toBe(2);
    const taken = await s.takenByAnother(2);
    expect(taken.map((d) => d.deliveryCount)).toEqual([1, 1]); // no delivery burnt
    expect(await s.broker.getPendingCount(s.queue)).toBe(2);
    expect(await s.broker.getQueueSize(s.queue)).toBe(0);
    for (const d of taken) await d.ack();
    // holding nothing, the holder goes with the next cleanup, whatever its idle time; not counted
    expect(await s.broker.cleanupStaleClients(s.queue, 3600)).toBe(0);
    expect(await names()).not.toContain(RELEASED_CONSUMER);
  });
});

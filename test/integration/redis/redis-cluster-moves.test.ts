/**
 * Publishes while a Redis Cluster moves a queue's slot: three master nodes this test starts.
 * A slot left half-migrated (`CLUSTER SETSLOT … MIGRATING` / `IMPORTING`) answers `TRYAGAIN` to
 * a publish script whose receipt key is on neither node; the ioredis `Cluster` gives up after
 * its redirections (~1.6 s by default), and the broker sends the same call (same receipt)
 * again until its publish time limit: the publish lands once the slot is stable again.
 */
import type { Cluster } from "ioredis";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RedisBroker } from "../../../src/brokers/redis/index.js";
import { queueKeys } from "../../../src/brokers/redis/redis-keys.js";
import { MessageCodec } from "../../../src/core/message.js";
import { encodeTask, eventually } from "../../contract/contract-helpers.js";
import { capturingLogger } from "../../helpers/capturing-logger.js";
import { startRedisCluster, type TestRedisCluster } from "../../helpers/redis-cluster.js";
import { skipUnless } from "../../helpers/services.js";
import { testPrefix } from "./redis-test-keys.js";

const skip = await skipUnless("redis");
const codec = new MessageCodec();

describe.skipIf(skip)("redis broker on a Cluster whose slots move", () => {
  let cluster: TestRedisCluster | undefined;
  let client: Cluster | undefined;
  beforeAll(async () => {
    cluster = await startRedisCluster();
    client = cluster.client();
    client.on("error", () => undefined);
  }, 60_000);
  afterAll(async () => {
    client?.disconnect();
    await cluster?.stop();
  });

  /** A plain connection to each node, with its id and whether it serves `slot`. */
  async function nodesOf(slot: number): Promise<Array<{ conn: Redis; id: string; owns: boolean }>> {
    const ports = cluster?.ports ?? [];
    return Promise.all(
      ports.map(async (port) => {
        const conn = new Redis(port, "127.0.0.1", { maxRetriesPerRequest: 0 });
        const id = String(await conn.call("CLUSTER", "MYID"));
        const slots = (await conn.call("CLUSTER", "SLOTS")) as Array<[number, number, [string, number, string]]>;
        const owner = slots.find(([from, to]) => slot >= from && slot <= to)?.[2]?.[2];
        return { conn, id, owns: owner === id };
      }),
    );
  }

  /** The slot of `key`, the nodes (see nodesOf), the one that serves it and another one. */
  async function slotOf(key: string) {
    if (!client) throw new Error("the test cluster did not start");
    const slot = Number(await client.call("CLUSTER", "KEYSLOT", key));
    const nodes = await nodesOf(slot);
    const source = nodes.find((n) => n.owns);
    const target = nodes.find((n) => !n.owns);
    if (!source || !target) throw new Error(`no owner of slot ${slot} found`);
    return { slot, nodes, source, target };
  }

  it("a publish during a slot migration is sent again until the slot is stable: applied once", async () => {
    if (!client || !cluster) throw new Error("the test cluster did not start");
    const prefix = testPrefix();
    const broker = new RedisBroker({ client, keyPrefix: prefix, env: {} });
    await broker.connect();
    const queue = "moving";
    const keys = queueKeys(prefix, queue);
    const first = encodeTask(codec);
    await broker.publish(queue, { id: first.id, body: first.body }); // the stream exists
    const { slot, nodes, source, target } = await slotOf(keys.stream);
    try {
      await target.conn.call("CLUSTER", "SETSLOT", slot, "IMPORTING", source.id);
      await source.conn.call("CLUSTER", "SETSLOT", slot, "MIGRATING", target.id);
      const second = encodeTask(codec);
      let settled: "published" | "rejected" | undefined;
      const publishing = broker.publish(queue, { id: second.id, body: second.body }).then(
        (result) => {
          settled = "published";
          return result;
        },
        (error: unknown) => {
          settled = "rejected";
          throw error;
        },
      );
      // The Cluster client gives up after 16 redirections (about 17 tries, 100 ms apart): once
      // the node refused more tries than that, the publish has outlived it, still waiting.
      const refusals = async () =>
        Number(/errorstat_TRYAGAIN:count=(\d+)/.exec(String(await source.conn.info("errorstats")))?.[1] ?? 0);
      const before = await refusals();
      await eventually(async () => expect(await refusals()).toBeGreaterThanOrEqual(before + 20), 10_000);
      expect(settled).toBeUndefined();
      await source.conn.call("CLUSTER", "SETSLOT", slot, "STABLE");
      await target.conn.call("CLUSTER", "SETSLOT", slot, "STABLE");
      expect(await publishing).toEqual({ published: true });
      expect(await client.xlen(keys.stream)).toBe(2);
    } finally {
      await source.conn.call("CLUSTER", "SETSLOT", slot, "STABLE").catch(() => undefined);
      await target.conn.call("CLUSTER", "SETSLOT", slot, "STABLE").catch(() => undefined);
      for (const n of nodes) n.conn.disconnect();
      await broker.disconnect();
      await cluster.deletePrefix(prefix);
    }
  }, 30_000);

  it("the eviction check asks every master: one that may evict is named", async () => {
    if (!client || !cluster) throw new Error("the test cluster did not start");
    const port = cluster.ports[cluster.ports.length - 1] ?? 0;
    const node = new Redis(port, "127.0.0.1", { maxRetriesPerRequest: 0 });
    const warned = new Promise<Error>((resolve) => {
      const onWarning = (warning: Error & { code?: string }) => {
        if (warning.code !== "CHICORY_REDIS_EVICTION") return;
        process.off("warning", onWarning);
        resolve(warning);
      };
      process.on("warning", onWarning);
    });
    const broker = new RedisBroker({ client, keyPrefix: testPrefix(), env: {} });
    try {
      await node.config("SET", "maxmemory", "500mb");
      await node.config("SET", "maxmemory-policy", "allkeys-lru");
      await broker.connect();
      // before, one INFO went to whichever node the client picked: this one in a third of runs
      expect((await warned).message).toMatch(
        new RegExp(`^Redis broker \\(.*, node 127\\.0\\.0\\.1:${port}\\): maxmemory-policy allkeys-lru`),
      );
    } finally {
      await node.config("SET", "maxmemory", "0");
      await node.config("SET", "maxmemory-policy", "noeviction");
      node.disconnect();
      await broker.disconnect();
    }
  });

  it("a read blocked on a stream whose slot moves to another node reads there: no 'group missing' warning", async () => {
    if (!client || !cluster) throw new Error("the test cluster did not start");
    const prefix = testPrefix();
    const { logger, lines } = capturingLogger();
    const broker = new RedisBroker({ client, keyPrefix: prefix, env: {}, logger, blockMs: 20_000 });
    await broker.connect();
    const queue = "moved";
    const keys = queueKeys(prefix, queue);
    const first = encodeTask(codec);
    await broker.publish(queue, { id: first.id, body: first.body });
    const consumer = broker.consumer({ queues: [queue], consumerId: "reader" });
    const { slot, nodes, source, target } = await slotOf(keys.stream);
    try {
      const [taken] = await consumer.fetch(1, AbortSignal.timeout(10_000));
      await taken?.ack(); // the group is there, and the stream
      const blocked = async () => Number(/blocked_clients:(\d+)/.exec(String(await source.conn.info("clients")))?.[1]);
      const before = await blocked();
      const reading = consumer.fetch(1, AbortSignal.timeout(20_000)); // blocks on the source node
      await eventually(async () => expect(await blocked()).toBeGreaterThan(before), 10_000);
      // The whole move, as redis-cli --cluster reshard does it: the stream leaves the source
      // (the blocked read ends with "UNBLOCKED the stream key no longer exists")
      await target.conn.call("CLUSTER", "SETSLOT", slot, "IMPORTING", source.id);
      await source.conn.call("CLUSTER", "SETSLOT", slot, "MIGRATING", target.id);
      const moving = (await source.conn.call("CLUSTER", "GETKEYSINSLOT", slot, 1000)) as string[];
      const port = cluster.ports[nodes.indexOf(target)] ?? 0;
      await source.conn.call("MIGRATE", "127.0.0.1", port, "", 0, 5000, "KEYS", ...moving);
      for (const n of nodes) await n.conn.call("CLUSTER", "SETSLOT", slot, "NODE", target.id);
      expect(await reading).toEqual([]);
      const second = encodeTask(codec);
      await broker.publish(queue, { id: second.id, body: second.body });
      const [next] = await consumer.fetch(1, AbortSignal.timeout(10_000));
      expect(next?.deliveryId).toBeDefined();
      await next?.ack();
      // before, it warned that the group was lost ("Redis restarted without persistence …"),
      // and a second move within 10 s paused the worker's fetches
      expect(lines.filter((line) => /group missing/.test(line.message))).toEqual([]);
      await consumer.close();
    } finally {
      for (const n of nodes) n.conn.disconnect();
      await broker.disconnect();
      await cluster.deletePrefix(prefix);
    }
  }, 60_000);
});

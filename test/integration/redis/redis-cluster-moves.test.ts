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

  it("a publish during a slot migration is sent again until the slot is stable: applied once", async () => {
    if (!client || !cluster) throw new Error("the test cluster did not start");
    const prefix = testPrefix();
    const broker = new RedisBroker({ client, keyPrefix: prefix, env: {} });
    await broker.connect();
    const queue = "moving";
    const keys = queueKeys(prefix, queue);
    const first = encodeTask(codec);
    await broker.publish(queue, { id: first.id, body: first.body }); // the stream exists
    const slot = Number(await client.call("CLUSTER", "KEYSLOT", keys.stream));
    const nodes = await nodesOf(slot);
    const source = nodes.find((n) => n.owns);
    const target = nodes.find((n) => !n.owns);
    if (!source || !target) throw new Error(`no owner of slot ${slot} found`);
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
});

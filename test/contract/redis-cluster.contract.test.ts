/**
 * The broker contract and the worker end-to-end suite on a Redis Cluster: three master nodes
 * the test starts itself (random free ports), the broker given a `Cluster` client. Every key a
 * script touches carries the queue's hash tag, so each call stays in one slot; the queues of
 * one test land on different nodes. The result backend, which needs a single node, runs on the
 * shared test Redis.
 */
import type { Cluster } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RedisBackend } from "../../src/backends/redis/index.js";
import type { Broker } from "../../src/brokers/broker.js";
import { RedisBroker } from "../../src/brokers/redis/index.js";
import { Chicory, ConfigurationError } from "../../src/index.js";
import { startRedisCluster, type TestRedisCluster } from "../helpers/redis-cluster.js";
import { SERVICES, skipUnless } from "../helpers/services.js";
import { deletePrefix, testPrefix } from "../integration/redis/redis-test-keys.js";
import { runWorkerE2E } from "../integration/worker-e2e.js";
import { runBrokerContract } from "./broker-contract.js";

const CLAIM_MIN_IDLE_MS = 1000;
// redis-server on PATH is what this needs; the shared test Redis stands for "Redis is installed"
const skip = await skipUnless("redis");

if (!skip) {
  let cluster: TestRedisCluster | undefined;
  let client: Cluster | undefined;
  beforeAll(async () => {
    cluster = await startRedisCluster();
    client = cluster.client();
  }, 60_000);
  afterAll(async () => {
    client?.disconnect();
    await cluster?.stop();
  });

  runBrokerContract({
    name: "redis cluster",
    listsDlqAfter: true,
    claimMinIdleMs: CLAIM_MIN_IDLE_MS,
    create: () => {
      if (!client) throw new Error("the test cluster did not start");
      return new RedisBroker({
        client,
        keyPrefix: testPrefix(),
        claimMinIdleMs: CLAIM_MIN_IDLE_MS,
        env: {},
      });
    },
    destroy: async (broker: Broker) => {
      if (broker instanceof RedisBroker) await cluster?.deletePrefix(broker.settings.keyPrefix);
    },
  });

  runWorkerE2E({
    name: "redis cluster broker + redis backend",
    createApp: () => {
      if (!client) throw new Error("the test cluster did not start");
      const prefix = testPrefix();
      return new Chicory({
        broker: new RedisBroker({
          client,
          keyPrefix: prefix,
          claimMinIdleMs: CLAIM_MIN_IDLE_MS,
          env: {},
        }),
        backend: new RedisBackend({ url: SERVICES.redis, keyPrefix: prefix, env: {} }),
      });
    },
    destroy: async (app: Chicory) => {
      if (!(app.broker instanceof RedisBroker)) return;
      await cluster?.deletePrefix(app.broker.settings.keyPrefix);
      await deletePrefix(app.broker.settings.keyPrefix);
    },
  });

  describe("a redis:// URL that names one node of the cluster", () => {
    it("is refused at connect, by the broker and the backend, saying to use a Cluster client", async () => {
      const url = `redis://127.0.0.1:${cluster?.ports[0]}/0`;
      // before: the worker started, then every call on another node's keys failed (MOVED,
      // CROSSSLOT) and its jobs ran again and again
      for (const open of [
        () => new RedisBroker({ url, env: {} }).connect(),
        () => new RedisBackend({ url, env: {} }).connect(),
      ]) {
        const error = await open().catch((e: unknown) => e);
        expect(error).toBeInstanceOf(ConfigurationError);
        expect(String(error)).toMatch(/is a node of a Redis Cluster.*client: new Cluster/);
      }
    });
  });
}

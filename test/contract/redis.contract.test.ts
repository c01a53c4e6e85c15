/**
 * The broker and backend contracts on Redis (shared test Redis, a random key prefix per
 * test, keys deleted afterwards); the broker's twice, without and with read-ahead.
 */
import type { Backend } from "../../src/backends/backend.js";
import { RedisBackend } from "../../src/backends/redis/index.js";
import type { Broker } from "../../src/brokers/broker.js";
import { RedisBroker } from "../../src/brokers/redis/index.js";
import { SERVICES, skipUnless } from "../helpers/services.js";
import { deletePrefix, testPrefix } from "../integration/redis/redis-test-keys.js";
import { runBackendContract } from "./backend-contract.js";
import { runBrokerContract } from "./broker-contract.js";

const CLAIM_MIN_IDLE_MS = 1000;
const skip = await skipUnless("redis");

if (!skip) {
  runBrokerContract({
    name: "redis",
    claimMinIdleMs: CLAIM_MIN_IDLE_MS,
    listsDlqAfter: true,
    create: () =>
      new RedisBroker({ url: SERVICES.redis, keyPrefix: testPrefix(), claimMinIdleMs: CLAIM_MIN_IDLE_MS, env: {} }),
    destroy: async (broker: Broker) => {
      if (broker instanceof RedisBroker) await deletePrefix(broker.settings.keyPrefix);
    },
  });

  // Read-ahead on: the same contract holds with entries buffered beyond the free slots.
  runBrokerContract({
    name: "redis (prefetch 4)",
    claimMinIdleMs: CLAIM_MIN_IDLE_MS,
    listsDlqAfter: true,
    create: () =>
      new RedisBroker({
        url: SERVICES.redis,
        keyPrefix: testPrefix(),
        claimMinIdleMs: CLAIM_MIN_IDLE_MS,
        prefetch: 4,
        env: {},
      }),
    destroy: async (broker: Broker) => {
      if (broker instanceof RedisBroker) await deletePrefix(broker.settings.keyPrefix);
    },
  });

  runBackendContract({
    name: "redis",
    create: () => new RedisBackend({ url: SERVICES.redis, keyPrefix: testPrefix(), env: {} }),
    destroy: async (backend: Backend) => {
      if (backend instanceof RedisBackend) await deletePrefix(backend.settings.keyPrefix);
    },
  });
}

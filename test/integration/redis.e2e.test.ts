import { Redis } from "ioredis";
import { Chicory } from "../../src/index.js";
import { SERVICES, skipUnless, uniqueName } from "../helpers/services.js";
import { runWorkerE2E } from "./worker-e2e.js";

const skip = await skipUnless("redis");
const prefixes = new WeakMap<Chicory, string>();

async function deleteKeys(prefix: string): Promise<void> {
  const redis = new Redis(SERVICES.redis);
  try {
    let cursor = "0";
    do {
      const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}:*`, "COUNT", 1000);
      cursor = next;
      if (keys.length) await redis.del(...keys);
    } while (cursor !== "0");
  } finally {
    redis.disconnect();
  }
}

if (!skip) {
  runWorkerE2E({
    name: "redis broker + redis backend",
    createApp: () => {
      const prefix = uniqueName("e2e");
      const app = new Chicory({
        broker: SERVICES.redis,
        config: {
          env: {
            CHICORY_BROKER_REDIS_KEY_PREFIX: prefix,
            CHICORY_BROKER_REDIS_CLAIM_MIN_IDLE_MS: "1000",
            CHICORY_BACKEND_REDIS_KEY_PREFIX: prefix,
          },
        },
      });
      prefixes.set(app, prefix);
      return app;
    },
    destroy: async (app) => deleteKeys(prefixes.get(app) ?? "none"),
  });
}

import { Redis } from "ioredis";
import { Chicory } from "../../src/index.js";
import { SERVICES, skipUnless, uniqueName } from "../helpers/services.js";
import { runWorkerE2E } from "./worker-e2e.js";

const skip = await skipUnless("redis");
const prefixes = new WeakMap<Chicory, string>();

/** The test server's URL with another logical database. */
function otherDatabase(url: string): string {
  const u = new URL(url);
  u.pathname = u.pathname === "/1" ? "/2" : "/1";
  return u.toString();
}

async function deleteKeys(prefix: string, url: string = SERVICES.redis): Promise<void> {
  const redis = new Redis(url);
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

  // The backend on another database: results and acks are two calls (store, then ack).
  runWorkerE2E({
    name: "redis broker + redis backend on another database",
    createApp: () => {
      const prefix = uniqueName("e2e");
      const app = new Chicory({
        broker: SERVICES.redis,
        backend: otherDatabase(SERVICES.redis),
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
    destroy: async (app) => {
      await deleteKeys(prefixes.get(app) ?? "none");
      await deleteKeys(prefixes.get(app) ?? "none", otherDatabase(SERVICES.redis));
    },
  });
}

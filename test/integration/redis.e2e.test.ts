import { Chicory } from "../../src/index.js";
import { SERVICES, skipUnless, uniqueName } from "../helpers/services.js";
import { deletePrefix, otherDatabase } from "./redis/redis-test-keys.js";
import { runWorkerE2E } from "./worker-e2e.js";

const skip = await skipUnless("redis");
const prefixes = new WeakMap<Chicory, string>();

/** An app on the test Redis with a fresh key prefix; the backend on `backendUrl` (default: the broker's). */
function makeApp(backendUrl?: string, extraEnv: Record<string, string> = {}): Chicory {
  const prefix = uniqueName("e2e");
  const app = new Chicory({
    broker: SERVICES.redis,
    ...(backendUrl === undefined ? {} : { backend: backendUrl }),
    config: {
      env: {
        CHICORY_BROKER_REDIS_KEY_PREFIX: prefix,
        CHICORY_BROKER_REDIS_CLAIM_MIN_IDLE_MS: "1000",
        CHICORY_BACKEND_REDIS_KEY_PREFIX: prefix,
        ...extraEnv,
      },
    },
  });
  prefixes.set(app, prefix);
  return app;
}

if (!skip) {
  runWorkerE2E({
    name: "redis broker + redis backend",
    createApp: () => makeApp(),
    destroy: async (app) => deletePrefix(prefixes.get(app) ?? "none"),
  });
  // The backend on another database: results and acks are two calls (store, then ack).
  runWorkerE2E({
    name: "redis broker + redis backend on another database",
    createApp: () => makeApp(otherDatabase()),
    destroy: async (app) => {
      await deletePrefix(prefixes.get(app) ?? "none");
      await deletePrefix(prefixes.get(app) ?? "none", otherDatabase());
    },
  });
  // Read-ahead on (entries buffered beyond the free slots, released when the worker stops).
  runWorkerE2E({
    name: "redis broker with prefetch 8 + redis backend",
    createApp: () => makeApp(undefined, { CHICORY_BROKER_REDIS_PREFETCH: "8" }),
    destroy: async (app) => deletePrefix(prefixes.get(app) ?? "none"),
  });
}

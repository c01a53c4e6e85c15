import { Redis } from "ioredis";
import { Chicory } from "../../src/index.js";
import { SERVICES, skipUnless, uniqueName } from "../helpers/services.js";
import { dropMysqlTables, dropPgTables } from "./sql/sql-test-helpers.js";
import { runWorkerE2E } from "./worker-e2e.js";

const skipRedis = await skipUnless("redis");
const skipPg = await skipUnless("postgres");
const skipMysql = await skipUnless("mysql");
const names = new WeakMap<Chicory, string>();

async function deleteRedisKeys(prefix: string): Promise<void> {
  const redis = new Redis(SERVICES.redis);
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length) await redis.del(...keys);
  redis.disconnect();
}

function redisBrokerWith(backend: string, backendEnv: Record<string, string>): () => Chicory {
  return () => {
    const name = uniqueName("e2e");
    const app = new Chicory({
      broker: SERVICES.redis,
      backend,
      config: {
        env: {
          CHICORY_BROKER_REDIS_KEY_PREFIX: name,
          CHICORY_BROKER_REDIS_CLAIM_MIN_IDLE_MS: "1000",
          ...Object.fromEntries(Object.entries(backendEnv).map(([k, v]) => [k, v.replace("$NAME", name)])),
        },
      },
    });
    names.set(app, name);
    return app;
  };
}

if (!skipRedis && !skipPg) {
  runWorkerE2E({
    name: "redis broker + postgres backend",
    createApp: redisBrokerWith(SERVICES.postgres, { CHICORY_BACKEND_POSTGRES_TABLE_PREFIX: "$NAME_" }),
    destroy: async (app) => {
      const name = names.get(app) ?? "none";
      await deleteRedisKeys(name);
      await dropPgTables(`${name}_`);
    },
  });
}

if (!skipRedis && !skipMysql) {
  runWorkerE2E({
    name: "redis broker + mysql backend",
    createApp: redisBrokerWith(SERVICES.mysql, { CHICORY_BACKEND_MYSQL_TABLE_PREFIX: "$NAME_" }),
    destroy: async (app) => {
      const name = names.get(app) ?? "none";
      await deleteRedisKeys(name);
      await dropMysqlTables(`${name}_`);
    },
  });
}

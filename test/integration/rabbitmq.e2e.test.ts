import { Redis } from "ioredis";
import { RabbitMqBroker } from "../../src/brokers/rabbitmq/index.js";
import { Chicory } from "../../src/index.js";
import { SERVICES, skipUnless, uniqueName } from "../helpers/services.js";
import { deleteQueues } from "./rabbitmq/rabbitmq-test-utils.js";
import { runWorkerE2E } from "./worker-e2e.js";

const skip = (await skipUnless("rabbitmq")) || (await skipUnless("redis"));
const names = new WeakMap<Chicory, string>();

if (!skip) {
  runWorkerE2E({
    name: "rabbitmq broker + redis backend",
    createApp: () => {
      const name = uniqueName("e2e");
      const app = new Chicory({
        broker: new RabbitMqBroker({ url: SERVICES.rabbitmq, prefix: name, connectionName: name }),
        backend: SERVICES.redis,
        config: { env: { CHICORY_BACKEND_REDIS_KEY_PREFIX: name } },
      });
      names.set(app, name);
      return app;
    },
    destroy: async (app) => {
      await deleteQueues(app.broker as RabbitMqBroker);
      const redis = new Redis(SERVICES.redis);
      const keys = await redis.keys(`${names.get(app)}:*`);
      if (keys.length) await redis.del(...keys);
      redis.disconnect();
    },
  });
}

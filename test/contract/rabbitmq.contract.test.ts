/**
 * The broker contract on RabbitMQ: a random queue prefix per test, every queue under it
 * deleted afterwards. Classic queues with priorities, and quorum queues.
 */
import { describe } from "vitest";
import type { Broker } from "../../src/brokers/broker.js";
import { RabbitMqBroker } from "../../src/brokers/rabbitmq/index.js";
import { skipUnless } from "../helpers/services.js";
import { deleteQueues, testBroker } from "../integration/rabbitmq/rabbitmq-test-utils.js";
import { runBrokerContract } from "./broker-contract.js";

const CLAIM_MIN_IDLE_MS = 1000;
const skip = await skipUnless("rabbitmq");

const destroy = async (broker: Broker) => {
  if (broker instanceof RabbitMqBroker) await deleteQueues(broker);
};

describe.skipIf(skip)("rabbitmq", () => {
  runBrokerContract({
    name: "rabbitmq classic",
    claimMinIdleMs: CLAIM_MIN_IDLE_MS,
    create: () => testBroker({ claimMinIdleMs: CLAIM_MIN_IDLE_MS, maxPriority: 10 }),
    destroy,
  });
  runBrokerContract({
    name: "rabbitmq quorum",
    claimMinIdleMs: CLAIM_MIN_IDLE_MS,
    create: () => testBroker({ claimMinIdleMs: CLAIM_MIN_IDLE_MS, queueType: "quorum", deliveryLimit: 20 }),
    destroy,
  });
});

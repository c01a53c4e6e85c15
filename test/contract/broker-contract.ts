/**
 * The broker contract: every semantic of `src/brokers/broker.ts` (module header and member
 * docs) and SPEC §7, run against each implementation by
 * `test/contract/<kind>.contract.test.ts`:
 *
 * ```ts
 * runBrokerContract({ name: "redis", create: () => new RedisBroker({ url, prefix, claimMinIdleMs: 1000 }),
 *   claimMinIdleMs: 1000, destroy: async (broker, queues) => { ... } });
 * ```
 *
 * Optional features are skipped by capability with a printed reason.
 */
import { afterEach, beforeEach, describe } from "vitest";
import type { Broker, Consumer } from "../../src/brokers/broker.js";
import { MessageCodec } from "../../src/core/message.js";
import { uniqueName } from "../helpers/services.js";
import { brokerAdminTests } from "./broker-contract-admin.js";
import { brokerDeliveryTests } from "./broker-contract-delivery.js";
import { brokerDlqTests } from "./broker-contract-dlq.js";

/** How a broker implementation plugs into {@link runBrokerContract}. */
export interface BrokerContractTarget {
  /** Shown in the describe block: `broker contract: ${name}`. */
  name: string;
  /**
   * A fresh, isolated broker (own key prefix / file / vhost), NOT yet connected, configured
   * with `claimMinIdleMs` = {@link BrokerContractTarget.claimMinIdleMs}.
   */
  create(): Promise<Broker> | Broker;
  /** The broker's lease / claim-min-idle time in milliseconds (default 1000). */
  claimMinIdleMs?: number;
  /** The broker lists a DLQ past an entry id (`getDlqMessagesAfter`): tested, and required. */
  listsDlqAfter?: boolean;
  /**
   * Removes everything the broker created; called after `disconnect`. `queues` lists every
   * queue name the test used (for brokers whose queues live outside a per-broker prefix).
   */
  destroy?(broker: Broker, queues: readonly string[]): Promise<void>;
}

/** What the test groups get: the fresh broker of the running test and helpers around it. */
export interface BrokerHarness {
  /** The target under test. */
  readonly target: BrokerContractTarget;
  /** Lease time in milliseconds. */
  readonly claimMinIdleMs: number;
  /** The codec bound to the broker (no signing). */
  readonly codec: MessageCodec;
  /** The connected broker of the running test. */
  broker(): Broker;
  /** The running test's default queue (random name). */
  queue(): string;
  /** Another random queue name, cleaned up with the test. */
  newQueue(): string;
  /** A consumer (closed after the test) of `queues` (default: the test's queue). */
  consumer(queues?: readonly string[]): Consumer;
}

interface RunningTest {
  readonly broker: Broker;
  readonly queues: string[];
  readonly consumers: Consumer[];
}

/** Registers the broker contract suite for `target`. */
export function runBrokerContract(target: BrokerContractTarget): void {
  describe(`broker contract: ${target.name}`, () => {
    const codec = new MessageCodec();
    let running: RunningTest | undefined;

    const current = (): RunningTest => {
      if (!running) throw new Error("no broker: the harness is used outside a test");
      return running;
    };

    const harness: BrokerHarness = {
      target,
      claimMinIdleMs: target.claimMinIdleMs ?? 1000,
      codec,
      broker: () => current().broker,
      queue: () => {
        const queue = current().queues[0];
        if (queue === undefined) throw new Error("no queue");
        return queue;
      },
      newQueue: () => {
        const queue = uniqueName("cq");
        current().queues.push(queue);
        return queue;
      },
      consumer: (queues) => {
        const test = current();
        const consumer = test.broker.consumer({
          queues: queues ?? [harness.queue()],
          consumerId: uniqueName("consumer-"),
        });
        test.consumers.push(consumer);
        return consumer;
      },
    };

    beforeEach(async () => {
      const broker = await target.create();
      broker.bind({ codec });
      await broker.connect();
      running = { broker, queues: [uniqueName("cq")], consumers: [] };
    });

    afterEach(async () => {
      const test = running;
      running = undefined;
      if (!test) return;
      try {
        await Promise.allSettled(test.consumers.map((consumer) => consumer.close()));
        await test.broker.disconnect();
      } finally {
        await target.destroy?.(test.broker, test.queues);
      }
    });

    brokerDeliveryTests(harness);
    brokerDlqTests(harness);
    brokerAdminTests(harness);
  });
}

/**
 * A Redis broker sandbox for the broker's own integration tests: a random key prefix and
 * queue on the shared test Redis, brokers and consumers that are closed, and keys that are
 * deleted, by the cleanup it registers.
 */
import type { Consumer } from "../../../src/brokers/broker.js";
import { RedisBroker } from "../../../src/brokers/redis/index.js";
import type { RedisBrokerOptions } from "../../../src/brokers/redis/redis-broker-options.js";
import type { MessageCodec } from "../../../src/core/message.js";
import type { Cleanups } from "../../helpers/cleanups.js";
import { SERVICES, uniqueName } from "../../helpers/services.js";
import { deletePrefix, rawRedis, testPrefix } from "./redis-test-keys.js";

/** What {@link openBrokerSandbox} gives a test. */
export interface BrokerSandbox {
  readonly prefix: string;
  readonly queue: string;
  /** A plain client on the test Redis, to look at keys directly. */
  readonly raw: ReturnType<typeof rawRedis>;
  /** The first connected broker. */
  readonly broker: RedisBroker;
  /** Another connected broker on the same prefix (`extra` over the sandbox's options). */
  newBroker(extra?: RedisBrokerOptions): Promise<RedisBroker>;
  /** A consumer of `queues` (default: the sandbox's queue) with a fresh consumer id. */
  consumer(broker?: RedisBroker, queues?: readonly string[]): Consumer;
  /** Key of the queue's work stream. */
  readonly stream: string;
  /** Key of the queue's DLQ stream. */
  readonly dlq: string;
  /** The queue's pulse key (fleet-pulse.lua). */
  readonly pulse: string;
  readonly group: string;
}

/**
 * Opens a sandbox whose brokers use `options` and `codec`; registers its cleanup (consumers
 * closed, brokers disconnected, keys deleted) in `cleanups`.
 */
export async function openBrokerSandbox(
  options: RedisBrokerOptions,
  codec: MessageCodec,
  cleanups: Cleanups,
): Promise<BrokerSandbox> {
  const prefix = testPrefix();
  const queue = uniqueName("q");
  const raw = rawRedis();
  const brokers: RedisBroker[] = [];
  const consumers: Consumer[] = [];
  cleanups.push(async () => {
    await Promise.allSettled(consumers.map((c) => c.close()));
    await Promise.allSettled(brokers.map((b) => b.disconnect()));
    await deletePrefix(prefix);
    raw.disconnect();
  });
  const newBroker = async (extra: RedisBrokerOptions = {}) => {
    const b = new RedisBroker({ url: SERVICES.redis, keyPrefix: prefix, env: {}, ...options, ...extra });
    b.bind({ codec });
    await b.connect();
    brokers.push(b);
    return b;
  };
  const broker = await newBroker();
  const consumer = (b: RedisBroker = broker, queues: readonly string[] = [queue]) => {
    const c = b.consumer({ queues, consumerId: uniqueName("c-") });
    consumers.push(c);
    return c;
  };
  return {
    prefix,
    queue,
    raw,
    broker,
    newBroker,
    consumer,
    stream: `${prefix}:stream:{${queue}}`,
    dlq: `${prefix}:dlq:{${queue}}`,
    pulse: `${prefix}:pulse:{${queue}}`,
    group: broker.settings.consumerGroup,
  };
}

/**
 * `chicory/redis`: the Redis broker (Streams) and result backend. `ioredis` is loaded only
 * when one of them connects.
 * @example
 * ```ts
 * import { Chicory } from "chicory";
 * import { RedisBackend, RedisBroker } from "chicory/redis";
 * const app = new Chicory({ broker: new RedisBroker({ url }), backend: new RedisBackend({ url }) });
 * ```
 * @module
 */
export type { RedisBackendOptions, RedisBackendSettings } from "./backends/redis/index.js";
export { RedisBackend } from "./backends/redis/index.js";
export type { RedisBrokerOptions, RedisBrokerSettings } from "./brokers/redis/index.js";
export { RedisBroker } from "./brokers/redis/index.js";
export type { RedisArg, RedisClientLike } from "./redis/redis-client.js";
export type { ReadonlyReconnector, RedisConnectionOptions } from "./redis/redis-options.js";
export { readonlyReconnector } from "./redis/redis-options.js";
export type { RedisRecordWriter, StoreResultsCall } from "./redis/redis-record-writer.js";

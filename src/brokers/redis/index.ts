/**
 * The Redis broker (Redis Streams). Importing this module does not load `ioredis`; the
 * driver is imported when the broker connects.
 * @module
 */
export { RedisBroker } from "./redis-broker.js";
export type { RedisBrokerOptions, RedisBrokerSettings } from "./redis-broker-options.js";

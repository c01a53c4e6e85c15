/**
 * The Redis result backend. Importing this module does not load `ioredis`; the driver is
 * imported when the backend connects.
 * @module
 */
export { RedisBackend } from "./redis-backend.js";
export type { RedisBackendOptions, RedisBackendSettings } from "./redis-backend-options.js";

/** Cleanup of the infrastructure fault tests on the shared Redis. */
import { Redis } from "ioredis";
import { SERVICES } from "../../helpers/services.js";

/** Deletes every key under `prefix:` on the shared Redis (a test's broker and backend keys). */
export async function deleteRedisKeys(prefix: string): Promise<void> {
  const redis = new Redis(SERVICES.redis);
  try {
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length) await redis.del(...keys);
  } finally {
    redis.disconnect();
  }
}

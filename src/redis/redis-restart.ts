/**
 * Noticing that the Redis server behind a connection restarted (or failed over to another
 * node): its `run_id` (`INFO server`) differs after a reconnect. A server that keeps nothing
 * across restarts (no AOF, no RDB snapshot) comes back empty, and work that waits on what it
 * held (a `get()` on a job it lost) would otherwise wait without a word.
 * @module
 */
import type { RedisClientLike } from "./redis-client.js";

/**
 * Reads the server's `run_id` now and each time `client` is ready after a reconnect, and calls
 * `onRestart` when it changed. Never throws: a server that refuses `INFO` (ACL rules, some
 * managed services) is not watched.
 * @returns stops the watch (for a client that outlives its adapter)
 */
export function watchRestart(client: RedisClientLike, onRestart: () => void): () => void {
  let runId: string | undefined;
  const read = async (): Promise<void> => {
    let info: string;
    try {
      info = String(await client.call("INFO", "server"));
    } catch {
      return;
    }
    const id = /^run_id:([0-9a-f]+)/m.exec(info)?.[1];
    if (id === undefined) return;
    const isRestart = runId !== undefined && id !== runId;
    runId = id;
    if (isRestart) onRestart();
  };
  const onReady = (): void => void read();
  onReady();
  client.on("ready", onReady);
  return () => void client.off("ready", onReady);
}

/**
 * The eviction check of the Redis adapters. A Redis server with a `maxmemory` limit and an
 * eviction policy other than `noeviction` deletes keys when it runs out of memory, and nobody
 * is told: queue keys (streams, delayed sets, DLQ) under an `allkeys-*` policy, keys with a TTL
 * (results, task states, worker heartbeats, the broker's call receipts) under any policy. Lost messages cannot be detected
 * afterwards, so the adapters check when they connect, and again after every reconnect (a
 * restarted or failed-over server may run with other settings), and warn (a process warning,
 * shown by default) rather than fail: the policy may be deliberate, and managed services may
 * not allow changing it.
 * @module
 */
import { warnOnce } from "../core/warn-once.js";
import type { RedisClientLike } from "./redis-client.js";
import { isClusterClient } from "./redis-connect.js";

/** What an adapter keeps in Redis: the broker's queues, or the backend's records with TTLs. */
export type RedisData = "queues" | "records";

/** `maxmemory` (bytes, 0 = no limit) and `maxmemory_policy` from `INFO memory`, if present. */
export function memoryPolicy(info: string): { maxmemory: number; policy: string } | undefined {
  const maxmemory = /^maxmemory:(\d+)\r?$/m.exec(info)?.[1];
  const policy = /^maxmemory_policy:([a-z-]+)\r?$/m.exec(info)?.[1];
  if (maxmemory === undefined || policy === undefined) return undefined;
  return { maxmemory: Number(maxmemory), policy };
}

/**
 * What Redis may evict of `data` under the memory settings in `info` (the text of
 * `INFO memory`), as a sentence to show, or undefined when nothing of it can be evicted.
 */
export function evictionRisk(info: string, data: RedisData): string | undefined {
  const settings = memoryPolicy(info);
  if (!settings || settings.maxmemory === 0 || settings.policy === "noeviction") return undefined;
  const { policy, maxmemory } = settings;
  const setting = `maxmemory-policy ${policy} (maxmemory ${maxmemory} bytes)`;
  if (data === "queues") {
    if (policy.startsWith("allkeys-")) {
      return (
        `${setting} lets Redis delete queue keys when memory runs out: queued messages, delayed ` +
        "jobs and DLQ entries would be lost without any error; set maxmemory-policy noeviction"
      );
    }
    // Queue keys carry no TTL, so the volatile-* policies never pick them; the calls' receipts
    // (`P:sent:…`) have one.
    return (
      `${setting} lets Redis delete the broker's call receipts (keys with a TTL) when memory runs ` +
      "out: a publish or dead letter that the client sends again after a dropped connection could " +
      "then be applied twice; set maxmemory-policy noeviction"
    );
  }
  return (
    `${setting} lets Redis delete results, task states and worker heartbeats before their TTL ` +
    "when memory runs out: a waiting get() would not see its result, and a live worker could " +
    "show no heartbeat; set maxmemory-policy noeviction"
  );
}

/**
 * Reads `INFO memory` and emits one process warning (code `CHICORY_REDIS_EVICTION`) per
 * adapter and server when Redis may evict `data`. Never throws: a server that refuses `INFO`
 * (ACL rules, some managed services) is not checked.
 */
export async function warnIfEvicting(
  client: RedisClientLike,
  data: RedisData,
  what: string,
  displayUrl: string,
): Promise<void> {
  // A Cluster sends a command without a key to any one node: each master is asked instead
  // (its settings are its own), and the warning names the node.
  const masters = clusterMasters(client);
  for (const node of masters ?? [client]) {
    let info: string;
    try {
      info = String(await node.call("INFO", "memory"));
    } catch {
      continue;
    }
    const risk = evictionRisk(info, data);
    if (risk === undefined) continue;
    const where = masters === undefined ? displayUrl : `${displayUrl}, node ${nodeAddress(node)}`;
    warnOnce(`eviction ${what} ${where}`, `${what} (${where}): ${risk}`, "CHICORY_REDIS_EVICTION");
  }
}

/** The master nodes of an ioredis `Cluster`, or undefined for another client. */
function clusterMasters(client: RedisClientLike): RedisClientLike[] | undefined {
  if (!isClusterClient(client)) return undefined;
  return (client as unknown as { nodes(role: "master"): RedisClientLike[] }).nodes("master");
}

/** `host:port` of a node's connection. */
function nodeAddress(node: RedisClientLike): string {
  const options = (node as { readonly options?: { host?: unknown; port?: unknown } }).options;
  return `${String(options?.host ?? "?")}:${String(options?.port ?? "?")}`;
}

/**
 * Checks now ({@link warnIfEvicting}, in the background) and again each time `client` is ready
 * after a reconnect. The warning stays once per adapter and server.
 * @returns stops the checks after reconnects (for a client that outlives the adapter)
 */
export function watchEviction(client: RedisClientLike, data: RedisData, what: string, displayUrl: string): () => void {
  const check = (): void => void warnIfEvicting(client, data, what, displayUrl);
  check();
  client.on("ready", check);
  return () => void client.off("ready", check);
}

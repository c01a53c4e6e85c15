/**
 * The consumer's own connection for XREADGROUP: fails fast while disconnected (fetch throws
 * and the worker backs off; nothing is queued or resent), knows its CLIENT ID so a blocked
 * read can be ended with CLIENT UNBLOCK, and parses replies of either protocol.
 * @module
 */
import type { RedisClientLike } from "../../redis/redis-client.js";
import { isClusterClient, openDuplicate } from "../../redis/redis-connect.js";
import { SOCKET_TIMEOUT_MS } from "../../redis/redis-options.js";
import { defineBrokerScripts } from "./redis-scripts.js";

/**
 * How long after its block time a blocked read on the reader connection gives up, ending with
 * `null` as a read that timed out in Redis does, though Redis sent nothing (frozen, or the
 * connection half-open).
 */
export const READ_GIVE_UP_GRACE_MS = 5_000;

/** One stream entry: id and flat field list. */
export type StreamEntry = [string, string[] | null];
/** RESP2: `[[stream, entries], ...]`; RESP3 through `call`: the map flattened, `[stream, entries, ...]`. */
export type ReadReply = Array<[string, StreamEntry[]] | string | StreamEntry[]> | null;

/** The streams of an XREADGROUP reply with their entries, whichever protocol the connection speaks. */
export function streamReplies(reply: ReadReply): Array<[string, StreamEntry[]]> {
  if (reply === null || reply.length === 0) return [];
  if (typeof reply[0] !== "string") return reply as Array<[string, StreamEntry[]]>;
  const out: Array<[string, StreamEntry[]]> = [];
  for (let i = 0; i + 1 < reply.length; i += 2) out.push([String(reply[i]), reply[i + 1] as StreamEntry[]]);
  return out;
}

/**
 * Opens a reader connection duplicated from `main`. `onClientId` receives the connection's
 * CLIENT ID after every (re)connect, and undefined while it is unknown.
 */
export async function openReader(
  main: RedisClientLike,
  consumerId: string,
  blockMs: number,
  onClientId: (id: string | undefined) => void,
): Promise<RedisClientLike> {
  const conn = await openDuplicate(main, {
    enableOfflineQueue: false,
    autoResendUnfulfilledCommands: false,
    // A read in flight when the connection drops fails at once (it is not resent; on a Cluster,
    // retryDelayOnFailover 0 keeps the Cluster from sending it again after a node's close).
    maxRetriesPerRequest: 0,
    retryDelayOnFailover: 0,
    enableAutoPipelining: false,
    // Safety net for a half-open TCP connection: a blocked read gives up after its block + 5 s.
    blockingTimeout: blockMs + READ_GIVE_UP_GRACE_MS,
    blockingTimeoutGrace: READ_GIVE_UP_GRACE_MS,
    // A blocked read legitimately gets no data for blockMs: only a longer silence means dead.
    socketTimeout: blockMs + SOCKET_TIMEOUT_MS,
    connectionName: `chicory-consumer-${consumerId}`.replace(/[^A-Za-z0-9._:-]/g, "_").slice(0, 100),
  });
  defineBrokerScripts(conn);
  const refreshId = () => {
    onClientId(undefined);
    conn.call("CLIENT", "ID").then(
      (id) => onClientId(String(id)),
      () => undefined,
    );
  };
  // On a Cluster, CLIENT ID and CLIENT UNBLOCK would each reach any node, where the id names
  // another client: the id stays unknown, and a blocked read ends within its block time.
  if (isClusterClient(conn)) return conn;
  conn.on("ready", refreshId);
  if (conn.status === "ready") refreshId();
  return conn;
}

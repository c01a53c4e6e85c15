/**
 * The broker's Lua scripts (see each file's header for KEYS/ARGV, return value and why it is
 * atomic). Read once at module load from `./scripts/*.lua` (the build embeds them, see
 * `redis/lua.ts`) and registered per connection with `defineCommand`, so calls use EVALSHA.
 * @module
 */
import { readLua } from "../../redis/lua.js";
import { nameScripts, type RedisClientLike } from "../../redis/redis-client.js";

function lua(name: string, folder = "brokers/redis/scripts"): string {
  return readLua(`${folder}/${name}.lua`);
}

/**
 * `pending-of.lua`, `owner-of.lua`, `drop-unique-marker.lua` and `ack.lua` as the local functions
 * pendingOf, ownerOf, dropUniqueMarker and ack (see ack.lua's header).
 */
function ackFunctionsLua(): string {
  return [
    `local function pendingOf(stream, group, consumer, low, high)\n${lua("pending-of")}\nend`,
    ownerOfLua(),
    dropUniqueMarkerLua(),
    `local function ack(KEYS, ARGV, mine)\n${lua("ack")}\nend`,
  ].join("\n");
}

/** The acking script on its own. */
function ackLua(): string {
  return `${ackFunctionsLua()}\nreturn ack(KEYS, ARGV)`;
}

/** The result backend's `store-results.lua` as the local function storeResults(KEYS, ARGV). */
function storeResultsLua(): string {
  return `local function storeResults(KEYS, ARGV)\n${lua("store-results", "backends/redis/scripts")}\nend`;
}

/** `ack-with-records.lua` below the scripts it calls, as local functions (see its header). */
function ackWithRecordsLua(): string {
  return [storeResultsLua(), ackFunctionsLua(), lua("ack-with-records")].join("\n");
}

/** `read-after-acks.lua` below its acking script, as the local function `settle` (see its header). */
function readAfterAcksLua(settle: string): string {
  return [`local function settle(KEYS, ARGV)\n${settle}\nend`, lua("read-after-acks")].join("\n");
}

/** A settle or replay script below assertType (assert-type.lua, see its header). */
function withAssertType(body: string): string {
  return `local function assertType(key, want)\n${lua("assert-type")}\nend\n${body}`;
}

/** A script that schedules delayed messages, below addDelayed (delayed-member.lua, see its header). */
function withAddDelayed(body: string): string {
  return `local function addDelayed(zset, bodies, id, dueMs, body)\n${lua("delayed-member")}\nend\n${body}`;
}

/** A claiming script below claimEntries (claim-entries.lua, see its header). */
function withClaimEntries(name: string): string {
  return `local function claimEntries(stream, group, consumer, minIdle, ids, counts, keep)\n${lua("claim-entries")}\nend\n${lua(name)}`;
}

/** A script below fleetPulse (fleet-pulse.lua, see its header). */
function withFleetPulse(body: string): string {
  return `local function fleetPulse(key, nowMs, stallMs, leaseMs, seenMs)\n${lua("fleet-pulse")}\nend\n${body}`;
}

/** A script below heldCount (held-count.lua, see its header). */
function withHeldCount(body: string): string {
  return `local function heldCount(summary, released)\n${lua("held-count")}\nend\n${body}`;
}

/** `drop-unique-marker.lua` as the local function dropUniqueMarker (see its header). */
function dropUniqueMarkerLua(): string {
  return `local function dropUniqueMarker(stream, unique, id)\n${lua("drop-unique-marker")}\nend`;
}

/** `owner-of.lua` as the local function ownerOf (see its header). */
function ownerOfLua(): string {
  return `local function ownerOf(stream, group, id)\n${lua("owner-of")}\nend`;
}

/** A script below holderOf (holder-of.lua, see its header) and the ownerOf it calls. */
function withHolderOf(name: string): string {
  return `${ownerOfLua()}\nlocal function holderOf(stream, group, consumer, id)\n${lua("holder-of")}\nend\n${lua(name)}`;
}

/** Script name -> number of KEYS and source. Names are prefixed to avoid clashing with ioredis methods. */
const SCRIPTS = {
  chicoryPublish: { numberOfKeys: 5, lua: withAddDelayed(lua("publish")) },
  chicoryPublishBatch: { numberOfKeys: 2, lua: lua("publish-batch") },
  chicoryPublishDelayed: { numberOfKeys: 5, lua: withAddDelayed(lua("publish-delayed")) },
  chicoryMoveDelayed: { numberOfKeys: 4, lua: lua("move-delayed") },
  chicoryReclaim: { numberOfKeys: 2, lua: withHeldCount(withFleetPulse(withClaimEntries("reclaim"))) },
  chicoryRecoverOwn: { numberOfKeys: 1, lua: withClaimEntries("recover-own") },
  chicoryRenew: { numberOfKeys: 2, lua: withFleetPulse(withHolderOf("renew")) },
  chicoryLeaseState: { numberOfKeys: 1, lua: withHolderOf("lease-state") },
  chicoryRelease: { numberOfKeys: 1, lua: lua("release") },
  chicoryAck: { numberOfKeys: 2, lua: ackLua() },
  /** Variable key count: called with the number of keys first. */
  chicoryAckWithRecords: { lua: ackWithRecordsLua() },
  chicoryAckRead: { numberOfKeys: 2, lua: readAfterAcksLua(ackLua()) },
  /** Variable key count: called with the number of keys first. */
  chicoryAckWithRecordsRead: { lua: readAfterAcksLua(ackWithRecordsLua()) },
  chicoryRetry: { numberOfKeys: 3, lua: withAssertType(withAddDelayed(lua("retry"))) },
  /** Variable key count (3, or 4 with a record): called with the number of keys first. */
  chicoryDeadLetter: {
    lua: withAssertType(`${storeResultsLua()}\n${dropUniqueMarkerLua()}\n${lua("dead-letter")}`),
  },
  /** Variable key count (2, or 3 with a record): called with the number of keys first. */
  chicoryWriteDeadLetter: { lua: withAssertType(`${storeResultsLua()}\n${lua("write-dead-letter")}`) },
  chicoryReplay: { numberOfKeys: 4, lua: withAssertType(lua("replay")) },
  chicoryCreateGroup: { numberOfKeys: 2, lua: lua("create-group") },
  chicoryPurgeQueue: { numberOfKeys: 5, lua: lua("purge-queue") },
  chicoryQueueStats: { numberOfKeys: 2, lua: withHeldCount(lua("queue-stats")) },
  chicoryCleanupConsumers: { numberOfKeys: 1, lua: lua("cleanup-consumers") },
  chicoryPurgeDlq: { numberOfKeys: 2, lua: lua("purge-dlq") },
} as const;
nameScripts(SCRIPTS);

/** Name of a broker script. */
export type BrokerScript = keyof typeof SCRIPTS;

/** The source of one broker script, as the broker loads it (e.g. to measure it alone). */
export function brokerScriptSource(name: BrokerScript): string {
  return SCRIPTS[name].lua;
}

/** The source of every broker script (to load them all ahead, e.g. in a test). */
export function brokerScriptSources(): string[] {
  return Object.values(SCRIPTS).map((definition) => definition.lua);
}

/** Registers every broker script on `client` (idempotent). */
export function defineBrokerScripts(client: RedisClientLike): void {
  for (const [name, definition] of Object.entries(SCRIPTS)) client.defineCommand(name, definition);
}

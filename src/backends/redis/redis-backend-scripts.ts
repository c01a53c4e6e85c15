/**
 * The backend's Lua scripts (headers in `./scripts/*.lua`), read once at module load and
 * registered per connection with `defineCommand` (EVALSHA).
 * @module
 */
import { readLua } from "../../redis/lua.js";
import { nameScripts, type RedisClientLike } from "../../redis/redis-client.js";

function lua(name: string): string {
  return readLua(`backends/redis/scripts/${name}.lua`);
}

/** A script below holdsFinal(key) (holds-final.lua, see its header). */
function withHoldsFinal(body: string): string {
  return `local function holdsFinal(key)\n${lua("holds-final")}\nend\n${body}`;
}

const SCRIPTS = {
  chicoryStoreRecord: { numberOfKeys: 1, lua: withHoldsFinal(lua("store-record")) },
  /** Variable key count: called with the number of keys first. */
  chicoryStoreResults: { lua: lua("store-results") },
  /** Variable key count: called with the number of keys first. */
  chicoryStoreResultsUnlessFinal: {
    lua: withHoldsFinal(
      `local function storeResults(KEYS, ARGV)\n${lua("store-results")}\nend\n${lua("store-results-unless-final")}`,
    ),
  },
  chicoryStorePieces: { numberOfKeys: 2, lua: withHoldsFinal(lua("store-pieces")) },
  chicoryDeleteRecordIf: { numberOfKeys: 1, lua: lua("delete-record-if") },
  chicoryTouchWorker: { numberOfKeys: 1, lua: lua("touch-worker") },
  chicoryCleanupWorkers: { numberOfKeys: 1, lua: lua("cleanup-workers") },
} as const;
nameScripts(SCRIPTS);

/** The source of every backend script (to load them all ahead, e.g. in a test). */
export function backendScriptSources(): string[] {
  return Object.values(SCRIPTS).map((definition) => definition.lua);
}

/** Registers every backend script on `client`. */
export function defineBackendScripts(client: RedisClientLike): void {
  for (const [name, definition] of Object.entries(SCRIPTS)) client.defineCommand(name, definition);
}

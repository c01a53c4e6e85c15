/**
 * The longest argument a Redis server takes: its `proto-max-bulk-len` (512 MiB by default,
 * 1 MiB at least). A longer one is not refused by a reply the client can read: Redis closes
 * the connection as soon as it reads the argument's length, the client sends the command again
 * after each reconnect, and the connection stalls for good. So the adapters read the limit and
 * refuse such a write themselves: the backend a result (see `RedisBackend.resultSizeLimit`),
 * the broker a message (see `RedisBroker`).
 * @module
 */
import { isReplyError, type RedisClientLike } from "./redis-client.js";

/** Where the `GETBIT` probe starts: Redis's default (512 MiB), over any message or result limit. */
export const PROBE_CEILING_BYTES = 512 * 1024 * 1024;

/** A server's `proto-max-bulk-len` as read. */
export interface BulkLimit {
  /** The longest argument taken, in bytes (at least this many when `atLeast`). */
  readonly bytes: number;
  /** Found by the probe at its ceiling: the server takes `bytes` or more. */
  readonly atLeast: boolean;
  /** How the server was found to take it, to complete "the server …" in an error text. */
  readonly how: string;
}

/** What a {@link BulkLimitReader} needs of its adapter. */
export interface BulkLimitReaderOptions {
  /** A key no data uses, inside the adapter's key prefix (ACL key patterns cover it); only read. */
  readonly probeKey: string;
  /** Bounds one command's wait (Redis away: its commands queue in the client). */
  readonly guard: <T>(operation: Promise<T>, label: string) => Promise<T>;
  /** Told why a read step failed (`CONFIG GET`, then the probe); the caller logs it. */
  readonly onStepFailed: (step: "config" | "probe", error: unknown) => void;
}

/** The ACL user of a connection (a Cluster client keeps its nodes' options apart). */
function userOf(client: RedisClientLike): unknown {
  const options = (client as { readonly options?: { username?: unknown; redisOptions?: { username?: unknown } } })
    .options;
  return options?.username ?? options?.redisOptions?.username;
}

/**
 * Reads a server's `proto-max-bulk-len`, as many times as asked, with as few commands as it can:
 * `CONFIG GET` as the `default` user; for a named ACL user (whose rules rarely allow `CONFIG`:
 * each refusal would be an `ACL LOG` entry) or once `CONFIG` was refused (a reply error) or
 * answered without the value (a server that hides it; neither is asked again), a `GETBIT` probe, which refuses a bit offset of that many bytes or more ("bit
 * offset is not an integer or out of range", checked before the key is read; nothing is
 * written). The probe costs one command when the limit is at least {@link PROBE_CEILING_BYTES},
 * about 30 (a binary search) when it was lowered, two when it is the lowered value the last
 * probe found.
 */
export class BulkLimitReader {
  readonly #options: BulkLimitReaderOptions;
  /** The value the last probe found. */
  #probed: number | undefined;
  /** The server refused `CONFIG GET`. */
  #configRefused = false;

  constructor(options: BulkLimitReaderOptions) {
    this.#options = options;
  }

  /** The limit of the server `client` is connected to; undefined when it could not be read. Never throws. */
  async read(client: RedisClientLike): Promise<BulkLimit | undefined> {
    const user = userOf(client);
    if ((typeof user !== "string" || user === "" || user === "default") && !this.#configRefused) {
      try {
        const reply = await this.#options.guard(client.call("CONFIG", "GET", "proto-max-bulk-len"), "CONFIG GET");
        const bytes = Array.isArray(reply) ? Number(reply[1]) : Number.NaN;
        if (Number.isSafeInteger(bytes) && bytes > 0) {
          return { bytes, atLeast: false, how: `stores strings of at most ${bytes} bytes (its proto-max-bulk-len)` };
        }
        // an empty reply (a server that hides the parameter) or no number: probed instead, and
        // not asked again (it would answer the same)
        this.#configRefused = true;
        this.#options.onStepFailed(
          "config",
          new Error(`CONFIG GET proto-max-bulk-len answered ${JSON.stringify(reply)}`),
        );
      } catch (error) {
        // refused by the server (ACL, a renamed command): not asked again, each refusal would
        // be one more ACL LOG entry
        if (isReplyError(error)) this.#configRefused = true;
        this.#options.onStepFailed("config", error);
      }
    }
    try {
      const bytes = await this.#probe(client);
      const atLeast = bytes >= PROBE_CEILING_BYTES;
      return {
        bytes,
        atLeast,
        how: atLeast
          ? `stores strings of ${bytes} bytes or more (its proto-max-bulk-len, probed with GETBIT)`
          : `stores strings of at most ${bytes} bytes (its proto-max-bulk-len, probed with GETBIT)`,
      };
    } catch (error) {
      this.#options.onStepFailed("probe", error);
      return undefined;
    }
  }

  /** @throws when the server refuses `GETBIT` itself (ACL) or does not answer */
  async #probe(client: RedisClientLike): Promise<number> {
    const { probeKey, guard } = this.#options;
    const takes = async (bytes: number): Promise<boolean> => {
      try {
        await guard(client.call("GETBIT", probeKey, String((bytes - 1) * 8)), "GETBIT");
        return true;
      } catch (error) {
        const message = error instanceof Error ? error.message : "";
        if (/bit offset is not an integer or out of range/i.test(message)) return false;
        if (/^WRONGTYPE/.test(message)) return true; // the offset passed; the key holds another type
        throw error;
      }
    };
    const last = this.#probed;
    // unchanged since the last probe (a worker asks after each heartbeat): two commands
    if (last !== undefined && last < PROBE_CEILING_BYTES && (await takes(last)) && !(await takes(last + 1))) {
      return last;
    }
    this.#probed = await search(takes);
    return this.#probed;
  }
}

/** The largest size `takes` accepts, up to {@link PROBE_CEILING_BYTES}: a binary search. */
async function search(takes: (bytes: number) => Promise<boolean>): Promise<number> {
  if (await takes(PROBE_CEILING_BYTES)) return PROBE_CEILING_BYTES;
  let taken = 1; // GETBIT at offset 0
  let refused = PROBE_CEILING_BYTES;
  if (!(await takes(taken))) throw new Error("GETBIT refused bit offset 0");
  while (refused - taken > 1) {
    const middle = taken + Math.floor((refused - taken) / 2);
    if (await takes(middle)) taken = middle;
    else refused = middle;
  }
  return taken;
}

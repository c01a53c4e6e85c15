/**
 * Redis key names of the broker. Every per-queue key carries the queue name as a hash tag
 * (`{Q}`), so all keys one script touches live in one Cluster slot. Queue names are
 * validated (`[A-Za-z0-9._:-]`, no braces), so a name cannot break out of its tag.
 * @module
 */
import { assertValidName } from "../../core/names.js";

/**
 * The consumer that holds the entries consumers gave back (`release`) until another consumer
 * claims them: a consumer that gave entries back owns none, so it can leave the group when it
 * closes. Not a worker (a worker id has no `:`): not counted by `getConsumerCount`, its entries
 * are counted as waiting, not pending, and a cleanup deletes it whenever it holds nothing.
 */
export const RELEASED_CONSUMER = "chicory:released";

/** The keys of one queue. */
export interface QueueKeys {
  /** Queue name. */
  readonly queue: string;
  /** Work stream (field `data` = body, `id` = task id). */
  readonly stream: string;
  /**
   * Delayed messages: sorted set, member = task id (a second message of that id: the id, byte
   * 255 and a number; `delayed-member.lua`), score = due time (ms, Redis clock).
   */
  readonly delayed: string;
  /** Bodies of delayed messages: hash member -> body. */
  readonly delayedData: string;
  /** Dead-letter stream (fields data, error, failed_at, retry_count, id). */
  readonly dlq: string;
  /** Task ids published with `unique` that are queued, delayed or in flight. */
  readonly unique: string;
  /**
   * Prefix of the receipts of plain and delayed publish calls (`…:sent:{Q}:<call token>`, a string with a
   * short TTL): a call the client sends again after a dropped connection adds nothing twice.
   */
  readonly sent: string;
  /**
   * The consumers' pulse on this queue's stream (a hash: the Redis time of a live consumer's last
   * reclaim or renewal, and the out-of-touch window open after a stall; `fleet-pulse.lua`).
   */
  readonly pulse: string;
}

/** Builds the keys of `queue` under `prefix`. */
export function queueKeys(prefix: string, queue: string): QueueKeys {
  assertValidName(queue, "queue");
  const tag = `{${queue}}`;
  return {
    queue,
    stream: `${prefix}:stream:${tag}`,
    delayed: `${prefix}:delayed:${tag}`,
    delayedData: `${prefix}:delayed-data:${tag}`,
    dlq: `${prefix}:dlq:${tag}`,
    unique: `${prefix}:unique:${tag}`,
    sent: `${prefix}:sent:${tag}`,
    pulse: `${prefix}:pulse:${tag}`,
  };
}

/** Caches {@link queueKeys} per queue (publish is hot; names are few). */
export class QueueKeyCache {
  readonly #prefix: string;
  readonly #cache = new Map<string, QueueKeys>();

  constructor(prefix: string) {
    this.#prefix = prefix;
  }

  /** The keys of `queue` (validates the name on first use). */
  get(queue: string): QueueKeys {
    let keys = this.#cache.get(queue);
    if (keys === undefined) {
      keys = queueKeys(this.#prefix, queue);
      if (this.#cache.size < 10_000) this.#cache.set(queue, keys);
    }
    return keys;
  }
}

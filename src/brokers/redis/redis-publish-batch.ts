/**
 * Plain publishes (no delay, `unique` or backlog limit) to one queue in one event-loop turn
 * reach Redis as one script call (`publish-batch.lua`) instead of one `XADD` each: a process
 * that dispatches many tasks at once spends a fraction of the CPU and memory per message,
 * since the Redis client builds a command object, a promise and an argument list per call.
 * A call carries at most {@link MAX_MESSAGES} messages or {@link MAX_BYTES} of bodies; a
 * full batch is sent at once, the rest when the turn's synchronous code is done
 * (`process.nextTick`), so no message waits for I/O or timers. Each publish settles on its
 * own: the script reports how many messages it added. Each call leaves a receipt for
 * {@link RECEIPT_TTL_MS} (see `publish-batch.lua`): a copy the client sends again after it
 * dropped a connection (a Redis stalled past the reply limit still runs the first copy) adds
 * nothing twice.
 * @module
 */
import { randomBytes } from "node:crypto";
import type { Deadlines } from "../../core/deadlines.js";
import type { RedisClientLike } from "../../redis/redis-client.js";
import { runScript } from "../../redis/redis-client.js";
import type { PublishResult } from "../broker.js";

/** Most messages per script call (bounds the time Redis spends in one call). */
export const MAX_MESSAGES = 500;
/** Most body characters per script call (a batch is sent once it reaches this). */
export const MAX_BYTES = 512 * 1024;
/**
 * How long a call's receipt is kept: longer than a resent copy can follow the first (it is
 * sent once the client has reconnected, right after the stalled Redis ran the first).
 */
export const RECEIPT_TTL_MS = 60_000;

/** The outcome of every publish that is not a `unique` one (one shared object). */
const PUBLISHED: PublishResult = Object.freeze({ published: true });

interface Batch {
  readonly stream: string;
  /** Prefix of the queue's receipt keys (`…:sent:{Q}`). */
  readonly sent: string;
  readonly queue: string;
  readonly bodies: string[];
  readonly resolves: Array<(result: PublishResult) => void>;
  readonly rejects: Array<(error: Error) => void>;
  chars: number;
}

/** What the batcher needs from its broker. */
export interface PublishBatchHost {
  /** The broker's command connection. */
  readonly main: RedisClientLike;
  /** Time limit per call: rejects with the broker's timeout error. */
  readonly deadlines: Deadlines;
  /** Wraps a driver error (or an error text of the script) into the broker's error. */
  wrapError(error: unknown): Error;
}

/** Groups plain publishes per queue and turn (see module doc). */
export class PublishBatcher {
  readonly #host: PublishBatchHost;
  /** Open batches by stream key. */
  readonly #open = new Map<string, Batch>();
  /** This batcher's part of every call token; a counter tells its calls apart. */
  readonly #tokenPrefix = randomBytes(9).toString("base64url");
  #calls = 0;
  #isScheduled = false;

  constructor(host: PublishBatchHost) {
    this.#host = host;
  }

  /**
   * Adds `body` to the batch of this turn of the queue whose stream and receipt prefix are
   * given; settles when Redis has answered for it.
   */
  publish(stream: string, sent: string, queue: string, body: string): Promise<PublishResult> {
    return new Promise<PublishResult>((resolve, reject) => {
      let batch = this.#open.get(stream);
      if (batch === undefined) {
        batch = { stream, sent, queue, bodies: [], resolves: [], rejects: [], chars: 0 };
        this.#open.set(stream, batch);
        if (!this.#isScheduled) {
          this.#isScheduled = true;
          process.nextTick(this.#flushAll);
        }
      }
      batch.bodies.push(body);
      batch.resolves.push(resolve);
      batch.rejects.push(reject);
      batch.chars += body.length;
      if (batch.bodies.length >= MAX_MESSAGES || batch.chars >= MAX_BYTES) {
        this.#open.delete(stream);
        this.#send(batch);
      }
    });
  }

  /** Sends every open batch now (before the connection closes: they would go after QUIT). */
  flush(): void {
    this.#flushAll();
  }

  readonly #flushAll = (): void => {
    this.#isScheduled = false;
    for (const batch of this.#open.values()) this.#send(batch);
    this.#open.clear();
  };

  #send(batch: Batch): void {
    const host = this.#host;
    const { bodies } = batch;
    let call: Promise<unknown>;
    try {
      const receipt = `${batch.sent}:${this.#tokenPrefix}.${(this.#calls++).toString(36)}`;
      call = runScript(host.main, "chicoryPublishBatch", [batch.stream, receipt], [RECEIPT_TTL_MS, ...bodies]);
    } catch (error) {
      // e.g. the script is not defined on an injected client: every publish of the batch
      // rejects (never a throw out of the flush, which runs on its own tick)
      call = Promise.reject(error);
    }
    host.deadlines.guard(call, batch.queue).then(
      (reply) => settle(batch, reply, host),
      (error: unknown) => {
        const wrapped = host.wrapError(error);
        for (const reject of batch.rejects) reject(wrapped);
      },
    );
  }
}

/**
 * Resolves the publishes the call added, rejects the others with its error. The reply is the
 * script's: a count, or `[count, error]`.
 */
function settle(batch: Batch, reply: unknown, host: PublishBatchHost): void {
  const count = typeof reply === "number" ? reply : Array.isArray(reply) ? Number(reply[0]) : 0;
  const n = batch.resolves.length;
  const added = Number.isSafeInteger(count) && count > 0 ? Math.min(count, n) : 0;
  for (let i = 0; i < added; i++) (batch.resolves[i] as (result: PublishResult) => void)(PUBLISHED);
  if (added >= n) return;
  const text = Array.isArray(reply) ? String(reply[1]) : `unexpected reply ${JSON.stringify(reply)}`;
  const error = host.wrapError(new Error(text));
  for (let i = added; i < n; i++) (batch.rejects[i] as (error: Error) => void)(error);
}

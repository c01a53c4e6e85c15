/**
 * Plain publishes (no delay, `unique` or backlog limit) to one queue in one event-loop turn
 * reach Redis as one script call (`publish-batch.lua`) instead of one `XADD` each: a process
 * that dispatches many tasks at once spends a fraction of the CPU and memory per message,
 * since the Redis client builds a command object, a promise and an argument list per call.
 * A call carries at most {@link MAX_MESSAGES} messages or {@link MAX_BYTES} of bodies; a
 * full batch is sent at once, the rest when the turn's synchronous code is done
 * (`process.nextTick`), so no message waits for I/O or timers. A lone message is a plain
 * `XADD`. Each publish settles on its own: the script reports how many messages it added.
 * @module
 */
import type { Deadlines } from "../../core/deadlines.js";
import type { RedisClientLike } from "../../redis/redis-client.js";
import { runScript } from "../../redis/redis-client.js";
import type { PublishResult } from "../broker.js";

/** Most messages per script call (bounds the time Redis spends in one call). */
export const MAX_MESSAGES = 500;
/** Most body characters per script call (a batch is sent once it reaches this). */
export const MAX_BYTES = 512 * 1024;

/** The outcome of every publish that is not a `unique` one (one shared object). */
const PUBLISHED: PublishResult = Object.freeze({ published: true });

interface Batch {
  readonly stream: string;
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
  #isScheduled = false;

  constructor(host: PublishBatchHost) {
    this.#host = host;
  }

  /** Adds `body` to `stream`'s batch of this turn; settles when Redis has answered for it. */
  publish(stream: string, queue: string, body: string): Promise<PublishResult> {
    return new Promise<PublishResult>((resolve, reject) => {
      let batch = this.#open.get(stream);
      if (batch === undefined) {
        batch = { stream, queue, bodies: [], resolves: [], rejects: [], chars: 0 };
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
      call =
        bodies.length === 1
          ? host.main.call("XADD", batch.stream, "*", "data", bodies[0] as string)
          : (runScript(host.main, "chicoryPublishBatch", [batch.stream], bodies) as Promise<unknown>);
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
 * script's (a count, or `[count, error]`) or, for a lone `XADD`, the new entry id.
 */
function settle(batch: Batch, reply: unknown, host: PublishBatchHost): void {
  const count =
    typeof reply === "number" ? reply : typeof reply === "string" ? 1 : Array.isArray(reply) ? Number(reply[0]) : 0;
  const n = batch.resolves.length;
  const added = Number.isSafeInteger(count) && count > 0 ? Math.min(count, n) : 0;
  for (let i = 0; i < added; i++) (batch.resolves[i] as (result: PublishResult) => void)(PUBLISHED);
  if (added >= n) return;
  const text = Array.isArray(reply) ? String(reply[1]) : `unexpected reply ${JSON.stringify(reply)}`;
  const error = host.wrapError(new Error(text));
  for (let i = added; i < n; i++) (batch.rejects[i] as (error: Error) => void)(error);
}

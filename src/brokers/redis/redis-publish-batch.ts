/**
 * Plain publishes (no delay, `unique` or backlog limit) to one queue in one event-loop turn
 * reach Redis as one script call (`publish-batch.lua`) instead of one `XADD` each: a process
 * that dispatches many tasks at once spends a fraction of the CPU and memory per message,
 * since the Redis client builds a command object, a promise and an argument list per call.
 * A call carries at most {@link MAX_MESSAGES} messages or {@link MAX_BYTES} of bodies; a
 * full batch is sent at once, the rest when the turn's synchronous code is done
 * (`process.nextTick`), so no message waits for I/O or timers. Each publish settles on its
 * own: the script reports how many messages it added. Each call leaves a receipt for
 * {@link receiptTtlMs} (see `publish-batch.lua`): a copy the client sends again after it
 * dropped a connection (a Redis stalled past the reply limit still runs the first copy) adds
 * nothing twice.
 *
 * Delayed publishes to one queue in one turn go together too (`publish-delayed.lua`, the same
 * limits, and a receipt of their own: a resent copy answers as the first did): one call reads the Redis clock once for all of them, so a burst scheduled for one
 * moment gets one due time instead of due times spread over the time Redis takes to run one
 * call per message. Their calls, full ones too, leave when the turn's synchronous code is
 * done: a call written while the caller still publishes would wait for that code (its reply
 * too, which the due mover's timer starts from). The delay sent is the one asked less the
 * time it waited here since `publish` was called (at least 1 ms, rounded up): the due time is
 * then the moment asked for, measured by Redis's clock from the call (Redis runs the script
 * after it was sent, so it is never earlier), rather than that moment plus the time the whole
 * burst took to publish.
 * @module
 */
import { randomBytes } from "node:crypto";
import type { Deadlines } from "../../core/deadlines.js";
import { resendWhileClusterMoves } from "../../redis/cluster-resend.js";
import type { RedisArg, RedisClientLike } from "../../redis/redis-client.js";
import { runScript } from "../../redis/redis-client.js";
import type { PublishResult } from "../broker.js";
import type { QueueKeys } from "./redis-keys.js";

/** Most messages per script call (bounds the time Redis spends in one call). */
export const MAX_MESSAGES = 500;
/** Most body characters per script call (a batch is sent once it reaches this). */
export const MAX_BYTES = 512 * 1024;
/**
 * How long a publish call's receipt is kept at least. The client sends a call again once it has
 * reconnected, whenever that is (a stalled Redis that ran the first copy: at once; a network
 * cut that lost its reply: when the network is back): a copy that comes later than this finds
 * no receipt and adds its messages again (see "Limits" in docs/brokers/redis.md). Not longer:
 * every publish call leaves a receipt of about 150 bytes for this long.
 */
const RECEIPT_TTL_MS = 60_000;

/**
 * How long the receipt of a rare call is kept (a dead letter, a DLQ replay or purge, a batch of a
 * queue purge): an hour, so that a copy the client sends again after an outage of up to an hour
 * does not write the dead letter twice or purge the dead letters written since.
 */
export const RARE_RECEIPT_TTL_MS = 3_600_000;

/** This process's part of every receipt key; a counter tells its calls apart. */
const RECEIPT_TOKEN = randomBytes(9).toString("base64url");
let receiptCalls = 0;

/**
 * A new receipt key for one call to the queue whose receipt prefix is `sent` (`…:sent:{Q}`),
 * unique to this process and call: a publish call's (see module doc), or that of another call a
 * copy of which sent again after a dropped connection must answer as the first did (an
 * `at_most_once` dead letter, a DLQ replay or purge, a batch of a queue purge).
 */
export function receiptKey(sent: string): string {
  return `${sent}:${RECEIPT_TOKEN}.${(receiptCalls++).toString(36)}`;
}

/**
 * How long the receipts of a broker whose publish time limit is `publishTimeoutMs` are kept:
 * {@link RECEIPT_TTL_MS}, or longer than that limit plus 5 s when it is longer (on a Cluster a
 * call is sent again while the Cluster moves, until past the limit: see
 * {@link PublishBatcher.sendCall}).
 */
export function receiptTtlMs(publishTimeoutMs: number): number {
  return Math.max(RECEIPT_TTL_MS, publishTimeoutMs + 5000);
}

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

/** Delayed publishes of one queue in one turn (see module doc). */
interface DelayedBatch {
  readonly keys: QueueKeys;
  /** The backlog limit (0 = none), then four per message: task id, body, delay ms (as asked until sent), "1" = unique. */
  readonly args: Array<string | number>;
  /** `performance.now()` when each message was published. */
  readonly publishedAt: number[];
  readonly resolves: Array<(code: number) => void>;
  readonly rejects: Array<(error: Error) => void>;
  chars: number;
}

/** A delayed publish to hand to {@link PublishBatcher.publishDelayed}. */
export interface DelayedPublish {
  /** Task id (the delayed set's member). */
  readonly id: string;
  readonly body: string;
  /** Delay asked for, ms (> 0). */
  readonly delayMs: number;
  /** Refused when a message of the id is queued, delayed or running. */
  readonly unique: boolean;
}

/** What the batcher needs from its broker. */
export interface PublishBatchHost {
  /**
   * The connection publish calls go on: the broker's command connection, or one of their own
   * when they wait for replicas (a `WAIT` blocks its connection).
   */
  readonly main: RedisClientLike;
  /** Replicas each call waits for (`WAIT`, after the call's reply on the same connection), if any. */
  readonly wait?: { readonly replicas: number; readonly timeoutMs: number } | undefined;
  /** True when `main` is a Redis Cluster client (publish calls are then resent while it moves). */
  readonly isCluster: boolean;
  /** Time limit per call: rejects with the broker's timeout error. */
  readonly deadlines: Deadlines;
  /** Wraps a driver error (or an error text of the script) into the broker's error. */
  wrapError(error: unknown): Error;
  /** Notes a delayed job Redis accepted `delayMs` from now (see `redis-due-mover.ts`). */
  scheduleMove(keys: QueueKeys, delayMs: number): void;
}

/** Groups plain publishes per queue and turn (see module doc). */
export class PublishBatcher {
  readonly #host: PublishBatchHost;
  /** Open batches by stream key. */
  readonly #open = new Map<string, Batch>();
  /** Open batches of delayed publishes by stream key. */
  readonly #openDelayed = new Map<string, DelayedBatch>();
  /** Full batches of delayed publishes, sent with the open ones at the end of the turn. */
  #fullDelayed: DelayedBatch[] = [];
  #isScheduled = false;

  /** Waits for replicas after the calls (`waitReplicas`), if asked. */
  readonly #confirmer: ReplicaConfirmer | undefined;
  /** How long each call's receipt is kept, ms ({@link receiptTtlMs}). */
  readonly receiptTtlMs: number;

  constructor(host: PublishBatchHost) {
    this.#host = host;
    this.receiptTtlMs = receiptTtlMs(host.deadlines.timeoutMs);
    this.#confirmer = host.wait === undefined ? undefined : new ReplicaConfirmer(host.main, host.wait);
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
        this.#schedule();
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

  /**
   * Adds a delayed publish to the batch of this turn of `keys`'s queue (see module doc);
   * settles with `publish-delayed.lua`'s answer for it: 1 published, 0 not (unique id
   * present), -1 backlog over `maxLength`. A published one is handed to the due mover.
   */
  publishDelayed(keys: QueueKeys, message: DelayedPublish, maxLength: number): Promise<number> {
    const publishedAt = performance.now();
    return new Promise<number>((resolve, reject) => {
      let batch = this.#openDelayed.get(keys.stream);
      if (batch === undefined) {
        batch = { keys, args: [maxLength], publishedAt: [], resolves: [], rejects: [], chars: 0 };
        this.#openDelayed.set(keys.stream, batch);
        this.#schedule();
      }
      batch.args.push(message.id, message.body, message.delayMs, message.unique ? "1" : "0");
      batch.publishedAt.push(publishedAt);
      batch.resolves.push(resolve);
      batch.rejects.push(reject);
      batch.chars += message.body.length;
      if (batch.resolves.length >= MAX_MESSAGES || batch.chars >= MAX_BYTES) {
        this.#openDelayed.delete(keys.stream);
        this.#fullDelayed.push(batch);
      }
    });
  }

  /**
   * Sends one publish script call (each names its own receipt key). On a Cluster it is sent
   * again while the Cluster moves (`resendWhileClusterMoves`) until past the publish time
   * limit, so that the limit's "outcome unknown" answers the caller, never the last redirection
   * error of a call an earlier copy of which may have been applied.
   */
  sendCall(
    name: "chicoryPublish" | "chicoryPublishBatch" | "chicoryPublishDelayed",
    keys: readonly string[],
    args: readonly RedisArg[],
  ): Promise<unknown> {
    const host = this.#host;
    const send = () => runScript(host.main, name, keys, args);
    if (!host.isCluster) return send();
    return resendWhileClusterMoves(send, performance.now() + host.deadlines.timeoutMs + 1000);
  }

  /**
   * The reply of `call` (sent by {@link sendCall}) and, with `waitReplicas` when it `adds` a
   * message, whether the replicas asked for hold what it wrote: `undefined` when they do (or
   * nothing was to be confirmed), else the error that says why not. The `WAIT` goes after the
   * reply, so it follows every copy of the call Redis ran (an `EVAL` sent again after
   * `NOSCRIPT` included), and only for calls that added something. Take `mark` just before
   * sending the call ({@link mark}).
   */
  async #confirmed(
    call: Promise<unknown>,
    mark: number | undefined,
    adds: (reply: unknown) => boolean,
  ): Promise<[unknown, Error | undefined]> {
    const reply = await call;
    return [reply, mark === undefined || !adds(reply) ? undefined : await this.confirm(mark)];
  }

  /**
   * With `waitReplicas`: the publish connection's mark to take just before sending a call;
   * `undefined` without it.
   */
  mark(): number | undefined {
    return this.#confirmer?.mark();
  }

  /**
   * Whether the replicas hold what a call sent at `mark` wrote, asked once its reply is in (see
   * {@link PublishBatcher.#confirmed}): `undefined` when they do, else the error that says why not.
   */
  confirm(mark: number): Promise<Error | undefined> {
    return this.#confirmer?.confirm(mark) ?? Promise.resolve(undefined);
  }

  /**
   * Sends the open batch of plain publishes to `stream` now, if any: a publish of that queue
   * that is a call of its own (unique, backlog limit) and is sent next then lands after the
   * plain publishes made before it, not before them.
   */
  flushQueue(stream: string): void {
    const batch = this.#open.get(stream);
    if (batch === undefined) return;
    this.#open.delete(stream);
    this.#send(batch);
  }

  /** Sends every open batch now (before the connection closes: they would go after QUIT). */
  flush(): void {
    this.#flushAll();
  }

  /** Flushes the open batches once this turn's synchronous code is done. */
  #schedule(): void {
    if (this.#isScheduled) return;
    this.#isScheduled = true;
    process.nextTick(this.#flushAll);
  }

  readonly #flushAll = (): void => {
    this.#isScheduled = false;
    for (const batch of this.#open.values()) this.#send(batch);
    this.#open.clear();
    const full = this.#fullDelayed;
    this.#fullDelayed = [];
    for (const batch of full) this.#sendDelayed(batch);
    for (const batch of this.#openDelayed.values()) this.#sendDelayed(batch);
    this.#openDelayed.clear();
  };

  #sendDelayed(batch: DelayedBatch): void {
    const host = this.#host;
    const { keys, args, publishedAt } = batch;
    // The delay left of each: the time it waited here since its publish has passed already
    // (rounded up, and at least 1 ms: a delayed message always goes through the delayed set).
    const now = performance.now();
    for (let i = 0; i < publishedAt.length; i++) {
      const asked = args[3 + 4 * i] as number;
      args[3 + 4 * i] = Math.max(1, Math.ceil(asked - (now - (publishedAt[i] as number))));
    }
    let call: Promise<unknown>;
    const mark = this.mark();
    try {
      const receipt = receiptKey(keys.sent);
      const [maxLength, ...messages] = args;
      call = this.sendCall(
        "chicoryPublishDelayed",
        [keys.stream, keys.delayed, keys.delayedData, keys.unique, receipt],
        [maxLength as number, this.receiptTtlMs, ...messages],
      );
    } catch (error) {
      call = Promise.reject(error); // as in #send
    }
    // With waitReplicas, the due mover hears of the published ones from Redis's reply, not after
    // the replicas' wait; without, as they are settled (one pass, no step more per call).
    const movesFirst = this.#confirmer !== undefined;
    if (movesFirst) call.then((reply) => scheduleMoves(batch, reply, host), ignore);
    this.#settleWhenAnswered(call, mark, keys.queue, publishedAny, batch.rejects, (reply, unconfirmed) =>
      settleDelayed(batch, reply, host, unconfirmed, !movesFirst),
    );
  }

  #send(batch: Batch): void {
    const host = this.#host;
    const { bodies } = batch;
    let call: Promise<unknown>;
    const mark = this.mark();
    try {
      const receipt = receiptKey(batch.sent);
      call = this.sendCall("chicoryPublishBatch", [batch.stream, receipt], [this.receiptTtlMs, ...bodies]);
    } catch (error) {
      // e.g. the script is not defined on an injected client: every publish of the batch
      // rejects (never a throw out of the flush, which runs on its own tick)
      call = Promise.reject(error);
    }
    this.#settleWhenAnswered(call, mark, batch.queue, addedAny, batch.rejects, (reply, unconfirmed) =>
      settle(batch, reply, host, unconfirmed),
    );
  }

  /**
   * Settles a batch's publishes from its call, within the publish time limit: from the reply at
   * once without `waitReplicas` (no step more per call than before the option existed), else
   * with the replicas' verdict ({@link PublishBatcher.#confirmed}). Rejects them all with the call's error.
   */
  #settleWhenAnswered(
    call: Promise<unknown>,
    mark: number | undefined,
    queue: string,
    adds: (reply: unknown) => boolean,
    rejects: ReadonlyArray<(error: Error) => void>,
    settleWith: (reply: unknown, unconfirmed: Error | undefined) => void,
  ): void {
    const host = this.#host;
    const fail = (error: unknown) => {
      const wrapped = host.wrapError(error);
      for (const reject of rejects) reject(wrapped);
    };
    if (this.#confirmer === undefined) {
      host.deadlines.guard(call, queue).then((reply) => settleWith(reply, undefined), fail);
      return;
    }
    host.deadlines
      .guard(this.#confirmed(call, mark, adds), queue)
      .then(([reply, unconfirmed]) => settleWith(reply, unconfirmed), fail);
  }
}

function ignore(): void {}

/** The number of messages a `publish-batch.lua` reply says were added. */
function addedCount(reply: unknown): number {
  return typeof reply === "number" ? reply : Array.isArray(reply) ? Number(reply[0]) : 0;
}

function addedAny(reply: unknown): boolean {
  return addedCount(reply) > 0;
}

/** True when a `publish-delayed.lua` reply says a message was published (a code 1). */
function publishedAny(reply: unknown): boolean {
  return Array.isArray(reply) && reply.some((code) => Number(code) === 1);
}

/**
 * `WAIT` after publish calls on their own connection (`waitReplicas`), sent once their reply
 * is in (Redis has run them). One `WAIT` at a time, sent at the end of the event-loop turn
 * (`setImmediate`): the calls that asked in one turn (their replies came in one read) share it.
 * A call sent while a `WAIT` blocks its connection runs after it, and asks for the next one,
 * sent when that answers; so a call waits for at most two waits in the usual case, three when
 * its reply comes after the next one left (replies split over reads, or an `EVAL` sent again
 * after `NOSCRIPT`). A call whose connection was made again between its send and the `WAIT`'s
 * answer is not confirmed, at once: the client may have sent it again after the `WAIT`, or to
 * a new primary (after a failover) rather than the one the `WAIT` asks.
 */
class ReplicaConfirmer {
  readonly #conn: RedisClientLike;
  readonly #wait: { readonly replicas: number; readonly timeoutMs: number };
  /** Calls that asked since the last `WAIT` left, with the connection's {@link mark} when sent. */
  #next: Waiter[] = [];
  /** The calls the `WAIT` under way answers. */
  #current: Waiter[] = [];
  /** A `WAIT` is under way or about to be sent. */
  #isWaiting = false;
  #readyCount = 0;

  constructor(conn: RedisClientLike, wait: { readonly replicas: number; readonly timeoutMs: number }) {
    this.#conn = conn;
    this.#wait = wait;
    conn.on("ready", () => {
      this.#readyCount++;
      // Calls sent on an earlier connection are not confirmed whatever a WAIT says (see the
      // class doc): they are told now, not after a WAIT sent again on this connection.
      for (const waiter of [...this.#current, ...this.#next]) {
        if (waiter.readyAt < this.#readyCount) waiter.resolve(madeAgain());
      }
      this.#next = this.#next.filter((waiter) => waiter.readyAt >= this.#readyCount);
    });
  }

  /**
   * The count of connections made so far, or the next one's while the connection is down (a
   * call sent then waits in the client and leaves on the next connection): taken just before a
   * call is sent, and compared when the `WAIT` answers.
   */
  mark(): number {
    return this.#conn.status === "ready" ? this.#readyCount : this.#readyCount + 1;
  }

  /** Resolves once a `WAIT` sent from now on answers (see the class doc); never rejects. */
  confirm(mark: number): Promise<Error | undefined> {
    return new Promise((resolve) => {
      if (mark < this.#readyCount) {
        resolve(madeAgain());
        return;
      }
      this.#next.push({ resolve, readyAt: mark });
      if (!this.#isWaiting) this.#sendSoon();
    });
  }

  #sendSoon(): void {
    this.#isWaiting = true;
    setImmediate(() => this.#send());
  }

  #send(): void {
    const waiters = this.#next;
    this.#next = [];
    if (waiters.length === 0) {
      this.#isWaiting = false;
      return;
    }
    this.#current = waiters;
    const { replicas, timeoutMs } = this.#wait;
    let answer: Promise<unknown>;
    try {
      answer = this.#conn.call("WAIT", replicas, timeoutMs);
    } catch (error) {
      answer = Promise.reject(error);
    }
    answer
      .then(
        (count) => {
          for (const waiter of waiters) waiter.resolve(this.#verdict(count, waiter.readyAt));
        },
        (error: unknown) => {
          const reason = error instanceof Error ? error.message : String(error);
          const unconfirmed = new Error(
            `waiting for the replicas (waitReplicas) failed: ${reason}; whether they hold it is unknown (it is applied if the primary received it)`,
          );
          for (const waiter of waiters) waiter.resolve(unconfirmed);
        },
      )
      .finally(() => {
        this.#current = [];
        if (this.#next.length > 0) this.#sendSoon();
        else this.#isWaiting = false;
      });
  }

  #verdict(count: unknown, readyAt: number): Error | undefined {
    const { replicas, timeoutMs } = this.#wait;
    if (readyAt !== this.#readyCount) return madeAgain();
    if (typeof count === "number" && count >= replicas) return undefined;
    return new Error(
      `only ${String(count)} of the ${replicas} replicas asked for (waitReplicas) acknowledged it within ${timeoutMs} ms (waitTimeoutMs): it is applied on the primary and runs, unless the primary fails before a replica copies it`,
    );
  }
}

/** A call waiting for a `WAIT`'s answer. */
interface Waiter {
  readonly resolve: (unconfirmed: Error | undefined) => void;
  /** The connection's {@link ReplicaConfirmer.mark} when the call was sent. */
  readonly readyAt: number;
}

function madeAgain(): Error {
  return new Error(
    "the connection to Redis was made again while waiting for the replicas (waitReplicas): whether they hold it is unknown (it is applied if the primary received it)",
  );
}

/**
 * Resolves the publishes the call added, rejects the others with its error. The reply is the
 * script's: a count, or `[count, error]`.
 */
function settle(batch: Batch, reply: unknown, host: PublishBatchHost, unconfirmed: Error | undefined): void {
  const count = addedCount(reply);
  const n = batch.resolves.length;
  const added = Number.isSafeInteger(count) && count > 0 ? Math.min(count, n) : 0;
  if (unconfirmed === undefined) {
    for (let i = 0; i < added; i++) (batch.resolves[i] as (result: PublishResult) => void)(PUBLISHED);
  } else if (added > 0) {
    const error = host.wrapError(unconfirmed);
    for (let i = 0; i < added; i++) (batch.rejects[i] as (error: Error) => void)(error);
  }
  if (added >= n) return;
  const text = Array.isArray(reply) ? String(reply[1]) : `unexpected reply ${JSON.stringify(reply)}`;
  const error = host.wrapError(new Error(text));
  for (let i = added; i < n; i++) (batch.rejects[i] as (error: Error) => void)(error);
}

/**
 * Settles each delayed publish with its code in the reply of `publish-delayed.lua` (one per
 * message), and with `scheduleMoves` notes the published ones for the due mover; a published
 * one whose replicas were not confirmed rejects with `unconfirmed`.
 */
function settleDelayed(
  batch: DelayedBatch,
  reply: unknown,
  host: PublishBatchHost,
  unconfirmed: Error | undefined,
  scheduleMoves: boolean,
): void {
  const codes = Array.isArray(reply) ? reply : [];
  const notConfirmed = unconfirmed === undefined ? undefined : host.wrapError(unconfirmed);
  for (let i = 0; i < batch.resolves.length; i++) {
    const code = Number(codes[i]);
    if (code !== 1 && code !== 0 && code !== -1) {
      (batch.rejects[i] as (error: Error) => void)(
        host.wrapError(new Error(`unexpected reply ${JSON.stringify(reply)}`)),
      );
      continue;
    }
    if (code === 1 && scheduleMoves) host.scheduleMove(batch.keys, batch.args[3 + 4 * i] as number);
    if (code === 1 && notConfirmed !== undefined) (batch.rejects[i] as (error: Error) => void)(notConfirmed);
    else (batch.resolves[i] as (code: number) => void)(code);
  }
}

/** Notes the delayed publishes `publish-delayed.lua` published for the due mover (`waitReplicas`). */
function scheduleMoves(batch: DelayedBatch, reply: unknown, host: PublishBatchHost): void {
  const codes = Array.isArray(reply) ? reply : [];
  for (let i = 0; i < batch.resolves.length; i++) {
    if (Number(codes[i]) === 1) host.scheduleMove(batch.keys, batch.args[3 + 4 * i] as number);
  }
}

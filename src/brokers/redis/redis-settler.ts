/**
 * Settling of Redis deliveries: each settle is one Lua script on the broker's command
 * connection. Acks are batched per stream until the event loop's check phase and written at
 * once, optionally with the result backend's terminal records (`ack-with-records.lua`); a
 * consumer about to read the same stream takes the waiting batch first and sends it with its
 * read (`read-after-acks.lua`, see {@link RedisSettler.readWithAcks}). Retry, dead-letter and
 * release go through the connection's automatic pipeline. Retry and dead-letter act only if
 * the entry is still pending, so a settle repeated after a lost lease or a reconnect adds
 * nothing.
 * @module
 */
import type { TaskRecord } from "../../backends/backend.js";
import { awakeNow } from "../../core/clock.js";
import { OUTCOME_FINAL_THERE, OUTCOME_LEFT_TO_NEW_OWNER, OUTCOME_STORED_OWNERLESS } from "../../core/lease-outcome.js";
import type { Logger } from "../../core/logger.js";
import { peekMessage } from "../../core/message.js";
import { BrokerConnectionError, DeadLetterQueueFullError } from "../../errors.js";
import { type RedisArg, runScript } from "../../redis/redis-client.js";
import { inPieces, isPieceSized } from "../../redis/redis-pieces.js";
import type { RedisRecordWriter } from "../../redis/redis-record-writer.js";
import type { LeaseState } from "../broker.js";
import type { RedisBrokerContext } from "./redis-context.js";
import type { DeliverySettler, RedisDelivery } from "./redis-delivery.js";
import { type QueueKeys, RELEASED_CONSUMER } from "./redis-keys.js";
import { RARE_RECEIPT_TTL_MS, receiptKey } from "./redis-publish-batch.js";
import type { StreamEntry } from "./redis-reader.js";

/** The `retries` of a message body (0 when unreadable), stored as the DLQ entry's retry_count. */
export function retryCountOf(body: string): number {
  const retries = peekMessage(body)?.retries;
  return typeof retries === "number" && Number.isSafeInteger(retries) && retries >= 0 ? retries : 0;
}

/** The error thrown when a DLQ reached `CHICORY_BROKER_REDIS_DLQ_MAX_LENGTH` (never trimmed). */
export function dlqFullError(queue: string, max: number, what: string): DeadLetterQueueFullError {
  return new DeadLetterQueueFullError(
    `DLQ of queue "${queue}" is full (${max} entries, CHICORY_BROKER_REDIS_DLQ_MAX_LENGTH): ${what}; ` +
      "replay, delete or purge DLQ entries",
  );
}

/**
 * A dead letter's `body` in pieces (`redis-pieces.ts`) when it is longer than the server takes
 * in one argument (a limit lowered since the message was published); undefined when it fits.
 * The scripts join the pieces (`dead-letter.lua`, `write-dead-letter.lua`): Redis limits what
 * it reads from a client, not what a script writes. Sent whole, the body would make Redis close
 * the connection, again after each reconnect.
 */
async function bodyPieces(ctx: RedisBrokerContext, body: string): Promise<Buffer[] | undefined> {
  if ((await ctx.oversize(body)) === undefined) return undefined;
  return inPieces(Buffer.from(body, "utf8"));
}

/**
 * Appends an already acknowledged message (a failed `at_most_once` task) to `queue`'s DLQ
 * (`write-dead-letter.lua`); with `store` (the result backend's call for its DEAD_LETTERED
 * record), the record is written in the same call: both or neither.
 * @throws DeadLetterQueueFullError when the DLQ is full (nothing written; the DLQ is never trimmed)
 * @throws BrokerConnectionError when Redis refuses the call
 */
export async function appendDeadLetter(
  ctx: RedisBrokerContext,
  queue: string,
  queueKeys: QueueKeys,
  body: string,
  error: string,
  store?: { readonly keys: readonly string[]; readonly args: readonly RedisArg[] },
): Promise<void> {
  const id = peekMessage(body)?.id;
  // a receipt, as a publish call's: a copy sent again after a dropped connection appends nothing
  const receipt = receiptKey(queueKeys.sent);
  const keys = [queueKeys.dlq, receipt, ...(store?.keys ?? [])];
  const pieces = await bodyPieces(ctx, body);
  let result: unknown;
  try {
    result = await runScript(
      ctx.main,
      "chicoryWriteDeadLetter",
      [String(keys.length), ...keys],
      [
        pieces === undefined ? body : "",
        error,
        retryCountOf(body),
        ctx.dlqMaxLength,
        typeof id === "string" ? id : "",
        RARE_RECEIPT_TTL_MS,
        ...(store?.args ?? []),
        ...(pieces ?? []),
      ],
    );
  } catch (cause) {
    throw ctx.wrapError("writeDeadLetter", cause);
  }
  if (result === -1) {
    ctx.logger.error({ queue, dlqMaxLength: ctx.dlqMaxLength }, "redis DLQ full: dead letter not written");
    throw dlqFullError(queue, ctx.dlqMaxLength, "the dead letter of an acknowledged message was not written");
  }
}

/**
 * Orders two stream entry ids (`<ms>-<seq>`, both decimal without leading zeros): negative when
 * `a` comes first. Ids of another shape (never handed out by Redis) compare as strings.
 */
export function compareEntryIds(a: string, b: string): number {
  const ad = a.indexOf("-");
  const bd = b.indexOf("-");
  if (ad <= 0 || bd <= 0) return a < b ? -1 : a > b ? 1 : 0;
  // Milliseconds of the same length order as text, and so do the whole ids, unless the
  // milliseconds are equal and the sequences differ in length (the shorter is smaller).
  if (ad !== bd) return ad - bd;
  if (a.length !== b.length && a.slice(0, ad) === b.slice(0, bd)) return a.length - b.length;
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * How long after its last confirmation an entry's lease surely still holds, on this process's
 * clock: the claim idle time, less one renewal interval (a third of it: a renewal Redis
 * acknowledged can still be lost in a failover to a lagging replica or a restart from disk,
 * and the idle time then runs from the renewal before), less a margin (a tenth, at most 2 s)
 * for the difference between this clock and Redis's, which counts the idle time.
 */
function heldUntilMs(claimMinIdleMs: number): number {
  return claimMinIdleMs - Math.floor(claimMinIdleMs / 3) - Math.min(2000, claimMinIdleMs / 10);
}

/** `batch` with the acks that carry a record first (itself when it is not mixed). */
function withRecordsFirst(batch: PendingAck[]): PendingAck[] {
  let withRecord = 0;
  for (const ack of batch) if (ack.record !== undefined) withRecord++;
  if (withRecord === 0 || withRecord === batch.length) return batch;
  const ordered: PendingAck[] = [];
  for (const ack of batch) if (ack.record !== undefined) ordered.push(ack);
  for (const ack of batch) if (ack.record === undefined) ordered.push(ack);
  return ordered;
}

/** A settle asked to carry a record while no result backend is attached: refused, not dropped. */
function noRecordWriterError(): BrokerConnectionError {
  return new BrokerConnectionError("redis broker: no result backend attached to write records");
}

/** An entry's settle outcome: applied by this call. */
const APPLIED = 1;
/** Applied by an earlier copy of the call (see {@link RedisSettler.#notPending}). */
const EARLIER = 2;
/** Not applied: the entry is no longer this consumer's (lease lost). */
const FENCED = 0;
/**
 * Applied by this call to an entry the group had lost (in the stream, pending for nobody: the
 * group was deleted and recreated, or Redis restored or failed over): deleted, its record written.
 */
const ORPHANED = 3;

/** Most acks sent in one script call. */
const MAX_ACK_BATCH = 500;

interface PendingAck {
  readonly delivery: RedisDelivery;
  /** Reject when the entry was not pending for this consumer (see `AckOptions.confirm`). */
  readonly confirm: boolean;
  /** A terminal record to write first (see {@link RedisSettler.ack}). */
  readonly record: TaskRecord | undefined;
  /** The record's JSON (set with `record`). */
  readonly json: string | undefined;
  resolve(): void;
  reject(error: unknown): void;
}

/** Carries out the settle calls of a consumer's deliveries. */
export class RedisSettler implements DeliverySettler {
  readonly #acks = new Map<string, PendingAck[]>();
  #isFlushScheduled = false;
  readonly #flushAcks = (): void => {
    this.#isFlushScheduled = false;
    this.#sendAll();
  };
  readonly #ctx: RedisBrokerContext;
  readonly #consumerId: string;
  readonly #onSettled: (delivery: RedisDelivery, isStillPending?: boolean) => void;
  readonly #logger: Logger;
  readonly #records: RedisRecordWriter | undefined;
  /** Asks the consumer for the stream window in force (see {@link RedisSettler.#streamWindowMs}). */
  readonly #streamWindow: ((delivery: RedisDelivery) => Promise<number>) | undefined;

  /**
   * @param onSettled called once a delivery no longer needs lease renewal; `isStillPending` when
   *   its entry may still be pending for this consumer (a dead letter refused by a full DLQ, a
   *   release that failed): it is left to its lease, then reclaimed
   * @param logger the consumer's logger (default: the broker's)
   * @param records the result backend whose records acks may carry (same server and database)
   */
  constructor(
    ctx: RedisBrokerContext,
    consumerId: string,
    onSettled: (delivery: RedisDelivery, isStillPending?: boolean) => void,
    logger: Logger = ctx.logger,
    records?: RedisRecordWriter,
    streamWindow?: (delivery: RedisDelivery) => Promise<number>,
  ) {
    this.#ctx = ctx;
    this.#consumerId = consumerId;
    this.#onSettled = onSettled;
    this.#logger = logger;
    this.#records = records;
    this.#streamWindow = streamWindow;
  }

  async #settle(delivery: RedisDelivery, operation: string, run: () => Promise<unknown>): Promise<unknown> {
    let result: unknown;
    try {
      result = await run();
    } catch (error) {
      throw this.#ctx.wrapError(operation, error);
    }
    this.#onSettled(delivery);
    return result;
  }

  /**
   * Acks are batched per stream until the check phase of the event-loop iteration (every ack of
   * the iteration's timer, I/O and promise callbacks): the worker settles many deliveries at
   * once, and one script call for all of them costs Redis a fraction of one call each. A read of
   * the consumer that comes first (its fetch runs in the worker's own check-phase callback,
   * scheduled when the jobs started) takes the batch along ({@link RedisSettler.readWithAcks}).
   * With a `record` (only when the consumer was given the result backend's writer), the same
   * call first writes that terminal record to the result backend; but a record too long for one
   * argument of every Redis server ({@link isPieceSized}) is written apart, in pieces, before
   * the ack (see {@link RedisSettler.#ackAfterPieces}).
   */
  ack(d: RedisDelivery, confirm = false, record?: TaskRecord): Promise<void> {
    let json: string | undefined;
    if (record !== undefined) {
      const writer = this.#records;
      if (writer === undefined) return Promise.reject(noRecordWriterError());
      try {
        json = writer.encodeRecord(record);
      } catch (error) {
        return Promise.reject(error);
      }
      if (isPieceSized(json)) return this.#ackAfterPieces(d, confirm, record, json, writer);
    }
    return new Promise((resolve, reject) => {
      let batch = this.#acks.get(d.keys.stream);
      if (!batch) {
        batch = [];
        this.#acks.set(d.keys.stream, batch);
      }
      batch.push({ delivery: d, confirm, record, json, resolve, reject });
      if (!this.#isFlushScheduled) {
        this.#isFlushScheduled = true;
        setImmediate(this.#flushAcks);
      }
    });
  }

  /**
   * The ack of a delivery whose record is {@link isPieceSized}: its lease checked, the record
   * written in pieces by the backend, then a plain ack. Held: written. Taken by another worker:
   * not written (its result is that worker's), as the ack script's fence does. Ownerless (the
   * entry left the stream while it ran here): written unless the task has a final record, as
   * for an entry the ack script finds gone. The lease is renewed while the pieces are written;
   * it may still be lost between the check and the ack (a stall longer than the lease), as with
   * any backend that does not share the broker's server.
   */
  async #ackAfterPieces(
    d: RedisDelivery,
    confirm: boolean,
    record: TaskRecord,
    json: string,
    writer: RedisRecordWriter,
  ): Promise<void> {
    // renewed while the pieces are written (a long write must not let the lease run out)
    d.isWritingRecord = true;
    try {
      // asked of Redis (an entry gone from the stream is not seen otherwise until a renewal)
      const lease = await this.leaseState(d, true);
      const fields = { queue: d.queue, consumer: this.#consumerId, entry: d.deliveryId, taskId: record.taskId };
      if (lease === "taken") {
        this.#logger.warn(fields, OUTCOME_LEFT_TO_NEW_OWNER);
      } else if (!(await writer.storeRecordInPieces(record, json, lease === "ownerless"))) {
        this.#logger.warn(fields, OUTCOME_FINAL_THERE);
      } else if (lease === "ownerless") {
        this.#logger.warn(fields, OUTCOME_STORED_OWNERLESS);
      }
    } finally {
      d.isWritingRecord = false;
    }
    return this.ack(d, confirm);
  }

  /** Sends every waiting ack now rather than at the check phase (a no-op when none waits). */
  sendWaitingAcks(): void {
    if (this.#acks.size > 0) this.#sendAll();
  }

  /** One script call per stream (and per MAX_ACK_BATCH acks); a failure rejects the acks. */
  #sendAll(): void {
    const batches = [...this.#acks.values()];
    this.#acks.clear();
    for (const batch of batches) {
      for (let i = 0; i < batch.length; i += MAX_ACK_BATCH) {
        this.#ackBatch(batch.slice(i, i + MAX_ACK_BATCH), 0).catch(() => undefined);
      }
    }
  }

  /**
   * Sends the acks waiting for `stream` (at most one script call's worth) together with a
   * non-blocking read of up to `count` new entries for this consumer: one round trip where the
   * ack flush and the read would be two. Undefined when no ack waits for that stream or the
   * command connection is not ready (the caller reads on its own; the acks go at the check phase).
   * Resolves to the entries read (empty when none is new); rejects when the call failed (the
   * acks are then rejected as a failed flush rejects them) or the read did (e.g. NOGROUP; the
   * acks stand).
   */
  readWithAcks(stream: string, count: number): Promise<StreamEntry[]> | undefined {
    const waiting = this.#acks.get(stream);
    if (waiting === undefined || count <= 0 || this.#ctx.main.status !== "ready") return undefined;
    const batch = waiting.splice(0, MAX_ACK_BATCH);
    if (waiting.length === 0) this.#acks.delete(stream);
    return this.#ackBatch(batch, count);
  }

  /**
   * Acks `batch` in one script call and, when `readCount` > 0, reads up to that many new
   * entries in the same call. Rejects the batch's acks when the call fails, and then rejects
   * too (the flush ignores that; a read reports it).
   */
  async #ackBatch(waiting: PendingAck[], readCount: number): Promise<StreamEntry[]> {
    // The acks that carry a record first, in the order of their records: the script finds the
    // entry of the i-th record at the i-th place of the ids.
    const batch = withRecordsFirst(waiting);
    const first = (batch[0] as PendingAck).delivery;
    let low = first.deliveryId;
    let high = low;
    const ids: string[] = [];
    for (const { delivery } of batch) {
      const id = delivery.deliveryId;
      if (compareEntryIds(id, low) < 0) low = id;
      if (compareEntryIds(high, id) < 0) high = id;
      // `!`: the script leaves alone the unique marker this untrusted entry claims (ack.lua)
      ids.push(delivery.isUntrusted ? `!${id}` : id);
    }
    const args = [this.#ctx.group, this.#consumerId, low, high, ...ids];
    const records: TaskRecord[] = [];
    const jsons: string[] = [];
    for (const ack of batch) {
      if (ack.record === undefined) continue;
      records.push(ack.record);
      jsons.push(ack.json as string);
    }
    let results: unknown;
    let written: TaskRecord[] = [];
    let entries: StreamEntry[] = [];
    let readError: string | undefined;
    let withRecords = false;
    const sentAtReady = this.#ctx.mainReadyCount();
    try {
      // The plain ack script, or the one that first writes the records; `…Read` reads after it.
      const { stream, unique } = first.keys;
      let script: "chicoryAck" | "chicoryAckWithRecords" = "chicoryAck";
      let keys = [stream, unique];
      let ackArgs: RedisArg[] = args;
      let streamIndex = 1;
      const store = records.length > 0 ? this.#records?.storeResultsCall(records, jsons) : undefined;
      if (store !== undefined) {
        withRecords = true;
        script = "chicoryAckWithRecords";
        keys = [String(store.keys.length + 2), ...store.keys, stream, unique];
        ackArgs = [records.length, ...store.args, ...args];
        streamIndex = store.keys.length + 1;
      }
      if (readCount > 0) {
        const read = [readCount, streamIndex, this.#ctx.group, this.#consumerId];
        [results, entries, readError] = (await runScript(this.#ctx.main, `${script}Read`, keys, [
          ...read,
          ...ackArgs,
        ])) as [unknown, StreamEntry[], string | undefined];
      } else {
        results = await runScript(this.#ctx.main, script, keys, ackArgs);
      }
    } catch (error) {
      const wrapped = this.#ctx.wrapError("ack", error);
      for (const { reject } of batch) reject(wrapped);
      throw error;
    }
    // Per entry: acknowledged by this call, by an earlier copy of it, or fenced (lease lost);
    // no array at all in the usual case, every entry acknowledged by this call.
    let outcomes: number[] | undefined;
    let earlier = 0;
    let missed = 0;
    let orphaned = 0;
    /** Indexes of fenced entries that were gone from the stream (code 2), not another consumer's. */
    let gone: number[] | undefined;
    const judgedAtMs = awakeNow();
    let windowMs = 0;
    if (
      Array.isArray(results) &&
      batch.some((ack, i) => this.#isAgedOut(ack.delivery, Number(results[i]), sentAtReady, judgedAtMs))
    ) {
      windowMs = await this.#streamWindowMs(first);
    }
    for (let i = 0; i < batch.length; i++) {
      const code = Array.isArray(results) ? Number(results[i]) : 1;
      if (code === 1) continue;
      outcomes ??= new Array<number>(batch.length).fill(APPLIED);
      const outcome =
        code === ORPHANED
          ? ORPHANED
          : this.#notPending((batch[i] as PendingAck).delivery, code, sentAtReady, judgedAtMs, windowMs);
      outcomes[i] = outcome;
      if (outcome === EARLIER) earlier++;
      else if (outcome === ORPHANED) orphaned++;
      else {
        missed++;
        if (code === 2) {
          gone ??= [];
          gone.push(i);
        }
      }
    }
    // Only the records of entries this consumer still held were written (the script's fence).
    // Those of entries an earlier copy of the call settled are written again: that copy's
    // writes are gone when the reconnect was a Redis restart without persistence.
    const again = earlier > 0 && withRecords ? records.filter((_, i) => outcomes?.[i] === EARLIER) : [];
    if (withRecords) {
      written =
        missed === 0 && earlier === 0
          ? records
          : records.filter((_, i) => outcomes?.[i] === APPLIED || outcomes?.[i] === ORPHANED);
      this.#records?.recordsWritten(written);
    }
    if (earlier > 0) {
      this.#logger.info(
        { queue: first.queue, consumer: this.#consumerId, entries: earlier, recordsWrittenAgain: again.length },
        "redis ack: entries already acknowledged by an earlier copy of this call (resent after a reconnect, or gone " +
          "in a Redis restart without persistence); their lease was still held, so no other worker took them",
      );
      if (again.length > 0) this.#writeAgain(again, first.queue);
    }
    if (orphaned > 0) {
      this.#logger.warn(
        { queue: first.queue, consumer: this.#consumerId, entries: orphaned, resultsStoredWithAck: withRecords },
        "redis ack: entries were in the stream but pending for no consumer (the consumer group was deleted and " +
          "recreated, or Redis was restored from a backup or failed over): deleted now, so they do not run again",
      );
    }
    // Entries gone from the stream: settled by a worker that took them over (its final record
    // is there, and stays), or lost with the stream (a Redis restart without persistence:
    // nobody runs them again, and a record of this run's outcome is the only one they get).
    let goneStored = 0;
    if (withRecords && gone !== undefined) {
      const goneRecords = gone.filter((i) => i < records.length).map((i) => records[i] as TaskRecord);
      goneStored = goneRecords.length;
      if (goneStored > 0) this.#storeUnlessFinal(goneRecords, first.queue, first.keys.unique);
    }
    if (missed > 0) {
      // The entry was no longer pending for this consumer: its lease ran out and another worker
      // took it (this ack was fenced), or it left the PEL some other way. Either way the job may
      // run (or have run) elsewhere too, and its result is the other run's: a record sent with
      // a fenced ack was not written (one of an entry gone from the stream is, just above,
      // where the task has no final record).
      this.#logger.warn(
        {
          queue: first.queue,
          consumer: this.#consumerId,
          entries: missed,
          // (records travel with acks only when the result backend shares the server)
          ...(withRecords
            ? { recordsSkipped: records.length - written.length - goneStored, recordsStoredUnlessFinal: goneStored }
            : {}),
        },
        "redis ack: entries no longer pending for this consumer (lease lost to another worker, or the entries are gone: " +
          "purged, or lost in a Redis restart without persistence); a job another worker took may run twice, and its " +
          "result is that worker's; the result of one gone from the stream is stored unless a final one is there",
      );
    }
    batch.forEach(({ delivery, confirm, resolve, reject }, i) => {
      this.#onSettled(delivery);
      if (confirm && outcomes?.[i] === FENCED) {
        reject(
          new BrokerConnectionError(
            `redis broker: ack of entry ${delivery.deliveryId} not applied: it is no longer pending for this consumer (lease lost)`,
          ),
        );
      } else resolve();
    });
    if (readError !== undefined) throw new Error(readError);
    return entries;
  }

  async retry(d: RedisDelivery, body: string, delayMs: number): Promise<void> {
    const tooLarge = await this.#ctx.oversize(body);
    if (tooLarge !== undefined) throw tooLarge;
    const { stream, delayed, delayedData } = d.keys;
    const delay = Math.max(0, Math.ceil(delayMs)); // never early: rounded up
    await this.#settle(d, "retry", () =>
      runScript(
        this.#ctx.main,
        "chicoryRetry",
        [stream, delayed, delayedData],
        [this.#ctx.group, d.deliveryId, body, delay, d.taskId, this.#consumerId],
      ),
    );
    // Noted whatever the answer: a copy the client sent again after a dropped connection answers
    // 0 when the first copy did the retry (its entry is gone), and the new attempt is still due
    // then. When another consumer settled the entry instead, the extra wake-up moves nothing.
    if (delay > 0) this.#ctx.scheduleMove(d.keys, delay);
  }

  /**
   * Appends the already acknowledged delivery's message to its DLQ and writes its DEAD_LETTERED
   * `record` in the same call (see {@link appendDeadLetter}).
   */
  async writeDeadLetter(d: RedisDelivery, error: string, record: TaskRecord): Promise<void> {
    const store = this.#records?.storeResultsCall([record]);
    if (store === undefined) throw noRecordWriterError();
    await appendDeadLetter(this.#ctx, d.queue, d.keys, d.body, error, store);
    this.#records?.recordsWritten([record]);
  }

  /**
   * Moves the entry to the DLQ. With a `record` (only when the consumer was given the result
   * backend's writer), the same call first writes that DEAD_LETTERED record, and only when the
   * move happens: not when the DLQ is full or the entry is no longer this consumer's.
   */
  async deadLetter(d: RedisDelivery, error: string, record?: TaskRecord): Promise<void> {
    const store = record === undefined ? undefined : this.#records?.storeResultsCall([record]);
    if (record !== undefined && store === undefined) throw noRecordWriterError();
    const keys = [d.keys.stream, d.keys.dlq, d.keys.unique, ...(store?.keys ?? [])];
    const pieces = await bodyPieces(this.#ctx, d.body);
    const args: RedisArg[] = [
      this.#ctx.group,
      d.deliveryId,
      pieces === undefined ? d.body : "",
      error,
      retryCountOf(d.body),
      this.#ctx.dlqMaxLength,
      // an untrusted entry's claimed id keeps its unique marker; an unreadable one has no task id
      d.isUntrusted ? "" : (d.knownTaskId ?? ""),
      this.#consumerId,
      ...(store?.args ?? []),
      ...(pieces ?? []),
    ];
    let result: unknown;
    const sentAtReady = this.#ctx.mainReadyCount();
    try {
      result = await runScript(this.#ctx.main, "chicoryDeadLetter", [String(keys.length), ...keys], args);
    } catch (cause) {
      throw this.#ctx.wrapError("deadLetter", cause);
    }
    // Stop renewing either way: when the DLQ is full the entry stays in the work stream and is
    // redelivered after its lease expires (the DLQ is never trimmed to make room).
    this.#onSettled(d, result === -1);
    const judgedAtMs = awakeNow();
    const windowMs = this.#isAgedOut(d, Number(result), sentAtReady, judgedAtMs) ? await this.#streamWindowMs(d) : 0;
    const isEarlier = result === 2 && this.#notPending(d, 2, sentAtReady, judgedAtMs, windowMs) === EARLIER;
    if (result === 1 && record !== undefined) this.#records?.recordsWritten([record]);
    // written again: the earlier copy's writes are gone after a Redis restart without persistence
    if (isEarlier && record !== undefined) this.#writeAgain([record], d.queue);
    if (isEarlier) {
      this.#logger.info(
        { queue: d.queue, consumer: this.#consumerId, entry: d.deliveryId },
        "redis dead-letter: entry already moved by an earlier copy of this call (resent after a reconnect)",
      );
    } else if (result === 0 || result === 2) {
      this.#logger.warn(
        { queue: d.queue, consumer: this.#consumerId, entry: d.deliveryId, recordSkipped: record !== undefined },
        "redis dead-letter: entry no longer pending for this consumer (lease lost); left to its new owner",
      );
    }
    if (result === -1) {
      this.#logger.error(
        { queue: d.queue, dlqMaxLength: this.#ctx.dlqMaxLength },
        "redis DLQ full: message kept in the work stream",
      );
      throw dlqFullError(
        d.queue,
        this.#ctx.dlqMaxLength,
        "the message stays in the work stream and is redelivered after its lease",
      );
    }
  }

  /**
   * Gives the entry back. Lease renewal stops even when the call fails (e.g. `OOM`, `READONLY`,
   * the connection lost): a release is the last thing done with a delivery, so its lease then
   * expires and the entry is reclaimed after `claimMinIdle`, instead of being renewed for the
   * life of the process by a worker that no longer runs it.
   */
  async release(d: RedisDelivery, countDelivery = false): Promise<void> {
    let isReleased = false;
    try {
      await runScript(
        this.#ctx.main,
        "chicoryRelease",
        [d.keys.stream],
        [
          this.#ctx.group,
          this.#consumerId,
          d.deliveryId,
          this.#ctx.claimMinIdleMs,
          countDelivery ? "1" : "0",
          d.deliveryCount,
          RELEASED_CONSUMER,
        ],
      );
      isReleased = true;
    } catch (error) {
      throw this.#ctx.wrapError("release", error);
    } finally {
      this.#onSettled(d, !isReleased);
    }
  }

  /**
   * Writes `records` of entries gone from the stream where their task has no final record (see
   * `#ackBatch`), except those of a task id a newer job holds ({@link RedisSettler.#newerJobIds}).
   * In the background: a failure is logged.
   */
  #storeUnlessFinal(records: readonly TaskRecord[], queue: string, uniqueKey: string): void {
    const writer = this.#records;
    if (writer?.storeRecordsUnlessFinal === undefined) return;
    const store = async (): Promise<readonly TaskRecord[]> => {
      const newer = await this.#newerJobIds(
        uniqueKey,
        records.map((r) => r.taskId),
      );
      const left = records.filter((r) => !newer.has(r.taskId));
      return left.length === 0 ? [] : ((await writer.storeRecordsUnlessFinal?.(left)) ?? []);
    };
    store().then(
      (written) => {
        if (written.length === 0) return;
        this.#logger.info(
          { queue, records: written.length, leftToFinal: records.length - written.length },
          "redis ack: stored the results of jobs whose entries were gone from the stream and that had no final result (lost with the stream?)",
        );
      },
      (error: unknown) => {
        this.#logger.warn(
          { queue, records: records.length, err: error instanceof Error ? error.message : String(error) },
          "redis: could not store the results of jobs whose entries were gone from the stream; they may be missing",
        );
      },
    );
  }

  /**
   * Writes again the records of entries an earlier copy of a settle call settled (the copy
   * applied before a reconnect), unless the task has a final record: the first writes are lost
   * when the reconnect was a Redis restart without persistence, and a final record there is the
   * earlier copy's (or, after a partition of this worker alone that outlasted its lease, that
   * of the worker that took the job over, which stays). Best effort, in the background: a
   * failure is logged.
   */
  #writeAgain(records: readonly TaskRecord[], queue: string): void {
    const writer = this.#records;
    if (writer === undefined) return;
    const write =
      writer.storeRecordsUnlessFinal !== undefined
        ? writer.storeRecordsUnlessFinal(records)
        : writer.storeRecords(records);
    write.catch((error: unknown) => {
      this.#logger.warn(
        { queue, records: records.length, err: error instanceof Error ? error.message : String(error) },
        "redis: could not write again the records of entries settled by an earlier copy of a call; they may be missing",
      );
    });
  }

  /**
   * What an entry that a settle call found no longer pending for this consumer means, from the
   * script's `code` for it (2: pending for nobody and gone from the stream, i.e. settled
   * already; 0: another consumer's, or found in the stream pending for nobody).
   * {@link EARLIER} when it was settled already, the command connection reconnected while the
   * call was out (ioredis then sends again a call whose reply the dropped connection lost,
   * and the first copy may have been applied), and the lease was surely held until now: no
   * renewal found it held by another consumer (one that found it gone, as this call did, says
   * no more than this call's reply), and it was confirmed less than {@link heldUntilMs} ago. Another
   * consumer takes an entry only once Redis counts it idle for the claim idle time; its idle
   * time runs from no earlier than the confirmation was sent, and the first copy was applied
   * before now, so none can have taken it before that copy settled it. A gap in Redis's
   * replies does not extend this: from this worker's side, a Redis stall (during which no one
   * takes anything) looks like a cut-off of this worker alone (during which others do). What
   * extends it is the stream's own window (`windowMs`, its proven part, read after the call by
   * {@link RedisSettler.#streamWindowMs}): opened at some time W by a call that found no call on
   * the stream in the `windowMs` before W (a stall of Redis or of every consumer, not of this
   * worker alone), and in force since. Every reclaim is such a call, so one before W ran no
   * later than W − `windowMs` (when the entry was idle less than the lease, given the check
   * below), and one since W needed the lease plus `windowMs` of idle time (entries given back,
   * which a reclaim takes at the lease alone, excepted: only an entry's owner gives it back, and
   * this worker did not give back one it was settling): an entry confirmed less than
   * {@link heldUntilMs} + `windowMs` ago, timed after the window's reply, was taken by none.
   * `judgedAtMs`: when the call's reply came (the plain check is timed then). Else
   * {@link FENCED}: another consumer may hold it, or have run it.
   */
  #notPending(
    d: RedisDelivery,
    code: number,
    sentAtReady: number,
    judgedAtMs: number,
    windowMs = 0,
  ): typeof EARLIER | typeof FENCED {
    if (code !== 2 || this.#ctx.mainReadyCount() === sentAtReady || d.isLeaseLost) return FENCED;
    const heldMs = heldUntilMs(this.#ctx.claimMinIdleMs);
    if (judgedAtMs - d.leaseConfirmedAtMs < heldMs) return EARLIER;
    if (windowMs <= 0) return FENCED;
    // Timed after the window's reply (it may have opened the window itself), less a thousandth
    // for clock rates over a window that may last long.
    const limitMs = heldMs + windowMs;
    return awakeNow() - d.leaseConfirmedAtMs < limitMs - limitMs / 1000 ? EARLIER : FENCED;
  }

  /**
   * True when {@link RedisSettler.#notPending} would judge `d` settled by an earlier copy of the
   * call but for its age: only the stream's window can then tell (rare: a settle resent after
   * a Redis stall longer than about half the lease).
   */
  #isAgedOut(d: RedisDelivery, code: number, sentAtReady: number, judgedAtMs: number): boolean {
    return (
      code === 2 &&
      this.#ctx.mainReadyCount() !== sentAtReady &&
      !d.isLeaseLost &&
      judgedAtMs - d.leaseConfirmedAtMs >= heldUntilMs(this.#ctx.claimMinIdleMs)
    );
  }

  /**
   * The extra idle ms every reclaim of `d`'s stream requires now, from the consumer (a pulse
   * call, fleet-pulse.lua; 0: no window in force, no consumer to ask, or Redis did not answer:
   * then nothing is discounted).
   */
  async #streamWindowMs(d: RedisDelivery): Promise<number> {
    if (this.#streamWindow === undefined) return 0;
    try {
      return await this.#streamWindow(d);
    } catch (error) {
      this.#logger.debug(
        { err: error instanceof Error ? error.message : String(error) },
        "redis: could not read the stream's window",
      );
      return 0;
    }
  }

  /**
   * {@inheritDoc Delivery.leaseState}: `ownerless` once a renewal found the entry gone while it
   * ran here, `taken` once one found it held elsewhere; `held` at once while the last lease
   * confirmation (the read or reclaim that handed the entry out, or a renewal) is less than half
   * the claim idle time old (unless `ask`); else asks Redis (`lease-state.lua`): an entry no consumer holds that
   * left the stream is `ownerless`, one another consumer holds or will be handed is `taken`.
   */
  async leaseState(d: RedisDelivery, ask = false): Promise<LeaseState> {
    if (d.isEntryGone) return (await this.#newerJobHolds(d)) ? "taken" : "ownerless";
    if (d.isLeaseLost) return "taken";
    if (!ask && awakeNow() - d.leaseConfirmedAtMs < this.#ctx.claimMinIdleMs / 2) return "held";
    let holder: unknown;
    try {
      holder = await runScript(
        this.#ctx.main,
        "chicoryLeaseState",
        [d.keys.stream],
        [this.#ctx.group, this.#consumerId, d.deliveryId],
      );
    } catch (error) {
      throw this.#ctx.wrapError("leaseState", error);
    }
    if (Number(holder) === 0) return "held";
    return Number(holder) === 2 && !(await this.#newerJobHolds(d)) ? "ownerless" : "taken";
  }

  /**
   * Of `taskIds` (of entries gone from the stream), those whose unique marker is set: a newer
   * job of that caller-chosen id is queued, delayed or running (the entry was settled by a worker
   * that took it over, and the id published again), so the gone run's outcome must not become
   * that job's record. None when the set cannot be read (a stream lost in a restart takes the
   * unique set with it: the record is then the gone run's to write).
   */
  async #newerJobIds(uniqueKey: string, taskIds: readonly string[]): Promise<ReadonlySet<string>> {
    try {
      const flags = await this.#ctx.main.call("SMISMEMBER", uniqueKey, ...taskIds);
      return new Set(taskIds.filter((_, i) => Array.isArray(flags) && Number(flags[i]) === 1));
    } catch {
      return new Set();
    }
  }

  /** True when a newer job holds `d`'s task id ({@link RedisSettler.#newerJobIds}). */
  async #newerJobHolds(d: RedisDelivery): Promise<boolean> {
    const taskId = d.isUntrusted ? undefined : d.knownTaskId;
    return taskId !== undefined && (await this.#newerJobIds(d.keys.unique, [taskId])).size > 0;
  }
}

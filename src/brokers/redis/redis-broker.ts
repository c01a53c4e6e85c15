/**
 * The Redis broker: Redis Streams with consumer groups (SPEC §7 `redis`).
 *
 * Keys (queue names hash-tagged, so every script touches one Cluster slot):
 * `P:stream:{Q}` (entries: `data` = body; `id` = task id on entries of unique messages and on
 * re-added ones: retries, replays, delayed jobs), `P:delayed:{Q}` (sorted set of
 * task ids by due time) with `P:delayed-data:{Q}` (their bodies), `P:dlq:{Q}` (fields data,
 * error, failed_at, retry_count, id), `P:unique:{Q}` (ids of unique messages not yet
 * settled) and `P:sent:{Q}:<token>` (a plain publish call's receipt, 60 s); `P` = `keyPrefix`
 * (default `chicory`). `P:probe` is only read (`GETBIT`, to find the server's
 * `proto-max-bulk-len` without `CONFIG`: a longer message is refused at `publish`).
 *
 * Semantics: at-least-once. `publish` is one XADD (plain publishes of one event-loop turn to
 * one queue go together in one script call, which leaves a receipt so that a resent copy adds
 * nothing; delayed ones of a turn go together in another, with one Redis clock reading for
 * all; one script for `unique` or a backlog limit without a delay) and resolves when Redis
 * replied: durable only as far as the server persists (AOF `appendfsync always` for no loss). Work streams and the DLQ are never trimmed; acked
 * entries are deleted (XACK+XDEL in one script). Delays are measured by the Redis clock.
 * FIFO per queue except for redeliveries, retries and delayed messages; no priorities.
 * Every settle (ack, retry, dead-letter) acts only if the entry is still pending, so a
 * settle repeated after a lost lease or a reconnect adds nothing.
 * Delayed messages of one task id are all kept (the second and later are set members that
 * add byte 255 and a number to the id, see `delayed-member.lua`).
 * Connections: one command connection (auto-pipelined) plus one per consumer; an injected
 * `client` stays owned by the caller.
 * @example
 * ```ts
 * const broker = new RedisBroker({ url: "redis://127.0.0.1:6379/0", claimMinIdleMs: 30_000 });
 * const app = new Chicory({ broker, backend: new RedisBackend() });
 * ```
 * @module
 */

import type { Backend } from "../../backends/backend.js";
import { Deadlines } from "../../core/deadlines.js";
import { DisconnectGate, overtakenMessage, SharedOpen } from "../../core/disconnect-gate.js";
import { staleMs } from "../../core/duration.js";
import type { EnvMap } from "../../core/env.js";
import type { Logger } from "../../core/logger.js";
import { MessageCodec } from "../../core/message.js";
import { DeadlinePassed, nextTurn, withinDeadline } from "../../core/sleep.js";
import { processWarningLogger } from "../../core/warn-once.js";
import {
  BrokerConnectionError,
  ChicoryError,
  ConfigurationError,
  MessageTooLargeError,
  QueueFullError,
} from "../../errors.js";
import { checkRedisAccess, defineAccessCheck, isNoPermError, refuseReplica } from "../../redis/redis-access.js";
import { type BulkLimit, BulkLimitReader } from "../../redis/redis-bulk-limit.js";
import { isRefusedUnapplied, type RedisClientLike } from "../../redis/redis-client.js";
import {
  adapterClient,
  closeRedis,
  describeRedisError,
  isClosedBeforeAnswer,
  isClusterClient,
  lastConnectionError,
  openDuplicate,
  openRedis,
  pingRedis,
  redactedCopy,
} from "../../redis/redis-connect.js";
import { watchEviction } from "../../redis/redis-eviction.js";
import { type ResolvedRedisConnection, resolveRedisConnection, SOCKET_TIMEOUT_MS } from "../../redis/redis-options.js";
import { isRedisRecordWriter, type RedisRecordWriter } from "../../redis/redis-record-writer.js";
import { refuseOldRedis } from "../../redis/redis-version.js";
import type {
  Broker,
  BrokerBinding,
  BrokerCapabilities,
  Consumer,
  ConsumerOptions,
  DlqMessage,
  DlqReplayGuard,
  HealthStatus,
  OutgoingMessage,
  PublishResult,
} from "../broker.js";
import * as admin from "./redis-admin.js";
import type { RedisBrokerOptions, RedisBrokerSettings } from "./redis-broker-options.js";
import { resolveBrokerSettings } from "./redis-broker-options.js";
import { RedisConsumer } from "./redis-consumer.js";
import type { RedisBrokerContext } from "./redis-context.js";
import { DueMover } from "./redis-due-mover.js";
import { QueueKeyCache, type QueueKeys } from "./redis-keys.js";
import { PublishBatcher, receiptKey } from "./redis-publish-batch.js";
import { defineBrokerScripts } from "./redis-scripts.js";
import { appendDeadLetter } from "./redis-settler.js";

/** Longest wait for an inspection call (counts, listings). */
const INSPECTION_TIMEOUT_MS = 10_000;
/** Longest wait for one command of the read of the server's `proto-max-bulk-len`. */
const LIMIT_READ_TIMEOUT_MS = 5000;
/** Redis's least `proto-max-bulk-len` (1 MiB): a message no longer fits whatever the server's limit. */
const LEAST_BULK_BYTES = 1024 * 1024;
/** Oldest read of the limit a message that may exceed {@link LEAST_BULK_BYTES} is checked against. */
const LIMIT_MAX_AGE_MS = 1000;
/** Queue used by admin calls without a queue. */
const DEFAULT_QUEUE = "default";

/** The error of a publish refused by the backlog limit `max`. */
function queueFullError(queue: string, max: number): QueueFullError {
  return new QueueFullError(
    `queue "${queue}" is full (${max} messages, CHICORY_BROKER_REDIS_MAX_STREAM_LENGTH): message not published`,
    { isRefused: true }, // checked before anything is written for it
  );
}

/** Redis Streams broker (see module doc). */
export class RedisBroker implements Broker {
  /** Always `"redis"`. */
  readonly kind = "redis";
  /** Delays, unique ids, durable (as the server persists), several processes; no priorities. */
  readonly capabilities: BrokerCapabilities = {
    priorities: false,
    delayedDelivery: true,
    uniqueIds: true,
    durable: true,
    multiProcess: true,
  };
  /** Connection URL with the password masked. */
  readonly displayUrl: string;
  /** Resolved settings. */
  readonly settings: RedisBrokerSettings;
  /** {@inheritDoc Broker.displaySettings} */
  get displaySettings(): string {
    return `key prefix "${this.settings.keyPrefix}", consumer group "${this.settings.consumerGroup}"`;
  }
  readonly #connection: ResolvedRedisConnection;
  readonly #injected: RedisClientLike | undefined;
  #stopEvictionChecks: (() => void) | undefined;
  #stopReconnectWatch: (() => void) | undefined;
  readonly #keys: QueueKeyCache;
  readonly #logger: Logger;
  readonly #consumers = new Set<RedisConsumer>();
  /** The publish timeout of every pending publish (one timer for all). */
  readonly #publishDeadlines: Deadlines;
  /** Plain publishes of a turn, one script call per queue (set while connected). */
  #batcher: PublishBatcher | undefined;
  /** Set by a disconnect() after a connect(), cleared by the next connect: says so in errors. */
  #isDisconnected = false;
  #codec = new MessageCodec();
  #replayGuard: DlqReplayGuard | undefined;
  #ctx: RedisBrokerContext | undefined;
  readonly #connecting = new SharedOpen();
  /** The `disconnect()` under way, if any: a `connect()` meanwhile opens once it is done. */
  readonly #disconnecting = new DisconnectGate();
  /** Moves the delayed jobs this process schedules when they fall due. */
  #dueMover: DueMover | undefined;
  /** The result backend whose terminal records acks write (see {@link RedisBroker.attachResults}). */
  #records: RedisRecordWriter | undefined;
  /** The publishes' own connection, with `waitReplicas` (a `WAIT` blocks its connection). */
  #publisher: RedisClientLike | undefined;
  /** Reads the server's `proto-max-bulk-len` (see {@link RedisBroker.#readBodyLimit}). */
  readonly #bulkLimit: BulkLimitReader;
  /** The server's `proto-max-bulk-len` as last read (unknown: undefined, or "at least" the probe's ceiling). */
  #bodyLimit: BulkLimit | undefined;
  /** Some read of the limit succeeded (a server that never told is not asked again before long messages). */
  #bodyLimitRead = false;
  /** When a read of the limit last succeeded (`performance.now()`). */
  #bodyLimitReadAtMs = Number.NEGATIVE_INFINITY;
  /** The read of the limit under way for messages that wait for it (see {@link RedisBroker.#checkSize}). */
  #bodyLimitReading: Promise<void> | undefined;

  constructor(options: RedisBrokerOptions = {}) {
    const env: EnvMap = options.env ?? process.env;
    this.#connection = resolveRedisConnection(options, env, "CHICORY_BROKER_REDIS");
    this.settings = resolveBrokerSettings(options, env);
    this.displayUrl = this.#connection.displayUrl;
    this.#injected = options.client;
    this.#keys = new QueueKeyCache(this.settings.keyPrefix);
    this.#logger = options.logger ?? processWarningLogger("CHICORY_REDIS_BROKER");
    const limitDeadlines = new Deadlines(LIMIT_READ_TIMEOUT_MS, () => new DeadlinePassed(LIMIT_READ_TIMEOUT_MS));
    this.#bulkLimit = new BulkLimitReader({
      probeKey: `${this.settings.keyPrefix}:probe`, // no queue key (those are P:<kind>:{Q}); only read
      guard: (operation, label) => limitDeadlines.guard(operation, label),
      onStepFailed: (step, error) =>
        this.#logger.debug(
          { err: describeRedisError(error, this.#connection.password) },
          step === "config"
            ? "redis broker: the server's proto-max-bulk-len could not be read with CONFIG GET; probing it with GETBIT"
            : "redis broker: the server's proto-max-bulk-len could not be read; messages are not checked against it",
        ),
    });
    const displayUrl = this.displayUrl;
    this.#publishDeadlines = new Deadlines(
      this.settings.publishTimeoutMs,
      (queue, timeoutMs) =>
        new BrokerConnectionError(
          `publish to queue "${queue}" got no answer from ${displayUrl} within ${timeoutMs} ms${lastConnectionError(this.#publisher ?? this.#ctx?.main)}; ` +
            "its outcome is unknown: it is applied if Redis received it (the client sends it again once reconnected); a caller-chosen taskId makes a retry safe",
        ),
    );
  }

  /** Uses the app's codec to rewrite messages on DLQ replay. */
  bind(binding: BrokerBinding): void {
    this.#codec = binding.codec;
    this.#replayGuard = binding.guardReplay;
  }

  /**
   * Opens the command connection; idempotent. Rejects when a `disconnect()` made after the
   * call overtakes it (that disconnect closes what it opened).
   */
  connect(): Promise<void> {
    // After a disconnect() still under way, which may not have let go of the connection yet:
    // opened now, the new connection would be stopped by it, or left closed.
    return this.#disconnecting.connect(
      () => (this.#ctx ? Promise.resolve() : this.#connecting.run((signal) => this.#open(signal))),
      () => new BrokerConnectionError(overtakenMessage("redis broker", this.displayUrl)),
    );
  }

  /** `signal`: aborted by a `disconnect()` while it runs, which it then cuts short (see #disconnect). */
  async #open(signal: AbortSignal): Promise<void> {
    const main = await adapterClient(
      this.#injected,
      this.#connection,
      {
        enableAutoPipelining: true,
        // The settler already sends one ack call per turn: write it at once rather than a
        // poll phase later with the automatic pipeline.
        // The same for publish batches: a full batch leaves while the caller is still
        // publishing, and the calls of one queue reach Redis in the order they were made
        // (a publish that is a call of its own too, after the batch made before it).
        autoPipeliningIgnoredCommands: [
          "chicoryAck",
          "chicoryAckWithRecords",
          "chicoryAckRead",
          "chicoryAckWithRecordsRead",
          "chicoryPublishBatch",
          "chicoryPublishDelayed",
          "chicoryPublish",
        ],
        connectionName: "chicory-broker",
      },
      "Redis broker",
      connectionError,
      signal,
    );
    defineBrokerScripts(main);
    defineAccessCheck(main);
    try {
      await Promise.all([refuseOldRedis(main, "Redis broker", this.displayUrl), this.#readBodyLimit(main)]);
    } catch (error) {
      if (main !== this.#injected) await closeRedis(main);
      throw error;
    }
    const { waitReplicas, waitTimeoutMs } = this.settings;
    if (waitReplicas > 0) {
      // Publishes wait for replicas on a connection of their own: a WAIT holds up every command
      // behind it on its connection, and the workers' acks and lease renewals must not wait
      // (with a given client, a copy of it that the broker owns; never a Cluster: the settings
      // refuse one). A call's WAIT leaves once its reply is in (redis-publish-batch.ts).
      const publisherOptions = {
        enableAutoPipelining: false,
        connectionName: "chicory-broker-publish",
        // a WAIT's answer may take waitTimeoutMs: not a dead connection
        socketTimeout: waitTimeoutMs + SOCKET_TIMEOUT_MS,
      };
      try {
        this.#publisher =
          main === this.#injected
            ? await openDuplicate(main, publisherOptions)
            : await openRedis(this.#connection, publisherOptions, "Redis broker", connectionError, signal);
      } catch (error) {
        if (main !== this.#injected) await closeRedis(main);
        throw error;
      }
      defineBrokerScripts(this.#publisher);
    }
    const password = this.#connection.password;
    const displayUrl = this.displayUrl;
    // In the background: connecting does not wait for the check (which never throws); again
    // after every reconnect.
    this.#stopEvictionChecks = watchEviction(main, "queues", "Redis broker", displayUrl);
    // One listener for every consumer (not one each: many workers in a process share `main`).
    let readyCount = 0; // compared before and after a call, never read as an absolute
    const onReconnect = () => {
      readyCount++;
      for (const consumer of this.#consumers) consumer.noteReconnect();
      void this.#readBodyLimit(main); // a restarted server may run with another limit
    };
    main.on("ready", onReconnect);
    this.#stopReconnectWatch = () => main.off("ready", onReconnect);
    const dueMover = new DueMover(main, this.#logger);
    const isCluster = isClusterClient(main);
    this.#dueMover = dueMover;
    this.#isDisconnected = false;
    this.#ctx = {
      main,
      keys: this.#keys,
      group: this.settings.consumerGroup,
      claimMinIdleMs: this.settings.claimMinIdleMs,
      blockMs: this.settings.blockMs,
      prefetch: this.settings.prefetch,
      dlqMaxLength: this.settings.dlqMaxLength,
      logger: this.#logger,
      displayUrl,
      mainReadyCount: () => readyCount,
      oversize: (body) => this.#checkSize(body),
      scheduleMove: (keys, delayMs) => dueMover.schedule(keys, delayMs),
      wrapError: (operation, error) =>
        error instanceof BrokerConnectionError
          ? error
          : isClosedBeforeAnswer(error) // the broker disconnected while Redis was away, or a Cluster node went
            ? new BrokerConnectionError(
                isCluster
                  ? `redis broker ${operation}: the connection to a node of ${displayUrl} closed before it answered (the node went away, or the broker disconnected); its outcome is unknown (a write is applied if the node received it)`
                  : `redis broker ${operation}: the broker disconnected before ${displayUrl} answered; its outcome is unknown (a write is applied if Redis received it)`,
                { cause: redactedCopy(error, password) },
              )
            : new BrokerConnectionError(
                `redis broker ${operation} failed (${displayUrl}): ${describeRedisError(error, password)}`,
                // (refused before any write; other reply errors, or a timeout, leave it unknown)
                { cause: redactedCopy(error, password), isRefused: isRefusedUnapplied(error) },
              ),
    };
    const ctx = this.#ctx;
    this.#batcher = new PublishBatcher({
      main: this.#publisher ?? main,
      wait: waitReplicas > 0 ? { replicas: waitReplicas, timeoutMs: waitTimeoutMs } : undefined,
      isCluster,
      deadlines: this.#publishDeadlines,
      wrapError: (error) => ctx.wrapError("publish", error),
      scheduleMove: (keys, delayMs) => dueMover.schedule(keys, delayMs),
    });
  }

  /**
   * Reads the server's `proto-max-bulk-len`, the longest message it takes: as the broker
   * connects, again after each reconnect, and before a long message when the last read is old
   * ({@link RedisBroker.#checkSize}). A longer one would not be refused by a reply: Redis
   * closes the connection on reading its length, and the client would send it again after each
   * reconnect, stalling the connection (and every publish and ack on it) for good. So such a
   * message is refused here ({@link RedisBroker.#oversize}). Read with `CONFIG GET` as the
   * `default` user, else probed with `GETBIT` (see {@link BulkLimitReader}): one command at
   * Redis's default limit. A read that fails keeps the last value (none at first: nothing is
   * refused here then).
   */
  async #readBodyLimit(main: RedisClientLike): Promise<void> {
    const limit = await this.#bulkLimit.read(main);
    if (limit === undefined) return;
    const before = this.#bodyLimitRead ? (this.#bodyLimit?.bytes ?? "default") : undefined;
    this.#bodyLimitRead = true;
    this.#bodyLimitReadAtMs = performance.now();
    this.#bodyLimit = limit.atLeast ? undefined : limit;
    const now = this.#bodyLimit?.bytes ?? "default";
    if (before !== undefined && before !== now) {
      this.#logger.info(
        { limit: now, before, source: limit.how },
        "redis broker: the server changed its proto-max-bulk-len; messages are held to the new limit",
      );
    }
  }

  /**
   * {@link RedisBroker.#oversize}, against a limit read at most {@link LIMIT_MAX_AGE_MS} ago when
   * `body` may be longer than Redis's least `proto-max-bulk-len` (1 MiB: only with
   * `CHICORY_MAX_MESSAGE_BYTES` raised over it), so that a `CONFIG SET` that lowered it is
   * followed without a reconnect (publishes, a worker's retries, DLQ replays). Such a message
   * then waits for one read (shared by all that wait), and may reach its queue after shorter
   * ones published after it. Shorter messages fit any server and wait for nothing. Not when no
   * read ever succeeded: a user refused `CONFIG` and `GETBIT` would add an `ACL LOG` entry
   * each time.
   */
  #checkSize(body: string): MessageTooLargeError | undefined | Promise<MessageTooLargeError | undefined> {
    if (body.length * 3 <= LEAST_BULK_BYTES || !this.#bodyLimitRead) return this.#oversize(body);
    const ctx = this.#ctx;
    if (ctx === undefined || performance.now() - this.#bodyLimitReadAtMs < LIMIT_MAX_AGE_MS)
      return this.#oversize(body);
    this.#bodyLimitReading ??= this.#readBodyLimit(ctx.main).finally(() => {
      this.#bodyLimitReading = undefined;
    });
    return this.#bodyLimitReading.then(() => this.#oversize(body));
  }

  /** The error of a message `body` longer than the server takes in one argument; else undefined. */
  #oversize(body: string): MessageTooLargeError | undefined {
    const limit = this.#bodyLimit;
    // at most 3 UTF-8 bytes per UTF-16 unit: the exact count only near the limit
    if (limit === undefined || body.length * 3 <= limit.bytes) return undefined;
    const size = Buffer.byteLength(body, "utf8");
    if (size <= limit.bytes) return undefined;
    return new MessageTooLargeError(size, limit.bytes, {
      source: `the broker's Redis server ${limit.how}; keep CHICORY_MAX_MESSAGE_BYTES at most that`,
    });
  }

  /**
   * Closes consumers and the connections the broker owns; idempotent. Publishes made before
   * the call are sent first, and the connection stays open until each is answered (or reaches
   * its `publishTimeoutMs`), so a busy Redis does not turn a publish it applies into an error.
   * While the connection is down, those still unanswered fail at once ("outcome unknown").
   */
  disconnect(): Promise<void> {
    return this.#disconnecting.closing(this.#disconnect());
  }

  async #disconnect(): Promise<void> {
    // a connect under way is cut short (a server that accepts and never answers would hold
    // this disconnect for the connect's whole timeout), then waited for
    this.#connecting.cut();
    await this.#connecting.running?.catch(() => undefined);
    const ctx = this.#ctx;
    this.#ctx = undefined;
    if (ctx) this.#isDisconnected = true;
    this.#batcher?.flush();
    this.#batcher = undefined;
    this.#dueMover?.close();
    this.#dueMover = undefined;
    await Promise.all([...this.#consumers].map((c) => c.close()));
    this.#consumers.clear();
    this.#stopEvictionChecks?.();
    this.#stopEvictionChecks = undefined;
    this.#stopReconnectWatch?.();
    this.#stopReconnectWatch = undefined;
    const publisher = this.#publisher;
    this.#publisher = undefined;
    // A caller's client goes on (its replies will come); the broker closes what it opened: its
    // connections, or with a given client the copy of it the publishes used (waitReplicas).
    const ownsMain = ctx?.main !== this.#injected;
    if (!ctx || (!ownsMain && publisher === undefined)) return;
    await whilePublishesConnected(publisher ?? ctx.main, this.#publishDeadlines.whenIdle());
    await Promise.all([ownsMain && closeRedis(ctx.main), publisher && closeRedis(publisher)]);
    // Publishes Redis has not answered by now (it is away: the client keeps them queued and
    // would never settle them once closed) end with the same "outcome unknown" answer their
    // time limit would give, at once. One turn first: replies that came before the close
    // settle their publishes through a few promise steps.
    await nextTurn();
    const displayUrl = this.displayUrl;
    this.#publishDeadlines.rejectAll(
      (queue) =>
        new BrokerConnectionError(
          `publish to queue "${queue}": the broker disconnected before ${displayUrl} answered; its outcome is unknown`,
        ),
    );
  }

  #context(): RedisBrokerContext {
    if (!this.#ctx) {
      throw new BrokerConnectionError(
        this.#isDisconnected
          ? "redis broker is disconnected (disconnect() was called, by app.disconnect() say): connect() again to use it"
          : "redis broker is not connected: call connect() first",
      );
    }
    return this.#ctx;
  }

  /**
   * Enqueues a message. A plain one (no delay, `unique` or backlog limit) joins the other
   * plain publishes of this event-loop turn to its queue in one script call, which a resent
   * copy does not repeat; a delayed one joins the delayed publishes of the turn to its queue
   * in another, which reads the Redis clock once for all (see `redis-publish-batch.ts`); the
   * others (`unique` or a backlog limit, no delay) are one script call each.
   * @throws BrokerConnectionError when Redis refuses it or the backlog limit is reached
   * @throws MessageTooLargeError when the body is longer than the server takes in one argument
   *   (its `proto-max-bulk-len`, see {@link RedisBroker.#readBodyLimit})
   */
  publish(queue: string, message: OutgoingMessage): Promise<PublishResult> {
    const tooLarge = this.#checkSize(message.body);
    if (tooLarge instanceof Promise) {
      return tooLarge.then((error) => {
        if (error !== undefined) throw error;
        return this.#publishFitting(queue, message);
      });
    }
    if (tooLarge !== undefined) return Promise.reject(tooLarge);
    return this.#publishFitting(queue, message);
  }

  /** {@link RedisBroker.publish} of a message the server takes. */
  #publishFitting(queue: string, message: OutgoingMessage): Promise<PublishResult> {
    const batcher = this.#batcher;
    const max = this.settings.maxStreamLength;
    const delayMs = message.delayMs ?? 0;
    if (batcher !== undefined && (delayMs > 0 || (!message.unique && max === 0))) {
      let keys: QueueKeys;
      try {
        keys = this.#keys.get(queue); // checks the queue name
      } catch (error) {
        return Promise.reject(error);
      }
      if (delayMs > 0) {
        const delayed = { id: message.id, body: message.body, delayMs, unique: message.unique === true };
        return batcher.publishDelayed(keys, delayed, max).then((code) => {
          if (code === -1) throw queueFullError(queue, max);
          return { published: code === 1 };
        });
      }
      // The body holds the task id; only entries of unique messages repeat it in an `id` field.
      return batcher.publish(keys.stream, keys.sent, queue, message.body);
    }
    return this.#publishDeadlines.guard(this.#publish(queue, message), queue);
  }

  /**
   * A publish with `unique` or the backlog limit and no delay (the others go to the batcher,
   * which exists whenever the broker is connected; a delay is still honoured here).
   */
  async #publish(queue: string, message: OutgoingMessage): Promise<PublishResult> {
    const ctx = this.#context();
    const keys = this.#keys.get(queue);
    const delayMs = Math.max(0, Math.ceil(message.delayMs ?? 0)); // never early: rounded up
    const max = this.settings.maxStreamLength;
    const batcher = this.#batcher!; // made and dropped with the context (connect, disconnect)
    try {
      // after the plain publishes of this queue made before it (their batch is sent first;
      // both calls are written at once, in that order)
      batcher.flushQueue(keys.stream);
      // a receipt, as for the batched calls: a resent copy answers as the first did
      const mark = batcher.mark(); // (waitReplicas)
      const result = await batcher.sendCall(
        "chicoryPublish",
        [keys.stream, keys.delayed, keys.delayedData, keys.unique, receiptKey(keys.sent)],
        [message.body, message.id, delayMs, message.unique ? "1" : "0", max, batcher.receiptTtlMs],
      );
      if (result === -1) throw queueFullError(queue, max);
      if (result === 1 && delayMs > 0) ctx.scheduleMove(keys, delayMs); // before the replicas' wait
      // only a message this call added waits for the replicas
      const unconfirmed = result === 1 && mark !== undefined ? await batcher.confirm(mark) : undefined;
      if (unconfirmed !== undefined) throw unconfirmed;
      return { published: result === 1 };
    } catch (error) {
      throw ctx.wrapError("publish", error);
    }
  }

  /**
   * Appends an already acknowledged message (a failed `at_most_once` task) to `queue`'s DLQ.
   * @throws BrokerConnectionError when the DLQ is full (the DLQ is never trimmed)
   */
  async writeDeadLetter(queue: string, body: string, error: string): Promise<void> {
    await appendDeadLetter(this.#context(), queue, this.#keys.get(queue), body, error);
  }

  /** A consumer of `options.queues` (its blocking connection opens on the first fetch). */
  consumer(options: ConsumerOptions): Consumer {
    const consumer = new RedisConsumer(
      this.#context(),
      options,
      (closed) => this.#consumers.delete(closed),
      this.#records,
    );
    this.#consumers.add(consumer);
    return consumer;
  }

  /**
   * With a Redis result backend on the same server, database and user (single node, not a
   * Cluster), a delivery's terminal record and its ack become one script call
   * (`ack-with-records.lua`). True when attached; false (two calls, as before) otherwise.
   */
  attachResults(backend: Backend): boolean {
    const main = this.#ctx?.main;
    this.#records = main && isRedisRecordWriter(backend) && backend.sharesServerWith(main) ? backend : undefined;
    return this.#records !== undefined;
  }

  /**
   * Runs an inspection or administration call. `isInspection`: a count or listing, answered
   * within {@link INSPECTION_TIMEOUT_MS} (a status page must not hang for a whole outage while
   * its commands wait in the client); changes (replay, purge…) are not cut short, since they may
   * still be applied.
   */
  async #admin<T>(operation: string, run: (ctx: RedisBrokerContext) => Promise<T>, isInspection = false): Promise<T> {
    const ctx = this.#context();
    try {
      return await (isInspection ? withinDeadline(run(ctx), INSPECTION_TIMEOUT_MS) : run(ctx));
    } catch (error) {
      if (error instanceof DeadlinePassed) {
        throw new BrokerConnectionError(
          `redis broker ${operation}: no answer from ${ctx.displayUrl} within ${INSPECTION_TIMEOUT_MS / 1000} s (Redis unreachable?)`,
        );
      }
      // Chicory's own errors (a bad id, the app's DLQ replay guard) already say what failed
      if (error instanceof ChicoryError) throw error;
      throw ctx.wrapError(operation, error);
    }
  }

  /** {@inheritDoc BrokerAdmin.getDlqMessages} */
  getDlqMessages(queue = DEFAULT_QUEUE, count = 100): Promise<DlqMessage[]> {
    return this.#admin("getDlqMessages", (c) => admin.getDlqMessages(c.main, this.#keys.get(queue), count), true);
  }

  /**
   * {@inheritDoc BrokerAdmin.getDlqMessagesAfter} One `XRANGE` from past that entry id; a
   * malformed id is a `ValidationError`.
   */
  getDlqMessagesAfter(afterMessageId: string, queue = DEFAULT_QUEUE, count = 100): Promise<DlqMessage[]> {
    return this.#admin(
      "getDlqMessagesAfter",
      (c) => admin.getDlqMessages(c.main, this.#keys.get(queue), count, afterMessageId),
      true,
    );
  }

  /**
   * {@inheritDoc BrokerAdmin.replayFromDlq} `queue` (default `"default"`) names the DLQ searched
   * and the queue replayed to. Refused (an error; the entry stays) while another message of the
   * task id is queued, delayed or running under a unique marker. See {@link admin.replayFromDlq}.
   */
  replayFromDlq(messageId: string, queue = DEFAULT_QUEUE, resetRetries = true): Promise<boolean> {
    return this.#admin("replayFromDlq", (c) =>
      admin.replayFromDlq(
        c.main,
        this.#codec,
        this.#keys.get(queue),
        messageId,
        resetRetries,
        this.#replayGuard,
        (body) => this.#checkSize(body),
      ),
    );
  }

  /** {@inheritDoc BrokerAdmin.deleteFromDlq} */
  deleteFromDlq(messageId: string, queue = DEFAULT_QUEUE): Promise<boolean> {
    return this.#admin("deleteFromDlq", (c) => admin.deleteFromDlq(c.main, this.#keys.get(queue), messageId));
  }

  /** Whether `queue`'s DLQ holds entry `messageId` (one `XRANGE`; a malformed id is a `ValidationError`). */
  hasDlqEntry(messageId: string, queue = DEFAULT_QUEUE): Promise<boolean> {
    return this.#admin("hasDlqEntry", (c) => admin.hasDlqEntry(c.main, this.#keys.get(queue), messageId), true);
  }

  /** {@inheritDoc BrokerAdmin.purgeDlq} */
  purgeDlq(queue = DEFAULT_QUEUE): Promise<number> {
    return this.#admin("purgeDlq", (c) => admin.purgeDlq(c.main, this.#keys.get(queue)));
  }

  /** {@inheritDoc BrokerAdmin.getDlqCount} */
  getDlqCount(queue = DEFAULT_QUEUE): Promise<number> {
    return this.#admin("getDlqCount", (c) => admin.getDlqCount(c.main, this.#keys.get(queue)), true);
  }

  /**
   * Entries of the group's pending list, less the read-ahead entries this instance's consumers
   * hold and have not handed out (those of other processes are counted).
   */
  async getPendingCount(queue = DEFAULT_QUEUE): Promise<number> {
    const stats = await this.#admin(
      "getPendingCount",
      (c) => admin.queueStats(c.main, this.#keys.get(queue), c.group),
      true,
    );
    return Math.max(0, stats.pending - this.#buffered(queue));
  }

  /**
   * Ready + delayed messages: stream length - pending + delayed (acked entries are deleted),
   * plus the read-ahead entries this instance's consumers hold and have not handed out.
   */
  async getQueueSize(queue = DEFAULT_QUEUE): Promise<number> {
    const s = await this.#admin("getQueueSize", (c) => admin.queueStats(c.main, this.#keys.get(queue), c.group), true);
    return Math.max(0, s.length - s.pending) + s.delayed + this.#buffered(queue);
  }

  #buffered(queue: string): number {
    let n = 0;
    for (const consumer of this.#consumers) n += consumer.bufferedCount(queue);
    return n;
  }

  /** {@inheritDoc BrokerAdmin.getConsumerCount} */
  getConsumerCount(queue = DEFAULT_QUEUE): Promise<number> {
    return this.#admin("getConsumerCount", (c) => admin.getConsumerCount(c.main, this.#keys.get(queue), c.group), true);
  }

  /**
   * Deletes waiting messages: ready, delayed, and those a stopped consumer gave back; in-flight
   * (pending) ones are left to their consumers.
   */
  purgeQueue(queue = DEFAULT_QUEUE): Promise<number> {
    return this.#admin("purgeQueue", (c) => admin.purgeQueue(c.main, this.#keys.get(queue), c.group));
  }

  /** Deletes consumers idle > `staleSeconds` (default 300) owning no pending entry, atomically. */
  async cleanupStaleClients(queue = DEFAULT_QUEUE, staleSeconds = 300): Promise<number> {
    const idleMs = staleMs(staleSeconds);
    return this.#admin("cleanupStaleClients", (c) =>
      admin.cleanupStaleConsumers(c.main, this.#keys.get(queue), c.group, idleMs),
    );
  }

  /**
   * Checks that this Redis user may run the broker's scripts on every key of `queues` (one
   * no-op script call per queue, naming its keys; Redis's ACL check refuses it with `NOPERM`).
   * A worker calls it at start. Commands a script runs inside are not checked here (a refusal
   * there fails the call that runs it, and the job is delivered again).
   * @throws ConfigurationError when Redis refuses, or the server is a replica (see `refuseReplica`); any other
   *   failure is left to the calls that follow
   */
  async checkAccess(queues: readonly string[]): Promise<void> {
    const ctx = this.#context();
    const groups = queues.map((queue) => {
      const k = this.#keys.get(queue);
      return {
        keys: [k.stream, k.delayed, k.delayedData, k.dlq, k.unique, k.pulse, `${k.sent}:check`],
        what: `the keys of queue "${queue}"`,
      };
    });
    const describe = (error: unknown) => describeRedisError(error, this.#connection.password);
    await refuseReplica(ctx.main, "redis broker", this.displayUrl);
    await checkRedisAccess(ctx.main, "redis broker", groups, `${this.settings.keyPrefix}:*`, describe);
    // The reads are a plain XREADGROUP (a @blocking command): a user without it would start and
    // then fail every fetch. Probed on a key that does not exist (NOGROUP: nothing is read or
    // created); Redis checks the command and the key before it runs.
    const probes = queues.map((queue) =>
      withinDeadline(
        ctx.main.call(
          "XREADGROUP",
          "GROUP",
          ctx.group,
          "check",
          "COUNT",
          1,
          "STREAMS",
          `${this.#keys.get(queue).sent}:check`,
          "0",
        ),
        2000,
      ).then(
        () => undefined,
        (error: unknown) => (isNoPermError(error) ? { queue, error } : undefined),
      ),
    );
    const refused = (await Promise.all(probes)).find((r) => r !== undefined);
    if (refused) {
      throw new ConfigurationError(
        `redis broker: the Redis user may not read queue "${refused.queue}" with XREADGROUP (${describe(refused.error)}); ` +
          'grant it the command (ACL SETUSER <user> +xreadgroup, or +@blocking; see docs/brokers/redis.md, "ACL")',
        { cause: redactedCopy(refused.error, this.#connection.password) },
      );
    }
  }

  /** PING round trip; never throws. */
  async healthcheck(): Promise<HealthStatus> {
    const status = await pingRedis(this.#ctx?.main, this.#connection.password);
    // The publishes' own connection (`waitReplicas`) is not pinged (a PING would wait behind
    // a WAIT): only its state is read.
    const publisher = this.#publisher;
    if (!status.connected || publisher === undefined || publisher.status === "ready") return status;
    return {
      connected: false,
      error: `the publishes' connection is ${publisher.status}${lastConnectionError(publisher)}`,
    };
  }
}

/** The error of a failed connect of the broker's (see {@link adapterClient}). */
function connectionError(message: string, cause: unknown): BrokerConnectionError {
  return new BrokerConnectionError(message, { cause });
}

/**
 * Resolves once `answered` does (every publish in flight answered, or at its time limit), or
 * as soon as `client` is not connected: commands of a connection that is down only wait in the
 * client, and end at once when it closes.
 */
function whilePublishesConnected(client: RedisClientLike, answered: Promise<void>): Promise<void> {
  if (client.status !== "ready") return Promise.resolve();
  return new Promise((resolve) => {
    const finish = (): void => {
      client.off("close", finish);
      client.off("end", finish);
      resolve();
    };
    client.on("close", finish);
    client.on("end", finish);
    answered.then(finish, finish);
  });
}

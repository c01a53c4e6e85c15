/**
 * The Redis result backend (SPEC §7 `redis`).
 *
 * Keys (`P` = `keyPrefix`, default `chicory`):
 * - `P:result:ID`: the whole {@link TaskRecord} as one JSON string (state first), with the
 *   result TTL. The SPEC's separate `state` key is folded into it: one key, one command per
 *   write, one GET (or MGET) per read.
 * - `P:heartbeat:WID`: a worker's stats, expiring after the heartbeat TTL; `P:workers`: sorted
 *   set of worker ids scored by the Redis time of their last heartbeat (ms).
 * - Channel `P:done:DB` (DB: the database number; pub/sub is shared by a server's databases, so
 *   apps on two databases with one prefix never see each other's records): one message per
 *   batch of terminal writes, a JSON array with per record the record itself (up to 2 KiB of
 *   JSON) or its task id (a JSON string), so a waiter usually needs no read after the
 *   notification.
 *
 * Semantics: a non-terminal write (STARTED, RETRY) is one script (precedence check + SET EX),
 * so it never overwrites a terminal record; terminal writes (terminal states may replace each
 * other) of one event-loop turn are one script call: a SET EX per record, then the PUBLISH;
 * concurrent duplicates never fail. `setState` writes a record holding only the given fields (no merge
 * with the previous record). `waitForResult` waiters of one backend share one subscriber
 * connection and one batched poll. Commands are auto-pipelined. An injected `client` stays
 * owned by the caller. With the Redis broker on the same server and database, a worker's
 * terminal records are written by the broker's ack script instead (one call per settled batch).
 * @example
 * ```ts
 * const backend = new RedisBackend({ url: "redis://127.0.0.1:6379/0", resultTtl: "1d" });
 * ```
 * @module
 */

import { randomUUID } from "node:crypto";
import type { HealthStatus } from "../../brokers/broker.js";
import { Deadlines } from "../../core/deadlines.js";
import { DisconnectGate, overtakenMessage, SharedOpen } from "../../core/disconnect-gate.js";
import { staleMs } from "../../core/duration.js";
import type { EnvMap } from "../../core/env.js";
import { FlushScheduler } from "../../core/flush-scheduler.js";
import type { Logger } from "../../core/logger.js";
import { DeadlinePassed, nextTurn, withinDeadline } from "../../core/sleep.js";
import { processWarningLogger } from "../../core/warn-once.js";
import { BackendConnectionError, ChicoryError, ConfigurationError, ValidationError } from "../../errors.js";
import { checkRedisAccess, defineAccessCheck, isNoPermError, refuseReplica } from "../../redis/redis-access.js";
import { BulkLimitReader } from "../../redis/redis-bulk-limit.js";
import { isCrossSlotError, isRefusedUnapplied, type RedisClientLike, runScript } from "../../redis/redis-client.js";
import {
  adapterClient,
  closeRedis,
  describeRedisError,
  isClosedBeforeAnswer,
  lastConnectionError,
  pingRedis,
  redactedCopy,
  sameRedisServer,
} from "../../redis/redis-connect.js";
import { watchEviction } from "../../redis/redis-eviction.js";
import { type ResolvedRedisConnection, resolveRedisConnection } from "../../redis/redis-options.js";
import { inPieces, isPieceSized, PIECE_BYTES } from "../../redis/redis-pieces.js";
import type { RedisRecordWriter, StoreResultsCall } from "../../redis/redis-record-writer.js";
import { watchRestart } from "../../redis/redis-restart.js";
import {
  type Backend,
  isTerminalState,
  type ResultSizeLimit,
  type StoredError,
  TASK_STATES,
  type TaskRecord,
  type TaskState,
  type WaitOptions,
  type WorkerStats,
} from "../backend.js";
import { PUSH_SAFETY_POLL_MS } from "../result-waiter.js";
import type { RedisBackendOptions, RedisBackendSettings } from "./redis-backend-options.js";
import { resolveBackendSettings } from "./redis-backend-options.js";
import { defineBackendScripts } from "./redis-backend-scripts.js";
import { decodeHeartbeat, decodeRecord, encodeRecord, notARecordKey } from "./redis-record.js";
import { RedisResultHub } from "./redis-result-hub.js";

/** True for Redis's WRONGTYPE reply (a command on a key of another type). */
function isWrongType(error: unknown): boolean {
  const cause = error instanceof Error && error.cause instanceof Error ? error.cause : error;
  return cause instanceof Error && cause.message.startsWith("WRONGTYPE");
}

/** Ids per MGET. */
const MGET_BATCH = 500;
/** Longest wait for one backend operation other than `get()`'s waits (Redis away: its commands queue in the client). */
const OPERATION_TIMEOUT_MS = 10_000;

/** An operation Redis had not answered when the backend disconnected (see {@link RedisBackend.disconnect}). */
class AnswerLost extends Error {}

/** Room a record takes in a Redis argument besides its result (id, state, name, times): ample. */
const RECORD_ROOM_BYTES = 64 * 1024;

/** Longest wait at connect for the sharded-server check's answer (as for the other checks there). */
const SHARD_CHECK_TIMEOUT_MS = 2000;

/** How long the staging key of a record written in pieces outlives a writer that died. */
const STAGING_TTL_SECONDS = 3600;
/**
 * Pieces of one record in flight at once (4 MiB): each piece's write has the time limit of one
 * operation from when it is sent, so a record of any size only needs the link to carry this
 * much per time limit, not the whole record.
 */
const PIECES_IN_FLIGHT = 8;

/** The result size limit of a server that stores strings of at most `value` bytes; `how` completes its description. */
function sizeLimit(value: number, how: string): ResultSizeLimit | undefined {
  if (!Number.isSafeInteger(value) || value <= 2 * RECORD_ROOM_BYTES) return undefined;
  return {
    bytes: value - RECORD_ROOM_BYTES,
    source: `the result backend's Redis server ${how}, the record's other fields included`,
  };
}

/** The time limits of one connection's bounded operations. */
function operationDeadlines(): Deadlines {
  return new Deadlines(OPERATION_TIMEOUT_MS, () => new DeadlinePassed(OPERATION_TIMEOUT_MS));
}

/**
 * Longest record (bytes of JSON) sent inside the done notification; a longer one is announced
 * by its id and read by the waiters that want it (every subscriber receives every message).
 */
const INLINE_RECORD_MAX = 2048;

/** Most stale workers removed by one cleanup script call (Lua unpacks a few thousand values at most). */
const CLEANUP_BATCH = 1000;

/** Most terminal records written by one script call (a larger turn makes several calls). */
const MAX_TERMINAL_BATCH = 500;
/**
 * Most JSON characters of one batch of terminal records (a batch is one script call, under one
 * operation's time limit): records near {@link PIECE_BYTES} each start a new batch every few.
 */
const MAX_TERMINAL_BATCH_CHARS = 4 * 1024 * 1024;

/** Terminal records of one event-loop turn (at most 500, and 4 Mi JSON characters) and the promise of their write. */
interface TerminalBatch {
  readonly keys: string[];
  readonly jsons: string[];
  readonly records: TaskRecord[];
  /** JSON characters of `jsons`, in all. */
  chars: number;
  readonly written: Promise<void>;
  resolve(): void;
  reject(error: unknown): void;
}

/** Redis result backend (see module doc). */
export class RedisBackend implements Backend, RedisRecordWriter {
  /** Always `"redis"`. */
  readonly kind = "redis";
  /** Connection URL with the password masked. */
  readonly displayUrl: string;
  /** Resolved settings. */
  readonly settings: RedisBackendSettings;
  /** {@inheritDoc Backend.displaySettings} */
  get displaySettings(): string {
    return `key prefix "${this.settings.keyPrefix}"`;
  }
  /** The pub/sub channel finished records are announced on: `P:done:DB` (see module doc). */
  readonly doneChannel: string;
  readonly #connection: ResolvedRedisConnection;
  readonly #injected: RedisClientLike | undefined;
  #stopEvictionChecks: (() => void) | undefined;
  #stopRestartWatch: (() => void) | undefined;
  #serverChangedAt: number | undefined;
  readonly #logger: Logger;
  readonly #prefix: string;
  /** Bytes of a result key before the task id (`P:result:`). */
  readonly #idOffset: number;
  #main: RedisClientLike | undefined;
  /** Reads the server's `proto-max-bulk-len` (see {@link RedisBackend.resultSizeLimit}). */
  readonly #bulkLimit: BulkLimitReader;
  #hub: RedisResultHub | undefined;
  /** Terminal records waiting for their write, in batches (see {@link RedisBackend.storeResult}). */
  #terminal: TerminalBatch[] = [];
  readonly #terminalFlush = new FlushScheduler(() => this.#flushTerminal());
  readonly #connecting = new SharedOpen();
  /** The `disconnect()` under way, if any: a `connect()` meanwhile opens once it is done. */
  readonly #disconnecting = new DisconnectGate();
  /**
   * Time limits of the bounded operations (see {@link RedisBackend.#run}), one timer for all,
   * which does not keep the process alive; `disconnect` ends those Redis has not answered.
   */
  #deadlines = operationDeadlines();

  constructor(options: RedisBackendOptions = {}) {
    const env: EnvMap = options.env ?? process.env;
    this.#connection = resolveRedisConnection(options, env, "CHICORY_BACKEND_REDIS");
    this.settings = resolveBackendSettings(options, env);
    this.displayUrl = this.#connection.displayUrl;
    this.#injected = options.client;
    this.#logger = options.logger ?? processWarningLogger("CHICORY_REDIS_BACKEND");
    this.#prefix = this.settings.keyPrefix;
    this.#bulkLimit = new BulkLimitReader({
      probeKey: this.resultKey(""), // no task id is empty
      guard: (operation, label) => this.#deadlines.guard(operation, label),
      onStepFailed: (step, error) =>
        this.#logger.debug(
          { err: this.#describe(error) },
          step === "config"
            ? "redis backend: the server's proto-max-bulk-len could not be read with CONFIG GET; probing it with GETBIT"
            : "redis backend: the server's argument size limit could not be read; a record it refuses is recognized by its reply",
        ),
    });
    this.#idOffset = Buffer.byteLength(this.resultKey(""), "utf8");
    const injectedDb = (options.client as { readonly options?: { readonly db?: unknown } } | undefined)?.options?.db;
    const db = Number((options.client === undefined ? this.#connection.options.db : injectedDb) ?? 0) || 0;
    this.doneChannel = `${this.#prefix}:done:${db}`;
  }

  /**
   * {@inheritDoc Backend.resultSizeLimit} The server's `proto-max-bulk-len` (512 MB by
   * default: the longest string it stores, and argument it takes), less room for the record's
   * other fields, read with `CONFIG GET` as the default user. For a named ACL user (whose rules
   * rarely allow `CONFIG`: each refusal would be an `ACL LOG` entry) or when `CONFIG` is refused
   * (a managed service), found with `GETBIT` (which refuses a bit offset of that many bytes or
   * more); undefined when that is refused too. A record over it is then refused by Redis when
   * written (records over 512 KiB are written in pieces, so the refusal is read).
   * `client-query-buffer-limit` (1 MiB at least) does not limit records: none is sent in one
   * argument longer than 512 KiB.
   */
  async resultSizeLimit(): Promise<ResultSizeLimit | undefined> {
    const main = this.#main;
    if (main === undefined) return undefined;
    const limit = await this.#bulkLimit.read(main);
    return limit === undefined ? undefined : sizeLimit(limit.bytes, limit.how);
  }

  /** Key of a task's record. */
  resultKey(taskId: string): string {
    return `${this.#prefix}:result:${taskId}`;
  }

  #heartbeatKey(workerId: string): string {
    return `${this.#prefix}:heartbeat:${workerId}`;
  }

  get #workersKey(): string {
    return `${this.#prefix}:workers`;
  }

  /** {@inheritDoc Backend.isOpen} */
  get isOpen(): boolean {
    return (
      this.#main !== undefined || this.#connecting.running !== undefined || this.#disconnecting.connectsWaiting > 0
    );
  }

  /** {@inheritDoc Backend.isReady} */
  get isReady(): boolean {
    return this.#main !== undefined;
  }

  /** {@inheritDoc Backend.serverChangedAt} */
  get serverChangedAt(): number | undefined {
    return this.#serverChangedAt;
  }

  /** Opens the command connection; idempotent. The subscriber opens with the first wait. */
  connect(): Promise<void> {
    // After a disconnect() still under way, which may not have let go of the connection yet:
    // opened now, the new connection would be stopped by it, or left closed.
    return this.#disconnecting.connect(
      () => (this.#main ? Promise.resolve() : this.#connecting.run((signal) => this.#open(signal))),
      () => new BackendConnectionError(overtakenMessage("redis backend", this.displayUrl)),
    );
  }

  /** `signal`: aborted by a `disconnect()` while it runs, which it then cuts short (see #disconnect). */
  async #open(signal: AbortSignal): Promise<void> {
    if ((this.#injected as { readonly isCluster?: unknown } | undefined)?.isCluster === true) {
      // Its scripts write several records per call and its reads are MGETs: one node only.
      throw new ConfigurationError(
        "the Redis result backend needs a single Redis node, not a Cluster client (the broker runs on a Cluster; pass the backend a client of one node, or another backend)",
      );
    }
    const main = await adapterClient(
      this.#injected,
      this.#connection,
      {
        enableAutoPipelining: true,
        // Terminal records are already one call per turn: written at once (see the broker).
        autoPipeliningIgnoredCommands: ["chicoryStoreResults", "chicoryStoreResultsUnlessFinal"],
        connectionName: "chicory-backend",
      },
      "Redis backend",
      (message, cause) => new BackendConnectionError(message, { cause }),
      signal,
    );
    defineBackendScripts(main);
    defineAccessCheck(main);
    await this.#refuseShardedServer(main);
    // In the background: connecting does not wait for the check (which never throws); again
    // after every reconnect.
    this.#stopEvictionChecks = watchEviction(main, "records", "Redis backend", this.displayUrl);
    this.#stopRestartWatch = watchRestart(main, () => this.#onServerRestart());
    void this.#checkPublishRight(main);
    this.#main = main;
    this.#hub = new RedisResultHub({
      main,
      channel: this.doneChannel,
      pollIntervalMs: 1000,
      recordTtlMs: this.settings.resultTtlSeconds * 1000,
      fetchMany: (ids) => this.#fetchMany(ids),
      onError: (error, what = "read failed") =>
        this.#logger.warn({ err: this.#describe(error) }, `redis result wait: ${what}`),
      // get() without a timeout waits through an outage: one warning (not one per get()), and
      // one line when Redis answers again
      outage: {
        logger: this.#logger,
        backend: `redis backend ${this.displayUrl}`,
        lastError: () => lastConnectionError(main),
      },
    });
  }

  /**
   * Refuses a server that splits keys of several hash slots (a sharded server behind one
   * address: a proxy, a managed "cluster" reached without the Cluster API, a Cluster node given
   * as a plain client): its scripts write several records per call, and the broker's acks write
   * a record beside their stream entry, which such a server refuses call by call (CROSSSLOT), so
   * no result would ever be stored. One `EVAL` over two keys of two slots, at connect, waited
   * for at most {@link SHARD_CHECK_TIMEOUT_MS} (a Redis that runs no writes for now, paused or
   * failing over, would hold `connect()` and a `disconnect()` behind it for as long); another
   * error (a user without `EVAL`) or no answer is left to the calls that follow.
   * @throws ConfigurationError naming the server
   */
  async #refuseShardedServer(main: RedisClientLike): Promise<void> {
    const probe = `${this.#prefix}:probe`;
    try {
      await withinDeadline(main.call("EVAL", "return 1", "2", `${probe}:{a}`, `${probe}:{b}`), SHARD_CHECK_TIMEOUT_MS);
    } catch (error) {
      if (!isCrossSlotError(error)) return;
      if (main !== this.#injected) await closeRedis(main);
      throw new ConfigurationError(
        `the Redis result backend needs a single Redis node: ${this.displayUrl} refuses one call over keys of several hash slots (CROSSSLOT: a sharded server or proxy behind one address); give the backend a Redis that is not sharded, or another backend`,
      );
    }
  }

  /**
   * The server restarted or failed over (its `run_id` changed across a reconnect): said when
   * results are awaited, since a server that keeps nothing across restarts lost their jobs.
   */
  #onServerRestart(): void {
    this.#serverChangedAt = performance.now();
    const waiting = this.#hub?.waiting ?? 0;
    if (waiting === 0) return;
    this.#logger.warn(
      { backend: this.displayUrl, waiting },
      `redis backend ${this.displayUrl}: the server behind it changed (its run_id: a restart, or a Sentinel failover) while the results of ${waiting} task id(s) were awaited: a restarted server that keeps no data (no AOF, no RDB snapshot) lost the jobs it held, and a failover may lose writes not yet replicated; a get() on a lost job ends only at its timeout (without one, never)`,
    );
  }

  /**
   * Publishes an empty batch (`[]`, which waiters ignore) on the done channel, in the background:
   * a Redis user without the right to it (`NOPERM`) gets a warning. Its records are still
   * written (the scripts publish at best effort), but no waiter hears of them: they are found
   * by polling.
   */
  async #checkPublishRight(main: RedisClientLike): Promise<void> {
    try {
      await main.call("PUBLISH", this.doneChannel, "[]");
    } catch (error) {
      if (!isNoPermError(error)) return; // other errors: elsewhere
      this.#logger.warn(
        { channel: this.doneChannel, err: this.#describe(error) },
        `redis backend: this Redis user may not publish on ${this.doneChannel}: finished results are not announced, and waiters find them only by polling (every poll interval, or every ${PUSH_SAFETY_POLL_MS / 1000} s while subscribed); grant the channel to the user (ACL SETUSER <user> &${this.doneChannel})`,
      );
    }
  }

  /** Closes the connections the backend owns; pending waits resolve null. Idempotent. */
  disconnect(): Promise<void> {
    return this.#disconnecting.closing(this.#disconnect());
  }

  async #disconnect(): Promise<void> {
    // a connect under way is cut short, then waited for (as the broker's)
    this.#connecting.cut();
    await this.#connecting.running?.catch(() => undefined);
    const main = this.#main;
    const hub = this.#hub;
    const deadlines = this.#deadlines;
    this.#main = undefined;
    this.#hub = undefined;
    this.#deadlines = operationDeadlines(); // a connect() meanwhile keeps its own
    await hub?.close();
    this.#stopEvictionChecks?.();
    this.#stopEvictionChecks = undefined;
    this.#stopRestartWatch?.();
    this.#stopRestartWatch = undefined;
    if (!main || main === this.#injected) return; // a caller's client goes on: its replies will come
    await closeRedis(main);
    // Operations Redis has not answered by now (it is away: the client keeps their commands
    // queued and would never settle them once closed; a heartbeat of a worker stopping during
    // an outage) end now with a connection error, rather than at their time limit. One turn
    // first: replies that came before the close settle their operations through a few steps.
    await nextTurn();
    deadlines.rejectAll(() => new AnswerLost());
  }

  #describe(error: unknown): string {
    return describeRedisError(error, this.#connection.password);
  }

  /**
   * Runs one operation on the command connection. Bounded by {@link OPERATION_TIMEOUT_MS}
   * (commands wait in the client while Redis is away: `state()` or a status page must not hang
   * for a whole outage), unless `bounded` is false: the reads of `get()`'s waits, which resolve
   * once Redis is back.
   */
  async #run<T>(operation: string, fn: (main: RedisClientLike) => Promise<T>, bounded = true): Promise<T> {
    const main = this.#main;
    if (!main) throw new BackendConnectionError("redis backend is not connected: call connect() first");
    try {
      return await (bounded ? this.#deadlines.guard(fn(main), operation) : fn(main));
    } catch (error) {
      if (error instanceof AnswerLost || isClosedBeforeAnswer(error)) {
        throw new BackendConnectionError(
          `redis backend ${operation}: the backend disconnected before ${this.displayUrl} answered (Redis unreachable?); a write may still be applied if it was sent`,
        );
      }
      if (error instanceof DeadlinePassed) {
        throw new BackendConnectionError(
          `redis backend ${operation}: no answer from ${this.displayUrl} within ${OPERATION_TIMEOUT_MS / 1000} s (Redis unreachable?); a write may still be applied once it is back`,
        );
      }
      throw new BackendConnectionError(
        `redis backend ${operation} failed (${this.displayUrl}): ${this.#describe(error)}`,
        { cause: redactedCopy(error, this.#connection.password), isRefused: isRefusedUnapplied(error) },
      );
    }
  }

  /** {@inheritDoc Backend.setState} */
  async setState(
    taskId: string,
    state: TaskState,
    extra: { error?: StoredError; retries?: number; taskName?: string } = {},
  ): Promise<void> {
    await this.storeResult({
      taskId,
      state,
      ...(extra.error === undefined ? {} : { error: extra.error }),
      ...(extra.retries === undefined ? {} : { retries: extra.retries }),
      ...(extra.taskName === undefined ? {} : { taskName: extra.taskName }),
      updatedAt: new Date().toISOString(),
    });
  }

  /**
   * A terminal record replaces whatever is stored (terminal states may replace each other), so
   * it needs no precedence check: the terminal records of one event-loop turn are written and
   * announced by one script call (the hot path of every finished task). A non-terminal record
   * goes through one script that refuses to overwrite a terminal state.
   */
  async storeResult(record: TaskRecord): Promise<void> {
    if (isTerminalState(record.state)) {
      await this.#storeTerminal(record);
      return;
    }
    const key = this.resultKey(record.taskId);
    const json = encodeRecord(record);
    await this.#run("storeResult", (main) =>
      runScript(main, "chicoryStoreRecord", [key], [json, this.settings.resultTtlSeconds]),
    );
  }

  /**
   * Adds `record` to this turn's batch of terminal records; resolves once the batch is written.
   * A record over {@link PIECE_BYTES} is written on its own, in pieces: no record in a
   * batch is then longer than Redis takes in one argument (1 MiB at least), so none refuses a
   * batch.
   */
  #storeTerminal(record: TaskRecord): Promise<void> {
    const key = this.resultKey(record.taskId);
    const json = encodeRecord(record);
    if (isPieceSized(json)) return this.storeRecordInPieces(record, json, false).then(() => undefined);
    let batch = this.#terminal[this.#terminal.length - 1];
    if (!batch || batch.keys.length >= MAX_TERMINAL_BATCH || batch.chars + json.length > MAX_TERMINAL_BATCH_CHARS) {
      batch = this.#newTerminalBatch();
    }
    batch.keys.push(key);
    batch.jsons.push(json);
    batch.records.push(record);
    batch.chars += json.length;
    this.#terminalFlush.request();
    return batch.written;
  }

  /**
   * {@inheritDoc RedisRecordWriter.storeRecordInPieces}
   *
   * The pieces are {@link PIECE_BYTES} long: `SET` and `APPEND`s to a staging key of its
   * own (expiring within an hour if left behind: each `APPEND` is followed by an `EXPIRE`, so
   * a staging key that vanished meanwhile, evicted or lost in a restart, and is made again by
   * the next `APPEND` expires too), at most {@link PIECES_IN_FLIGHT} at a time, each under the
   * time limit of one operation; then `store-pieces.lua` renames it to the
   * record's key (with `unlessFinal`, only when that holds no terminal record; the staging key
   * is deleted otherwise, and when it is not whole), sets its TTL and announces it. A write
   * that fails deletes the staging key. No
   * argument is then longer than Redis's smallest `proto-max-bulk-len` and
   * `client-query-buffer-limit` (1 MiB), and a record over the server's `proto-max-bulk-len`
   * is refused by an `APPEND` ("string exceeds maximum allowed size") on a connection that stays
   * open. Sent in one argument, such a record would make Redis close the connection, before its
   * refusal can be read when the record is many times over the limit; the client sends it again
   * after each reconnect, and the connection stalls.
   */
  async storeRecordInPieces(record: TaskRecord, json: string, unlessFinal: boolean): Promise<boolean> {
    if (!isTerminalState(record.state)) throw new ValidationError(`not a terminal record: ${record.state}`);
    const key = this.resultKey(record.taskId);
    const bytes = Buffer.from(json, "utf8");
    const staging = `${this.#prefix}:pieces:${record.taskId}:${randomUUID()}`;
    const pieces = inPieces(bytes);
    const writePiece = (i: number) =>
      this.#run("storeResult", (main) =>
        i === 0
          ? main.call("SET", staging, pieces[0] as Buffer, "EX", STAGING_TTL_SECONDS)
          : Promise.all([
              main.call("APPEND", staging, pieces[i] as Buffer),
              main.call("EXPIRE", staging, STAGING_TTL_SECONDS),
            ]),
      );
    let next = 0;
    let failure: { error: unknown } | undefined;
    // A few pieces in flight at once, sent in order on the one connection (Redis appends them
    // in that order); the first failure stops the sending.
    const sender = async (): Promise<void> => {
      while (next < pieces.length && failure === undefined) {
        const i = next++;
        await writePiece(i).catch((error: unknown) => {
          failure ??= { error };
        });
      }
    };
    await Promise.all(Array.from({ length: Math.min(PIECES_IN_FLIGHT, pieces.length) }, sender));
    let written = false;
    if (failure === undefined) {
      try {
        const reply = await this.#run("storeResult", (main) =>
          runScript(
            main,
            "chicoryStorePieces",
            [staging, key],
            [this.settings.resultTtlSeconds, this.doneChannel, this.#idOffset, bytes.length, unlessFinal ? 1 : 0],
          ),
        );
        written = Number(reply) === 1;
      } catch (error) {
        failure = { error };
      }
    }
    if (failure !== undefined) {
      // best effort, not waited for (a Redis away would hold the failure for its whole outage;
      // the key expires anyway); sent after the pieces on the same connection, and a no-op
      // when the script ran and renamed the key
      this.#main?.call("DEL", staging).catch(() => undefined);
      throw failure.error;
    }
    if (written) this.recordsWritten([record]);
    return written;
  }

  #newTerminalBatch(): TerminalBatch {
    let resolve!: () => void;
    let reject!: (error: unknown) => void;
    const written = new Promise<void>((ok, fail) => {
      resolve = ok;
      reject = fail;
    });
    const batch: TerminalBatch = { keys: [], jsons: [], records: [], chars: 0, written, resolve, reject };
    this.#terminal.push(batch);
    return batch;
  }

  /** Writes the waiting batches, each with one script call (see {@link FlushScheduler}). */
  #flushTerminal(): void {
    const batches = this.#terminal;
    this.#terminal = [];
    for (const batch of batches) this.#writeTerminal(batch).then(batch.resolve, batch.reject);
  }

  async #writeTerminal({ keys, jsons, records }: Pick<TerminalBatch, "keys" | "jsons" | "records">): Promise<void> {
    const { args } = this.#storeResultsArgs(keys, jsons);
    await this.#run("storeResult", (main) =>
      runScript(main, "chicoryStoreResults", [String(keys.length), ...keys], args),
    );
    this.recordsWritten(records);
  }

  #storeResultsArgs(keys: string[], jsons: readonly string[]): StoreResultsCall {
    return {
      keys,
      args: [this.settings.resultTtlSeconds, this.doneChannel, this.#idOffset, INLINE_RECORD_MAX, ...jsons],
    };
  }

  /**
   * True when `client` reaches this backend's server, database and user: the Redis broker may
   * then write this backend's terminal records in its ack script (see {@link RedisRecordWriter}).
   */
  sharesServerWith(client: RedisClientLike): boolean {
    return this.#main !== undefined && sameRedisServer(this.#main, client);
  }

  /** {@inheritDoc RedisRecordWriter.encodeRecord} */
  encodeRecord(record: TaskRecord): string {
    return encodeRecord(record);
  }

  /** The `store-results.lua` call for terminal `records` (at most 500), for the broker's ack script. */
  storeResultsCall(records: readonly TaskRecord[], jsons?: readonly string[]): StoreResultsCall {
    for (const record of records) {
      if (!isTerminalState(record.state)) throw new ValidationError(`not a terminal record: ${record.state}`);
    }
    return this.#storeResultsArgs(
      records.map((r) => this.resultKey(r.taskId)),
      jsons ?? records.map((r) => encodeRecord(r)),
    );
  }

  /** {@inheritDoc RedisRecordWriter.storeRecords} */
  async storeRecords(records: readonly TaskRecord[]): Promise<void> {
    const { keys, args } = this.storeResultsCall(records);
    await this.#run("storeResult", (main) =>
      runScript(main, "chicoryStoreResults", [String(keys.length), ...keys], args),
    );
    this.recordsWritten(records);
  }

  /** {@inheritDoc RedisRecordWriter.storeRecordsUnlessFinal} */
  async storeRecordsUnlessFinal(records: readonly TaskRecord[]): Promise<TaskRecord[]> {
    const { keys, args } = this.storeResultsCall(records);
    const reply = await this.#run("storeResult", (main) =>
      runScript(main, "chicoryStoreResultsUnlessFinal", [String(keys.length), ...keys], args),
    );
    const written = records.filter((_, i) => Array.isArray(reply) && Number(reply[i]) === 1);
    this.recordsWritten(written);
    return written;
  }

  /** Terminal `records` were written (here or by the broker's ack script): wake local waiters. */
  recordsWritten(records: readonly TaskRecord[]): void {
    const hub = this.#hub;
    if (hub) for (const record of records) hub.notify(record);
  }

  /** {@inheritDoc Backend.getResult} */
  async getResult(taskId: string): Promise<TaskRecord | null> {
    const key = this.resultKey(taskId);
    let text: unknown;
    try {
      text = await this.#run("getResult", (main) => main.call("GET", key));
    } catch (error) {
      if (!isWrongType(error)) throw error;
      const type = await this.#run("getResult", (main) => main.call("TYPE", key));
      throw notARecordKey(key, String(type));
    }
    return decodeRecord(text as string | null, key, taskId);
  }

  /**
   * MGET answers nil for a key of another type than a string, as for a missing one: a wait on
   * it would never end. When any key MGET found nil exists (one EXISTS for them all, usually
   * 0), each existing one that is not a string maps to the error naming it (the keys' TYPEs
   * asked together).
   */
  async #findForeignKeys(main: RedisClientLike, ids: string[], out: Map<string, TaskRecord | Error>): Promise<void> {
    if (ids.length === 0) return;
    const keys = ids.map((id) => this.resultKey(id));
    const existing = Number(await main.call("EXISTS", ...keys));
    if (existing === 0) return;
    // Usually the keys that exist are records written since the MGET (a worker's STARTED while
    // jobs run): read again, in one MGET, they are strings, and no TYPE is asked (not one per
    // absent key of the batch on every poll). Only when fewer strings than existing keys come
    // back are the keys still nil asked their TYPE, sent together.
    // (a user refused MGET, or one of these keys: each asked its TYPE, as before)
    const again = (await (main.call("MGET", ...keys) as Promise<Array<string | null>>).catch((error: unknown) => {
      if (isNoPermError(error)) return keys.map(() => null);
      throw error;
    })) as Array<string | null>;
    const stillNil: number[] = [];
    let strings = 0;
    again.forEach((text, i) => {
      if (text === null) {
        stillNil.push(i);
        return;
      }
      strings++;
      try {
        const record = decodeRecord(text, keys[i] as string, ids[i] as string);
        if (record) out.set(ids[i] as string, record);
      } catch (error) {
        out.set(ids[i] as string, error as Error);
      }
    });
    if (strings >= existing || stillNil.length === 0) return;
    const types = await Promise.all(stillNil.map((i) => main.call("TYPE", keys[i] as string)));
    types.forEach((type, j) => {
      const i = stillNil[j] as number;
      // "string": written since the second MGET (its notification or the next poll brings it)
      if (type !== "none" && type !== "string")
        out.set(ids[i] as string, notARecordKey(keys[i] as string, String(type)));
    });
  }

  /**
   * The stored texts of `ids` (one MGET). A Redis user refused one of the keys (`NOPERM`: a key
   * outside its patterns) would wait out every timeout as if Redis were away, since no retry
   * can end that: the keys are then read one by one (GET; the refusal may be of MGET itself),
   * and each refused id maps to the error naming its key in `out` (its waiters reject with it
   * at once) and counts as found (`undefined`). A key of another type reads as nil, as in MGET.
   */
  async #readRecords(
    main: RedisClientLike,
    ids: string[],
    out: Map<string, TaskRecord | Error>,
  ): Promise<Array<string | null | undefined>> {
    const keys = ids.map((id) => this.resultKey(id));
    try {
      return (await main.call("MGET", ...keys)) as Array<string | null>;
    } catch (error) {
      if (!isNoPermError(error)) throw error;
      const reads = await Promise.allSettled(keys.map((key) => main.call("GET", key)));
      return reads.map((read, i) => {
        if (read.status === "fulfilled") return read.value as string | null;
        // (nil, as MGET answers it: #findForeignKeys then names the key's type)
        if (isWrongType(read.reason)) return null;
        if (!isNoPermError(read.reason)) throw read.reason;
        out.set(ids[i] as string, this.#refusedRead(keys[i] as string, read.reason));
        return undefined;
      });
    }
  }

  #refusedRead(key: string, error: unknown): BackendConnectionError {
    return new BackendConnectionError(
      `redis backend (${this.displayUrl}): this Redis user may not read the result at ${key}: ${this.#describe(error)}`,
      { cause: redactedCopy(error, this.#connection.password) },
    );
  }

  async #fetchMany(ids: string[]): Promise<Map<string, TaskRecord | Error>> {
    const out = new Map<string, TaskRecord | Error>();
    await this.#run(
      "waitForResult",
      async (main) => {
        for (let i = 0; i < ids.length; i += MGET_BATCH) {
          const batch = ids.slice(i, i + MGET_BATCH);
          const values = await this.#readRecords(main, batch, out);
          const absent: string[] = [];
          values.forEach((text, j) => {
            const id = batch[j] as string;
            if (text === undefined) return; // refused: mapped to its error
            if (text === null) absent.push(id);
            try {
              const record = decodeRecord(text, this.resultKey(id), id);
              if (record) out.set(id, record);
            } catch (error) {
              out.set(id, error as Error);
            }
          });
          await this.#findForeignKeys(main, absent, out);
        }
      },
      false,
    );
    return out;
  }

  /**
   * Deletes the record and announces the deletion (as {@link RedisBackend.deleteResultIf}
   * does): another process that kept the record for a wait to come drops it. The announcement
   * is best effort (a user without the channel's right: those processes keep it at most
   * 10 s).
   */
  async deleteResult(taskId: string): Promise<void> {
    this.#hub?.forget(taskId);
    await this.#run("deleteResult", (main) => {
      // one round trip: both sent in this turn, the DEL first (one connection keeps the order)
      const deleted = main.call("DEL", this.resultKey(taskId));
      const announced = main.call("PUBLISH", this.doneChannel, JSON.stringify([taskId])).catch(() => undefined);
      return Promise.all([deleted, announced]);
    });
  }

  /**
   * Both ends of the record (`state` comes first and `updatedAt` last, see encodeRecord): one
   * round trip of two `GETRANGE`s, whatever the record's size.
   * @throws ChicoryError naming the key when its ends are not those of a record
   */
  async getResultStamp(taskId: string): Promise<Pick<TaskRecord, "state" | "updatedAt"> | null> {
    const key = this.resultKey(taskId);
    const [head, tail] = await this.#run("getResultStamp", (main) =>
      Promise.all([main.call("GETRANGE", key, 0, 63), main.call("GETRANGE", key, -64, -1)]),
    );
    if (head === "" && tail === "") return null; // no key (GETRANGE reads a missing key as empty)
    const state = /^\{"state":"([A-Z_]+)",/.exec(String(head))?.[1];
    const updatedAt = /"updatedAt":"([^"\\]+)"\}$/.exec(String(tail))?.[1];
    const known = TASK_STATES.find((s) => s === state);
    if (known === undefined || updatedAt === undefined) {
      throw new ChicoryError(`the stored result at ${key} cannot be read: its ends are not those of a task record`);
    }
    return { state: known, updatedAt };
  }

  /**
   * Compare-and-delete in one script (`delete-record-if.lua`), which also announces the
   * deletion: a process that kept the old record for a wait to come drops it.
   */
  async deleteResultIf(taskId: string, seen: Pick<TaskRecord, "state" | "updatedAt">): Promise<boolean> {
    const head = `{"state":${JSON.stringify(seen.state)},`;
    const tail = `"updatedAt":${JSON.stringify(seen.updatedAt)}}`;
    const note = JSON.stringify([taskId]);
    const deleted = await this.#run("deleteResultIf", (main) =>
      runScript(main, "chicoryDeleteRecordIf", [this.resultKey(taskId)], [head, tail, this.doneChannel, note]),
    );
    if (deleted !== 1) return false;
    this.#hub?.forget(taskId);
    return true;
  }

  /** SET of the stats with the TTL, plus the Redis-clock time in the workers set (one round trip). */
  async storeHeartbeat(stats: WorkerStats, ttlSeconds: number): Promise<void> {
    const ttl = Math.max(1, Math.ceil(ttlSeconds));
    await this.#run("storeHeartbeat", (main) =>
      runScript(
        main,
        "chicoryTouchWorker",
        [this.#workersKey],
        [stats.workerId, this.#heartbeatKey(""), JSON.stringify(stats), ttl],
      ),
    );
  }

  /** {@inheritDoc Backend.getHeartbeat} */
  async getHeartbeat(workerId: string): Promise<WorkerStats | null> {
    const text = await this.#run("getHeartbeat", (main) => main.call("GET", this.#heartbeatKey(workerId)));
    return decodeHeartbeat(text as string | null);
  }

  /** Workers in the workers set whose heartbeat key has not expired. */
  async getActiveWorkers(): Promise<WorkerStats[]> {
    return this.#run("getActiveWorkers", async (main) => {
      const ids = (await main.call("ZRANGE", this.#workersKey, 0, -1)) as string[];
      // One GET per worker (auto-pipelined into one round trip; works across Cluster slots).
      const texts = await Promise.all(ids.map((id) => main.call("GET", this.#heartbeatKey(id))));
      return texts.map((t) => decodeHeartbeat(t as string | null)).filter((s): s is WorkerStats => s !== null);
    });
  }

  /** Removes workers whose last heartbeat (Redis clock) is older than `staleSeconds`. */
  async cleanupStaleClients(staleSeconds: number): Promise<number> {
    const idleMs = staleMs(staleSeconds);
    return this.#run("cleanupStaleClients", async (main) => {
      let removed = 0;
      for (;;) {
        const ids = (await runScript(
          main,
          "chicoryCleanupWorkers",
          [this.#workersKey],
          [idleMs, this.#heartbeatKey(""), CLEANUP_BATCH],
        )) as string[];
        removed += ids.length;
        if (ids.length < CLEANUP_BATCH) return removed;
      }
    });
  }

  /**
   * Checks that this Redis user may run the backend's scripts on its record, heartbeat and
   * worker-list keys (no-op script calls naming them; Redis's ACL check refuses with `NOPERM`).
   * A worker calls it at start.
   * @throws ConfigurationError when Redis refuses, or the server is a replica (see `refuseReplica`); any other
   *   failure is left to the calls that follow
   */
  async checkAccess(): Promise<void> {
    const main = this.#main;
    if (main === undefined) throw new BackendConnectionError("redis backend is not connected: call connect() first");
    const groups = [
      { keys: [this.resultKey("check")], what: "the result keys" },
      { keys: [this.#heartbeatKey("check")], what: "the heartbeat keys" },
      { keys: [this.#workersKey], what: `the worker list (${this.#workersKey})` },
    ];
    await refuseReplica(main, "redis backend", this.displayUrl);
    await checkRedisAccess(main, "redis backend", groups, `${this.#prefix}:*`, (error) => this.#describe(error));
  }

  /** PING round trip; never throws. */
  async healthcheck(): Promise<HealthStatus> {
    return pingRedis(this.#main, this.#connection.password);
  }

  /** Keeps the record of `taskId` if its notification arrives before a wait (see {@link RedisResultHub}). */
  expectResult(taskId: string): void {
    this.#hub?.expect(taskId);
  }

  /** Pub/sub notification with a shared batched poll fallback (see {@link RedisResultHub}). */
  waitForResult(taskId: string, options: WaitOptions = {}): Promise<TaskRecord | null> {
    const hub = this.#hub;
    if (!hub) return Promise.reject(new BackendConnectionError("redis backend is not connected: call connect() first"));
    return hub.wait(taskId, options);
  }
}

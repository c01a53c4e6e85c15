/**
 * The Backend interface: task states, results and worker heartbeats.
 *
 * Semantics every implementation follows (checked by `test/contract/backend-contract.ts`):
 * - State precedence: a terminal state (`SUCCESS`, `FAILURE`, `DEAD_LETTERED`) is never
 *   overwritten by a non-terminal one (`PENDING`, `STARTED`, `RETRY`); a terminal state may
 *   replace another terminal state (a duplicate run, or `FAILURE` then `DEAD_LETTERED`).
 *   Concurrent duplicate writes never fail.
 * - Records expire after the backend's result TTL; heartbeats after the TTL given per call,
 *   measured by the backend's clock where it has one.
 * - `waitForResult` does not poll tightly where the backend can notify; all waiters of one
 *   process share one subscription.
 * - Values are opaque JSON; the backend never interprets them.
 * @module
 */
import type { HealthStatus } from "../brokers/broker.js";
import type { JsonValue } from "../core/json.js";

/** Task states (SPEC §4). */
export type TaskState = "PENDING" | "STARTED" | "SUCCESS" | "FAILURE" | "RETRY" | "DEAD_LETTERED";

/** All task states. */
export const TASK_STATES: readonly TaskState[] = ["PENDING", "STARTED", "SUCCESS", "FAILURE", "RETRY", "DEAD_LETTERED"];

/** True for `SUCCESS`, `FAILURE` and `DEAD_LETTERED`. */
export function isTerminalState(state: TaskState): boolean {
  return state === "SUCCESS" || state === "FAILURE" || state === "DEAD_LETTERED";
}

/**
 * The task's terminal state in `backend`, or null when it has no record or one not terminal yet
 * (for a run whose message the broker lost: has a worker that took it over finished it?).
 */
export async function terminalStateOf(backend: Backend, taskId: string): Promise<TaskState | null> {
  const stamp = await resultStampOf(backend, taskId);
  return stamp !== null && isTerminalState(stamp.state) ? stamp.state : null;
}

/**
 * `backend`, connected: itself when it is (no promise, no extra turn), else once its connect
 * resolves (joining a connect under way). A backend that says nothing of its state is taken as
 * connected.
 */
export function connectedBackend(backend: Backend): Backend | Promise<Backend> {
  return (backend.isReady ?? backend.isOpen) === false ? backend.connect().then(() => backend) : backend;
}

/**
 * The `state` and `updatedAt` of a task's record (what {@link Backend.deleteResultIf} compares),
 * or null when it has none: read without the result where the backend can
 * ({@link Backend.getResultStamp}).
 */
export async function resultStampOf(
  backend: Backend,
  taskId: string,
): Promise<Pick<TaskRecord, "state" | "updatedAt"> | null> {
  const stamp = backend.getResultStamp ? await backend.getResultStamp(taskId) : await backend.getResult(taskId);
  return stamp === null ? null : { state: stamp.state, updatedAt: stamp.updatedAt };
}

/** Whether a write of `next` may replace a stored `current` (state precedence). */
export function mayOverwrite(current: TaskState | undefined, next: TaskState): boolean {
  return current === undefined || !isTerminalState(current) || isTerminalState(next);
}

/** A task's remote error as stored. */
export interface StoredError {
  /** The error's `name` (or constructor name). */
  readonly type: string;
  /** The error's message. */
  readonly message: string;
  /** The error's stack, when known. */
  readonly stack?: string | undefined;
  /**
   * The error's own `code`, when it had a string or number one (`"ECONNREFUSED"`,
   * `"ERR_INVALID_ARG_TYPE"`, a driver's code), as a string.
   */
  readonly code?: string | undefined;
}

/** What a backend stores for one task. */
export interface TaskRecord {
  /** Task id. */
  readonly taskId: string;
  /** Current state. */
  readonly state: TaskState;
  /** Return value (`SUCCESS`), absent when `ignoreResult` or not finished. */
  readonly result?: JsonValue | undefined;
  /** Error (`FAILURE`, `DEAD_LETTERED`, `RETRY`). */
  readonly error?: StoredError | undefined;
  /** Retries done so far. */
  readonly retries?: number | undefined;
  /** Task name, when known. */
  readonly taskName?: string | undefined;
  /** When the state was written (ISO). */
  readonly updatedAt: string;
}

/** Statistics a worker publishes with each heartbeat (SPEC §6). */
export interface WorkerStats {
  /** `${hostname}-${pid}-${8 hex}`. */
  readonly workerId: string;
  /** Host name of the worker's machine (`os.hostname()`). */
  readonly hostname: string;
  /** Process id of the worker's process. */
  readonly pid: number;
  /** Queues served (comma-joined when several). */
  readonly queue: string;
  /** Most tasks the worker runs at once (its `concurrency` setting). */
  readonly concurrency: number;
  /** Runs ended since the worker started, retried ones included (a run aborted back to the queue is not counted). */
  readonly tasksProcessed: number;
  /** Runs among `tasksProcessed` that ended as failures, rejected messages included (a run to be retried is not counted). */
  readonly tasksFailed: number;
  /** Tasks running now. */
  readonly activeTasks: number;
  /** ISO time the worker started. */
  readonly startedAt: string;
  /** ISO time of the last heartbeat, or null before the first. */
  readonly lastHeartbeat: string | null;
  /** Whether the worker is running (false once it starts stopping, so in its final heartbeat). */
  readonly isRunning: boolean;
  /** Whole seconds since the worker started (rounded; 0 before it started). */
  readonly uptimeSeconds: number;
}

/** Options of {@link Backend.waitForResult}. */
export interface WaitOptions {
  /** Give up after this many milliseconds (undefined: wait until `signal` aborts). */
  readonly timeoutMs?: number | undefined;
  /** Poll interval of the fallback poll, in milliseconds. */
  readonly pollIntervalMs?: number | undefined;
  /** Aborts the wait. */
  readonly signal?: AbortSignal | undefined;
}

/** The largest result a backend's server takes, as read from that server (see {@link Backend.resultSizeLimit}). */
export interface ResultSizeLimit {
  /** Largest result, in UTF-8 bytes of its JSON (plus one per quote and backslash with `quotesEscaped`). */
  readonly bytes: number;
  /** Where the limit comes from, for error messages (e.g. "the Redis server's proto-max-bulk-len, 1048576 bytes"). */
  readonly source: string;
  /**
   * The server receives the JSON with each `'`, `"` and `\` escaped (one byte more each, as the
   * MySQL driver sends it): the size compared with `bytes` counts them twice.
   */
  readonly quotesEscaped?: boolean;
}

/** A result backend (SPEC §7). */
export interface Backend {
  /** Short kind name (`"memory"`, `"redis"`, `"postgres"`...). */
  readonly kind: string;
  /** Display form of the connection URL with the password masked. */
  readonly displayUrl: string;
  /**
   * The settings beside the URL that decide which records this backend reaches (e.g. a key or
   * table prefix), as the worker's banner shows them. Absent when the URL says it all.
   */
  readonly displaySettings?: string | undefined;
  /**
   * Why this backend cannot store records under `taskId` although the id is valid (its stored
   * form is longer than its key column takes: PostgreSQL stores a backslash as two), or
   * undefined when it can. `delay()` refuses a caller-chosen id it names; a worker rejects a
   * message of such an id without a record, rather than fail to store its outcome for ever.
   */
  taskIdProblem?(taskId: string): string | undefined;
  /**
   * False when the records live in this process only (the memory backend, SQLite `:memory:`):
   * no other process can read them. Absent: other processes share them.
   */
  readonly multiProcess?: boolean;
  /**
   * Opens connections (and creates schema where needed); idempotent. Called while a
   * `disconnect()` is under way, opens once that is done. May reject when a `disconnect()`
   * made after the call overtakes it (the Redis and SQL backends do).
   */
  connect(): Promise<void>;
  /**
   * Closes connections the backend owns; idempotent. May come while a `connect()` runs
   * (`app.disconnect()` calls it then): the backend ends that connect (which then rejects) or
   * lets it finish first, and closes what it opened.
   */
  disconnect(): Promise<void>;
  /**
   * True from a `connect()` call (while it runs, too) until `disconnect()`. Optional: code
   * that opens a backend for one operation and closes it after (a DLQ replay by an app that
   * did not connect) leaves a backend it reads as open to whoever opened it.
   */
  readonly isOpen?: boolean;
  /**
   * True once a `connect()` has resolved, until `disconnect()` (false while connecting).
   * Optional: an `AsyncResult` built from an id connects a backend that is not ready (or waits
   * for the connect under way) before its first call.
   */
  readonly isReady?: boolean;
  /**
   * Checks, once the backend is connected, that its server lets this user write records and
   * heartbeats (e.g. Redis ACL rights). A worker calls it at start and does not start when it
   * throws.
   * @throws ConfigurationError when the server refuses access; other failures are not thrown
   */
  checkAccess?(): Promise<void>;
  /**
   * The largest result the backend's server takes in a record, read from the server (Redis's
   * `proto-max-bulk-len`, MySQL's `max_allowed_packet`) when called: a worker asks once as it
   * starts, on the connected backend, and fails a larger result at once, as one over
   * `maxResultBytes`, rather than send a record the server refuses. Undefined when the server
   * has no such limit or it could not be read. Optional; never rejects.
   */
  resultSizeLimit?(): Promise<ResultSizeLimit | undefined>;
  /** Writes a state (with precedence, see module doc). `error` for `RETRY`. */
  setState(
    taskId: string,
    state: TaskState,
    extra?: { error?: StoredError; retries?: number; taskName?: string },
  ): Promise<void>;
  /** Writes a record (terminal or not, with precedence) and notifies waiters when terminal. */
  storeResult(record: TaskRecord): Promise<void>;
  /** The stored record, or null when unknown or expired. */
  getResult(taskId: string): Promise<TaskRecord | null>;
  /** Deletes the stored record (`AsyncResult.forget`). */
  deleteResult(taskId: string): Promise<void>;
  /**
   * Optional: deletes the stored record only while it is still the one `seen` (same `state`
   * and `updatedAt`), atomically; returns whether it deleted. A DLQ replay uses it to clear the
   * failure of the run it replays without touching a record a newer run wrote meanwhile.
   */
  deleteResultIf?(taskId: string, seen: Pick<TaskRecord, "state" | "updatedAt">): Promise<boolean>;
  /**
   * The `state` and `updatedAt` of a task's record, or null when there is none: what
   * {@link Backend.deleteResultIf} compares, read without the record's result (which may be
   * large). Backends without it are read with `getResult`.
   */
  getResultStamp?(taskId: string): Promise<Pick<TaskRecord, "state" | "updatedAt"> | null>;
  /** Stores a worker's heartbeat, expiring after `ttlSeconds`. */
  storeHeartbeat(stats: WorkerStats, ttlSeconds: number): Promise<void>;
  /** A worker's last heartbeat, or null when expired/unknown. */
  getHeartbeat(workerId: string): Promise<WorkerStats | null>;
  /** Heartbeats that have not expired. */
  getActiveWorkers(): Promise<WorkerStats[]>;
  /** Removes worker records whose last heartbeat is older than `staleSeconds`; returns how many. */
  cleanupStaleClients(staleSeconds: number): Promise<number>;
  /** Round trip to the backend. Never throws. */
  healthcheck(): Promise<HealthStatus>;
  /**
   * Resolves with the record once it is terminal, or null when `timeoutMs` passes or
   * `signal` aborts first.
   */
  waitForResult(taskId: string, options?: WaitOptions): Promise<TaskRecord | null>;
  /**
   * Optional: when (`performance.now()`) the backend last found that its server changed under
   * it (a restart or a failover: Redis's `run_id`), or undefined when it never did. A `get()`
   * that times out says so when that happened after its `AsyncResult` was made: a server that
   * keeps nothing across restarts lost the jobs it held.
   */
  readonly serverChangedAt?: number | undefined;
  /**
   * Optional: called by `delay()` just before it publishes a new task (not for a caller-chosen
   * id, which may name an existing job). A backend with push
   * notifications may then keep that task's record when it arrives before anyone waits
   * (the task finished before `get()` was called), so the wait needs no read.
   */
  expectResult?(taskId: string): void;
}

/**
 * The in-process result backend, for tests and single-process apps. Records and heartbeats
 * live in this process's memory and expire lazily (checked on read, swept now and then);
 * waiters are resolved at once by local writes (see {@link ResultWaiter}). There is no
 * connection: every method works before `connect` and after `disconnect` (which only
 * resolves pending waiters with null); `healthcheck` reports the connect/disconnect state.
 * @module
 */

import type { HealthStatus } from "../brokers/broker.js";
import { staleMs } from "../core/duration.js";
import type { Backend, StoredError, TaskRecord, TaskState, WaitOptions, WorkerStats } from "./backend.js";
import { isTerminalState, mayOverwrite } from "./backend.js";
import { ResultWaiter } from "./result-waiter.js";

/** Options of {@link MemoryBackend}. */
export interface MemoryBackendOptions {
  /** Seconds a task record is kept (default 86400). */
  resultTtlSeconds?: number;
  /** Interval of the fallback poll of waiters, in seconds (default 0.5). */
  pollIntervalSeconds?: number;
}

interface Expiring<T> {
  readonly value: T;
  readonly expiresAt: number;
}

/** Writes between two sweeps of expired records. */
const SWEEP_EVERY = 1000;

/** Deep copy of plain JSON data, so callers never share objects with the store. */
function copy<T>(value: T): T {
  return value === undefined ? value : (JSON.parse(JSON.stringify(value)) as T);
}

/**
 * A backend held in this process's memory.
 * @example
 * ```ts
 * const app = new Chicory({ broker: new MemoryBroker(), backend: new MemoryBackend() });
 * ```
 */
export class MemoryBackend implements Backend {
  /** Always `"memory"`. */
  readonly kind = "memory";
  /** Always `"memory://"`. */
  readonly displayUrl = "memory://";
  /** Always false: the records live in this process. */
  readonly multiProcess = false;
  /** Record lifetime in milliseconds. */
  readonly #resultTtlMs: number;
  readonly #pollIntervalMs: number;
  readonly #records = new Map<string, Expiring<TaskRecord>>();
  readonly #heartbeats = new Map<string, Expiring<WorkerStats>>();
  #waiter: ResultWaiter | undefined;
  #isConnected = false;
  #writes = 0;

  constructor(options: MemoryBackendOptions = {}) {
    this.#resultTtlMs = Math.max(1, options.resultTtlSeconds ?? 86_400) * 1000;
    this.#pollIntervalMs = Math.max(10, (options.pollIntervalSeconds ?? 0.5) * 1000);
  }

  /** {@inheritDoc Backend.isOpen} */
  get isOpen(): boolean {
    return this.#isConnected;
  }

  /** {@inheritDoc Backend.isReady} */
  get isReady(): boolean {
    return this.#isConnected;
  }

  /** Marks the backend connected; idempotent. */
  async connect(): Promise<void> {
    this.#isConnected = true;
  }

  /** Resolves pending waiters with null; data stays in memory. Idempotent. */
  async disconnect(): Promise<void> {
    this.#isConnected = false;
    this.#waiter?.close();
    this.#waiter = undefined;
  }

  /** The shared waiter, created on first use (again after a disconnect). */
  #waiterOrNew(): ResultWaiter {
    this.#waiter ??= new ResultWaiter({
      fetchMany: async (ids) => {
        const out = new Map<string, TaskRecord>();
        for (const id of ids) {
          const record = this.#read(id);
          if (record) out.set(id, record);
        }
        return out;
      },
      pollIntervalMs: this.#pollIntervalMs,
    });
    return this.#waiter;
  }

  /** {@inheritDoc Backend.setState} */
  async setState(
    taskId: string,
    state: TaskState,
    extra: { error?: StoredError; retries?: number; taskName?: string } = {},
  ): Promise<void> {
    const current = this.#read(taskId);
    const keepsError = state === "RETRY" || state === "FAILURE" || state === "DEAD_LETTERED";
    this.#write({
      taskId,
      state,
      result: isTerminalState(state) ? current?.result : undefined,
      error: extra.error ?? (keepsError ? current?.error : undefined),
      retries: extra.retries ?? current?.retries,
      taskName: extra.taskName ?? current?.taskName,
      updatedAt: new Date().toISOString(),
    });
  }

  /** {@inheritDoc Backend.storeResult} */
  async storeResult(record: TaskRecord): Promise<void> {
    this.#write(record);
  }

  /** {@inheritDoc Backend.getResult} */
  async getResult(taskId: string): Promise<TaskRecord | null> {
    return this.#read(taskId) ?? null;
  }

  /** {@inheritDoc Backend.deleteResult} */
  async deleteResult(taskId: string): Promise<void> {
    this.#records.delete(taskId);
  }

  /** {@inheritDoc Backend.deleteResultIf} */
  async deleteResultIf(taskId: string, seen: Pick<TaskRecord, "state" | "updatedAt">): Promise<boolean> {
    const current = this.#read(taskId);
    if (current?.state !== seen.state || current.updatedAt !== seen.updatedAt) return false;
    this.#records.delete(taskId);
    return true;
  }

  /** {@inheritDoc Backend.storeHeartbeat} */
  async storeHeartbeat(stats: WorkerStats, ttlSeconds: number): Promise<void> {
    const value = copy({ ...stats, lastHeartbeat: stats.lastHeartbeat ?? new Date().toISOString() });
    this.#heartbeats.set(stats.workerId, { value, expiresAt: Date.now() + ttlSeconds * 1000 });
  }

  /** {@inheritDoc Backend.getHeartbeat} */
  async getHeartbeat(workerId: string): Promise<WorkerStats | null> {
    const entry = this.#heartbeats.get(workerId);
    if (!entry) return null;
    if (entry.expiresAt <= Date.now()) {
      this.#heartbeats.delete(workerId);
      return null;
    }
    return copy(entry.value);
  }

  /** {@inheritDoc Backend.getActiveWorkers} */
  async getActiveWorkers(): Promise<WorkerStats[]> {
    const now = Date.now();
    const out: WorkerStats[] = [];
    for (const [workerId, entry] of this.#heartbeats) {
      if (entry.expiresAt <= now) this.#heartbeats.delete(workerId);
      else out.push(copy(entry.value));
    }
    return out;
  }

  /** {@inheritDoc Backend.cleanupStaleClients} */
  async cleanupStaleClients(staleSeconds: number): Promise<number> {
    const cutoff = Date.now() - staleMs(staleSeconds);
    let removed = 0;
    for (const [workerId, entry] of this.#heartbeats) {
      const last = Date.parse(entry.value.lastHeartbeat ?? "");
      if (entry.expiresAt <= Date.now() || Number.isNaN(last) || last < cutoff) {
        this.#heartbeats.delete(workerId);
        removed++;
      }
    }
    return removed;
  }

  /** {@inheritDoc Backend.healthcheck} */
  async healthcheck(): Promise<HealthStatus> {
    return this.#isConnected
      ? { connected: true, latencyMs: 0 }
      : { connected: false, error: "memory backend is not connected" };
  }

  /** {@inheritDoc Backend.waitForResult} */
  async waitForResult(taskId: string, options: WaitOptions = {}): Promise<TaskRecord | null> {
    const record = this.#read(taskId);
    if (record && isTerminalState(record.state)) return record;
    return this.#waiterOrNew().wait(taskId, options);
  }

  #read(taskId: string): TaskRecord | undefined {
    const entry = this.#records.get(taskId);
    if (!entry) return undefined;
    if (entry.expiresAt <= Date.now()) {
      this.#records.delete(taskId);
      return undefined;
    }
    return copy(entry.value);
  }

  /** Writes with state precedence and wakes waiters of a terminal record. */
  #write(record: TaskRecord): void {
    const current = this.#read(record.taskId);
    if (!mayOverwrite(current?.state, record.state)) return;
    const value = copy(record);
    this.#records.set(record.taskId, { value, expiresAt: Date.now() + this.#resultTtlMs });
    if (++this.#writes % SWEEP_EVERY === 0) this.#sweep();
    if (isTerminalState(value.state)) this.#waiter?.notify(copy(value));
  }

  #sweep(): void {
    const now = Date.now();
    for (const [taskId, entry] of this.#records) if (entry.expiresAt <= now) this.#records.delete(taskId);
    for (const [workerId, entry] of this.#heartbeats) if (entry.expiresAt <= now) this.#heartbeats.delete(workerId);
  }
}

/**
 * One job handed out by the SQLite broker. It settles itself through its consumer; the first
 * settlement that succeeds takes effect and later calls are no-ops. A settlement that throws
 * (database unreachable) leaves the delivery unsettled, so it can be tried again.
 * @module
 */
import { BrokerConnectionError } from "../../errors.js";
import type { AckOptions, Delivery, LeaseState, ReleaseOptions } from "../broker.js";
import { LeaseLostListener } from "../lease-lost.js";
import type { ClaimedJob } from "./sqlite-store.js";

/** What a delivery asks its consumer to do. */
export type SqliteSettleAction =
  | { readonly kind: "ack" }
  | { readonly kind: "retry"; readonly body: string; readonly delayMs: number }
  | { readonly kind: "deadLetter"; readonly error: string }
  | { readonly kind: "release"; readonly countDelivery: boolean };

/** A {@link Delivery} backed by one leased `chicory_jobs` row. */
export class SqliteDelivery implements Delivery {
  readonly queue: string;
  readonly deliveryId: string;
  readonly body: string;
  readonly deliveryCount: number;
  /** Applies the action; false when it was fenced (lease lost, nothing changed). */
  readonly #settle: (action: SqliteSettleAction) => boolean;
  #isSettled = false;
  readonly #leaseLost = new LeaseLostListener();

  /** True while the lease is held (a query of the row). */
  readonly #holds: () => boolean;

  constructor(job: ClaimedJob, settle: (action: SqliteSettleAction) => boolean, holds: () => boolean) {
    this.queue = job.queue;
    this.deliveryId = String(job.id);
    this.body = job.body;
    this.deliveryCount = job.delivery_count;
    this.#settle = settle;
    this.#holds = holds;
  }

  /** {@inheritDoc Delivery.messageKey} (the row id: a retry or a replay is a new row) */
  get messageKey(): string {
    return this.deliveryId;
  }

  /** {@inheritDoc Delivery.holdsLease} */
  async holdsLease(): Promise<boolean> {
    return this.#holds();
  }

  /** {@inheritDoc Delivery.onLeaseLost} */
  onLeaseLost(listener: (reason: Exclude<LeaseState, "held">) => void): void {
    this.#leaseLost.set(listener);
  }

  /** Called by the consumer when a lease renewal found the job taken over. */
  leaseLost(): void {
    this.#leaseLost.fire(this.#isSettled);
  }

  async ack(options?: AckOptions): Promise<void> {
    const isApplied = this.#run({ kind: "ack" });
    if (options?.confirm && !isApplied) {
      throw new BrokerConnectionError(
        `sqlite broker: ack of delivery ${this.deliveryId} not applied: its lease expired and another worker took the job`,
      );
    }
  }

  async retry(body: string, delayMs: number): Promise<void> {
    this.#run({ kind: "retry", body, delayMs });
  }

  async deadLetter(error: string): Promise<void> {
    this.#run({ kind: "deadLetter", error });
  }

  async release(options?: ReleaseOptions): Promise<void> {
    this.#run({ kind: "release", countDelivery: options?.countDelivery === true });
  }

  /** False when this call was fenced; true when applied or already settled before. */
  #run(action: SqliteSettleAction): boolean {
    if (this.#isSettled) return true;
    const isApplied = this.#settle(action);
    this.#isSettled = true;
    return isApplied;
  }
}

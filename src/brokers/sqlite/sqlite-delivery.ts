/**
 * One job handed out by the SQLite broker. It settles itself through its consumer; the first
 * settlement that succeeds takes effect and later calls are no-ops. A settlement that throws
 * (database unreachable) leaves the delivery unsettled, so it can be tried again.
 * @module
 */
import type { Delivery } from "../broker.js";
import type { ClaimedJob } from "./sqlite-store.js";

/** What a delivery asks its consumer to do. */
export type SqliteSettleAction =
  | { readonly kind: "ack" }
  | { readonly kind: "retry"; readonly body: string; readonly delayMs: number }
  | { readonly kind: "deadLetter"; readonly error: string }
  | { readonly kind: "release" };

/** A {@link Delivery} backed by one leased `chicory_jobs` row. */
export class SqliteDelivery implements Delivery {
  readonly queue: string;
  readonly deliveryId: string;
  readonly body: string;
  readonly deliveryCount: number;
  readonly #settle: (action: SqliteSettleAction) => void;
  #isSettled = false;

  constructor(job: ClaimedJob, settle: (action: SqliteSettleAction) => void) {
    this.queue = job.queue;
    this.deliveryId = String(job.id);
    this.body = job.body;
    this.deliveryCount = job.delivery_count;
    this.#settle = settle;
  }

  async ack(): Promise<void> {
    this.#run({ kind: "ack" });
  }

  async retry(body: string, delayMs: number): Promise<void> {
    this.#run({ kind: "retry", body, delayMs });
  }

  async deadLetter(error: string): Promise<void> {
    this.#run({ kind: "deadLetter", error });
  }

  async release(): Promise<void> {
    this.#run({ kind: "release" });
  }

  #run(action: SqliteSettleAction): void {
    if (this.#isSettled) return;
    this.#settle(action);
    this.#isSettled = true;
  }
}

/**
 * What happens after an attempt ends: ONE pure table from
 * (outcome, delivery mode, DLQ on/off) to an ordered list of actions. The runner decides the
 * outcome (including whether a retry is allowed by the policy and budget); the worker carries
 * the actions out in order and stops at the first that fails.
 *
 * Rules encoded here:
 * - `at_least_once`: the outcome is stored BEFORE the message is acknowledged, retried or
 *   dead-lettered, so a crash in between re-runs the task instead of losing its result.
 * - `at_most_once`: the message was acknowledged before the run, so nothing here acks it again;
 *   retries are published as new messages and dead letters are written directly (before their
 *   DEAD_LETTERED record: one that cannot be written ends the job `FAILURE`).
 * - Messages with no usable task id (undecodable) get no stored state.
 * - When the broker writes the backend's records in its settle calls (`acksCarryRecords`), a
 *   final record and the ack after it are one `storeAndAck`, and a DEAD_LETTERED record and
 *   the DLQ move after it one `storeAndDeadLetter`: stored in the same atomic call, and only
 *   when the broker carries out the ack or the move. An acknowledged message's dead letter
 *   and its DEAD_LETTERED record are one `storeAndWriteDeadLetter`, written together.
 * @module
 */
import type { StoredError, TaskState } from "../backends/backend.js";
import type { DeliveryMode } from "../config.js";

/** How an attempt (or the attempt to start one) ended. */
export type Outcome =
  /** The handler returned a value. */
  | { readonly kind: "success"; readonly value: unknown }
  /** It failed and will be retried after `delayMs`. */
  | { readonly kind: "retry"; readonly error: StoredError; readonly delayMs: number }
  /** It failed for good (non-retryable, validation, budget spent, unknown task). */
  | { readonly kind: "failure"; readonly error: StoredError }
  /**
   * The message could not be decoded or verified, or is poison; `taskId` when known, and
   * `taskName` for a message that was not decoded (too large) but whose id was read.
   */
  | {
      readonly kind: "rejected";
      readonly error: StoredError;
      readonly taskId: string | null;
      readonly taskName?: string | null;
    }
  /** Shutdown aborted a running attempt before it ended. */
  | { readonly kind: "aborted"; readonly error: StoredError }
  /**
   * Not run: a message delivered again to the worker whose earlier run of it succeeded (its
   * lease was lost meanwhile, e.g. to an event loop blocked by the task, or its ack was lost):
   * `value` is that run's, stored as the task's `SUCCESS` unless the task has one already
   * (another run's `FAILURE` or `DEAD_LETTERED`, written by a run that could not settle the
   * message, is replaced: this message's job succeeded), and the message acknowledged.
   */
  | { readonly kind: "done"; readonly value: unknown };

/** The record a `store` (or `storeAndAck`) writes: its state and which parts of the outcome. */
interface StoreSpec {
  readonly state: TaskState;
  readonly withValue: boolean;
  readonly withError: boolean;
  /**
   * The record only informs (`RETRY`: a retry is coming): tried once, and when it cannot be
   * written the next step goes on. Holding the retry back for it would run the job again
   * instead (a full Redis refuses the record, not the retry).
   */
  readonly informative?: boolean;
}

/** One step the worker carries out. */
export type Action =
  | ({ readonly type: "store" } & StoreSpec)
  | { readonly type: "ack" }
  /** Store the (terminal) record and ack, in one broker call (`SettleMode.acksCarryRecords`). */
  | ({ readonly type: "storeAndAck" } & StoreSpec)
  /** Replace the delivery by the next attempt (atomic ack + delayed publish). */
  | { readonly type: "retry" }
  /** Publish the next attempt as a new message (the delivery is already acknowledged). */
  | { readonly type: "republish" }
  /** Move the delivery to the DLQ. */
  | { readonly type: "deadLetter" }
  /** Store the DEAD_LETTERED record and move to the DLQ, in one broker call (`acksCarryRecords`). */
  | ({ readonly type: "storeAndDeadLetter" } & StoreSpec)
  /** Write the (already acknowledged) message to the DLQ. */
  | { readonly type: "writeDeadLetter" }
  /**
   * Write the (already acknowledged) message to the DLQ and its DEAD_LETTERED record, in one
   * broker call (`acksCarryRecords`).
   */
  | ({ readonly type: "storeAndWriteDeadLetter" } & StoreSpec)
  /**
   * Give the message back for another worker (a run the shutdown aborted); its task's `STARTED`
   * record, now untrue, is deleted.
   */
  | { readonly type: "release" };

/** Inputs of {@link settle} besides the outcome. */
export interface SettleMode {
  readonly deliveryMode: DeliveryMode;
  readonly useDeadLetterQueue: boolean;
  /** The message was acknowledged before the attempt (at_most_once did ack). */
  readonly alreadyAcked: boolean;
  /**
   * The broker writes the backend's terminal records in its ack and dead-letter calls
   * (`Broker.attachResults`): a store followed by an ack becomes one `storeAndAck`, a store
   * followed by a DLQ move one `storeAndDeadLetter`.
   */
  readonly acksCarryRecords?: boolean;
}

const store = (state: TaskState, withValue = false, withError = false, informative = false): Action => ({
  type: "store",
  state,
  withValue,
  withError,
  ...(informative ? { informative } : {}),
});

// The plans are constants (a worker settles every job with one of them): never mutated.
const ACK: Action = { type: "ack" };
const SUCCESS = store("SUCCESS", true);
const RETRY_RECORD = store("RETRY", false, true, true);
const DEAD_RECORD = store("DEAD_LETTERED", false, true);
const FAILURE_RECORD = store("FAILURE", false, true);
const PLANS = {
  successAcked: [SUCCESS],
  success: [SUCCESS, ACK],
  retryAcked: [RETRY_RECORD, { type: "republish" }],
  retry: [RETRY_RECORD, { type: "retry" }],
  // written first: a dead letter that cannot be written (a full DLQ) leaves a FAILURE record
  // instead of a DEAD_LETTERED one that says the message is in the DLQ
  deadAcked: [{ type: "writeDeadLetter" }, DEAD_RECORD],
  dead: [DEAD_RECORD, { type: "deadLetter" }],
  failureAcked: [FAILURE_RECORD],
  failure: [FAILURE_RECORD, ACK],
  release: [{ type: "release" }],
  // a message done earlier in this worker: its SUCCESS and a plain ack (the executor drops the
  // record when a SUCCESS is there; not one storeAndAck, whose record the broker would write)
  done: [SUCCESS, ACK],
  // messages without a usable task id (no record)
  writeDeadLetter: [{ type: "writeDeadLetter" }],
  deadLetter: [{ type: "deadLetter" }],
  ack: [ACK],
  nothing: [],
} as const satisfies Record<string, readonly Action[]>;

/**
 * The store-then-settle plans as one call (see {@link SettleMode.acksCarryRecords}): a store
 * followed by an ack is always a final record (SUCCESS or FAILURE) and the end; a store
 * followed by a DLQ move, or a dead letter written followed by its record, is the
 * DEAD_LETTERED record and the end.
 */
const STORED_WITH_ACK = new Map<readonly Action[], readonly Action[]>([
  [PLANS.success, [{ type: "storeAndAck", state: "SUCCESS", withValue: true, withError: false }]],
  [PLANS.failure, [{ type: "storeAndAck", state: "FAILURE", withValue: false, withError: true }]],
  [PLANS.dead, [{ type: "storeAndDeadLetter", state: "DEAD_LETTERED", withValue: false, withError: true }]],
  [PLANS.deadAcked, [{ type: "storeAndWriteDeadLetter", state: "DEAD_LETTERED", withValue: false, withError: true }]],
]);

/** The actions for an outcome, in the order they must run. */
export function settle(outcome: Outcome, mode: SettleMode): readonly Action[] {
  const actions = plan(outcome, mode);
  return (mode.acksCarryRecords && STORED_WITH_ACK.get(actions)) || actions;
}

function plan(outcome: Outcome, mode: SettleMode): readonly Action[] {
  const acked = mode.alreadyAcked;
  switch (outcome.kind) {
    case "success":
      return acked ? PLANS.successAcked : PLANS.success;
    case "retry":
      return acked ? PLANS.retryAcked : PLANS.retry;
    case "failure":
      if (mode.useDeadLetterQueue) return acked ? PLANS.deadAcked : PLANS.dead;
      return acked ? PLANS.failureAcked : PLANS.failure;
    case "rejected":
      // With a task id, a rejected message is settled as a final failure is.
      if (outcome.taskId !== null) {
        if (mode.useDeadLetterQueue) return acked ? PLANS.deadAcked : PLANS.dead;
        return acked ? PLANS.failureAcked : PLANS.failure;
      }
      if (mode.useDeadLetterQueue) return acked ? PLANS.writeDeadLetter : PLANS.deadLetter;
      return acked ? PLANS.nothing : PLANS.ack;
    case "aborted":
      if (acked) return PLANS.failureAcked;
      return PLANS.release;
    case "done":
      return acked ? PLANS.nothing : PLANS.done;
  }
}

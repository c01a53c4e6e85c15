/**
 * The log lines of an outcome stored while its delivery's lease was no longer held: by the
 * executor's two-call path (store, then ack) and by the Redis settler (records sent with a
 * fenced ack, records written in pieces). One text each, so an operator searching the logs
 * finds both.
 * @module
 */
import type { TaskState } from "../backends/backend.js";

/**
 * Whether a run whose lease another consumer took stores a record in `state` (unless the task
 * has a final record already): a `SUCCESS` only. The job did succeed, and a delivery of it
 * again finds the record and is acknowledged without running (a task that blocks the event
 * loop past its lease then runs twice, not until it is poison); any other outcome is left to
 * the new owner, whose run may still succeed.
 */
export function storesWhenTaken(state: TaskState): boolean {
  return state === "SUCCESS";
}

/** Another consumer holds the job now: this run's outcome is not stored. */
export const OUTCOME_LEFT_TO_NEW_OWNER =
  "lease lost before the outcome was stored: another worker holds the job now; its outcome is left to that worker";

/** Another consumer holds the job now, this run succeeded, and no final record is there: stored. */
export const OUTCOME_SUCCESS_STORED_TAKEN =
  "lease lost before the outcome was stored: another worker holds the job now and may run it again; this run succeeded and the task had no final record, so its SUCCESS is stored (a delivery of the job after it is acknowledged without running)";

/** The broker lost the message and no final record is there: this run's outcome is stored. */
export const OUTCOME_STORED_OWNERLESS =
  "the broker no longer holds this job's message (lost in a broker restart, or finished by a worker that took it over): its outcome is stored, as nobody will run it again";

/** The broker lost the message and a final record is there: this run's outcome is not stored. */
export const OUTCOME_FINAL_THERE =
  "the broker no longer holds this job's message and the task already has a final record (a worker that took the job over finished it): this run's outcome is not stored";

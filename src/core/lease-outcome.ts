/**
 * The log lines of an outcome stored while its delivery's lease was no longer held: by the
 * executor's two-call path (store, then ack) and by the Redis settler for records written in
 * pieces. One text each, so an operator searching the logs finds both.
 * @module
 */

/** Another consumer holds the job now: this run's outcome is not stored. */
export const OUTCOME_LEFT_TO_NEW_OWNER =
  "lease lost before the outcome was stored: the job was handed out again (to another worker, or to this one on a new channel or lease); its outcome is left to that run";

/** The broker lost the message and no final record is there: this run's outcome is stored. */
export const OUTCOME_STORED_OWNERLESS =
  "the broker no longer holds this job's message (lost in a broker restart, or finished by a worker that took it over): its outcome is stored, as nobody will run it again";

/** The broker lost the message and a final record is there: this run's outcome is not stored. */
export const OUTCOME_FINAL_THERE =
  "the broker no longer holds this job's message and the task already has a final record (a worker that took the job over finished it, or this run's own, stored while the broker was away): this run's outcome is not stored again";

/**
 * As {@link OUTCOME_FINAL_THERE}, the final record in the state this run ended in: most likely
 * its own, stored before (a retried step after an outage); nothing is amiss.
 */
export const OUTCOME_SAME_THERE =
  "the broker no longer holds this job's message and the task's final record already says what this run ended with (stored before, e.g. while the broker was away): not stored again";

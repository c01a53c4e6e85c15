/**
 * Carries out the actions chosen by `settle`, in order. A failed step is retried with backoff
 * (the broker or backend may be restarting); when a step still fails, the remaining steps are
 * skipped and an unacknowledged message is released, so it is redelivered rather than lost.
 * The release counts the delivery when a broker step failed, so a message whose settling keeps
 * failing ends as poison (`maxDeliveries`) instead of running forever; not when the backend
 * alone failed to store a record (a `store` step, with a backend apart from the broker): a
 * backend outage longer than the backoff would otherwise turn every job it holds into poison,
 * settled without a record. While such a write fails and the backend does not answer at all,
 * the worker fetches nothing and the write is tried past its schedule, the job held rather than
 * given back ({@link RecordGate}); a backend that answers and still refuses the record has the job
 * given back after the schedule, to run again until its record is stored (on RabbitMQ quorum
 * queues, whose requeue always counts, `maxDeliveries` still bounds it). For a message
 * acknowledged before its run (`at_most_once`), a record that cannot be stored does not stop
 * the retry or dead letter published after it. Exceptions:
 * - A record the broker does not fence itself (it is not written in the ack's or the DLQ
 *   move's own call) is written only while the delivery's lease is held
 *   ({@link Delivery.holdsLease}): a worker that lost the job to another worker leaves its
 *   result to that worker. The settle steps after it still run: the broker fences them (they
 *   change nothing) and they end the delivery's bookkeeping in the consumer.
 * - An informative record (`RETRY`, see `StoreSpec.informative`) that cannot be written is
 *   skipped (tried once): the retry goes on.
 * - The record of a rejected message (poison after `maxDeliveries`, undecodable, unknown task)
 *   that cannot be written is given up: the message is still acknowledged or moved to the DLQ,
 *   since it would only come back to be rejected again. When its task has a final record
 *   already (a finished run's copy delivered again), no record is written at all
 *   ({@link keepingFinalRecord}); nor for a message done earlier in this worker (`done`) whose
 *   task has a `SUCCESS` already.
 * - A DLQ move refused because the DLQ is full ({@link DeadLetterQueueFullError}) is not tried
 *   again nor released: the broker keeps the message in its queue, and it comes back after its
 *   lease; a DEAD_LETTERED record stored ahead of the move (a backend apart from the broker) is
 *   replaced by FAILURE. An acknowledged message's dead letter refused so ends with a FAILURE
 *   record.
 * - A result the backend's server refuses for its size (MySQL's `max_allowed_packet`, Redis's
 *   `proto-max-bulk-len`, see {@link recordRefusal}) is not sent again: it would be refused
 *   every time, and the message would run again until it is poison. The task fails instead,
 *   with a `ValidationError`, as a result over `maxResultBytes` does, and that outcome is
 *   settled (its FAILURE or DEAD_LETTERED record, the ack or DLQ move) by the plan for it.
 * - A retry whose next message is too large ({@link MessageTooLargeError}: over
 *   `maxMessageBytes` when encoded, or longer than the broker's server takes, e.g. a Redis
 *   server's lowered `proto-max-bulk-len`) goes without its `lastError`; when even that does
 *   not fit (a message close to the limit grows by its `eta` and `firstFailureAt`), it is not
 *   tried again: the task fails instead (`MessageTooLarge`), settled by the plan for a failure,
 *   rather than failing its settling on every delivery.
 * - Publishing a message that is not the delivery itself (an `at_most_once` retry, a dead
 *   letter written for an acknowledged message) is tried once: a publish whose reply was lost
 *   may still be applied, and trying again could add the message twice. The retry is published
 *   `unique`, so a copy the client itself sends again is not added either. Either one the broker's
 *   server refused before writing anything ({@link BrokerConnectionError.isRefused}) is tried
 *   again on the schedule while each try is refused so; refused still, the job ends `FAILURE`
 *   (a retry not enqueued would otherwise leave its `RETRY` record for good).
 * @module
 */
import type { Chicory } from "../app.js";
import { resultStampOf, type StoredError, type TaskRecord, terminalStateOf } from "../backends/backend.js";
import type { Delivery } from "../brokers/broker.js";
import { isoNow } from "../core/clock.js";
import {
  OUTCOME_FINAL_THERE,
  OUTCOME_LEFT_TO_NEW_OWNER,
  OUTCOME_SAME_THERE,
  OUTCOME_STORED_OWNERLESS,
} from "../core/lease-outcome.js";
import type { Logger } from "../core/logger.js";
import { type TaskMessage, truncateError } from "../core/message.js";
import { recordRefusal } from "../core/record-refused.js";
import { sleep, withinDeadline } from "../core/sleep.js";
import { MAX_STORED_TEXT, toStoredError } from "../core/stored-error.js";
import { ThrottledWarning } from "../core/throttled-log.js";
import {
  BackendConnectionError,
  BrokerConnectionError,
  DeadLetterQueueFullError,
  MessageTooLargeError,
  toError,
  ValidationError,
} from "../errors.js";
import type { HeldWrite, RecordGate } from "./record-gate.js";
import type { Attempt } from "./runner.js";
import { type Action, type SettleMode, settle } from "./settle.js";

/** What the executor needs. */
export interface ExecutionContext {
  readonly delivery: Delivery;
  readonly attempt: Attempt;
  readonly app: Chicory;
  readonly logger: Logger;
  /** Aborts retries of failing steps (forced shutdown). */
  readonly stopSignal: AbortSignal;
  /**
   * True once the broker closed the consumer the delivery came from (`app.disconnect()` under
   * a running worker): a failing step is not tried again, it cannot succeed.
   */
  readonly isConsumerClosed?: (() => boolean) | undefined;
  /**
   * How `actions` were planned: with it, a result the backend's server refuses for its size
   * ends the task as a failure settled by this mode's plan; without it, the step is retried as
   * any failed step is.
   */
  readonly settleMode?: SettleMode | undefined;
  /** Called when a success ends as a failure here (its result refused), for the worker's counts. */
  readonly onFailedInstead?: (() => void) | undefined;
  /**
   * The worker's backpressure while records cannot be stored: while a record write fails and
   * the backend does not answer its probe, the worker fetches nothing and the write is tried
   * past its backoff schedule (see {@link RecordGate}).
   */
  readonly recordGate?: RecordGate | undefined;
  /**
   * True when a run the shutdown ended is released counting a delivery: the worker stops for an
   * uncaught exception, which one of its runs may have caused (released uncounted, a message
   * that crashes every worker that runs it would never reach `maxDeliveries`).
   */
  readonly countsAbortedRelease?: (() => boolean) | undefined;
}

const STEP_BACKOFF_MS = [100, 500, 1000, 2000, 4000, 8000, 15_000];
/** Between two tries of a record held for a backend that does not answer (the gate wakes it sooner). */
const HELD_RECORD_RETRY_MS = 15_000;
/**
 * Between two tries of a record held for a backend that refuses writes for now (out of memory):
 * its PING answers, so no probe tells when it takes them again; the first stored wakes the others.
 */
const HELD_REFUSED_RETRY_MS = 5_000;
/** A held record's failed tries are logged one in this many (every minute or so). */
const HELD_RECORD_LOG_EVERY = 4;
/** The same, for a record the backend refuses for now (also every minute). */
const HELD_REFUSED_LOG_EVERY = 12;

/**
 * Shortest time between two "settling step failed" warnings of one worker: an outage fails
 * every running job's step, each try (the lines between go to debug, counted in the next one).
 */
const STEP_WARN_EVERY_MS = 5_000;

const stepWarnings = new ThrottledWarning(STEP_WARN_EVERY_MS, "failedStepsNotWarned");

/** Logs a failed settling step that will be tried again (see {@link STEP_WARN_EVERY_MS}). */
function warnStepFailed(logger: Logger, fields: Record<string, unknown>): void {
  stepWarnings.warn(logger, fields, "settling step failed");
}

/** Steps that add a message and are tried once (see module doc). */
const ONCE = new Set<Action["type"]>(["republish", "writeDeadLetter", "storeAndWriteDeadLetter"]);

/** Runs `actions` in order; never throws. */
export async function executeActions(planned: readonly Action[], ctx: ExecutionContext): Promise<void> {
  // (a rejected message's only: no wait added to every job's settle)
  const { kind } = ctx.attempt.outcome;
  const actions = kind === "rejected" || kind === "done" ? await keepingFinalRecord(planned, ctx) : planned;
  for (const action of actions) {
    let ok = true;
    try {
      await runAction(action, ctx);
    } catch (error) {
      if (action.type === "store" && action.informative) {
        ctx.logger.warn(
          { taskId: ctx.attempt.message?.id, state: action.state, err: toError(error).message },
          "could not store the RETRY state; the retry goes on (state() shows the previous state until the next attempt)",
        );
        continue;
      }
      const refusedRetry = retryTooLarge(action, ctx, error);
      if (refusedRetry !== undefined) {
        await failRefusedRetry(ctx, refusedRetry);
        return;
      }
      if (ONCE.has(action.type)) {
        // Tried once (see module doc), unless the broker's server refused it before writing
        // anything: tried again on the schedule then, while each try is refused so.
        let last = error;
        const goesOn = (next: unknown): boolean => {
          last = next;
          return isRefused(next);
        };
        if (isRefused(error) && (await retrying(action, ctx, error, undefined, goesOn)) === true) continue;
        const refused = isRefused(last);
        ctx.logger.error(
          { taskId: ctx.attempt.message?.id, step: action.type, err: toError(last).message },
          last instanceof DeadLetterQueueFullError
            ? "the DLQ is full: the dead letter of this acknowledged message was not written; the job ends FAILURE"
            : refused
              ? `the broker refused this acknowledged message's ${action.type === "republish" ? "retry (nothing was enqueued)" : "dead letter (nothing was written)"}: the job ends FAILURE`
              : "settling step failed; not tried again (the message may have been added all the same)",
        );
        // not (surely) in the DLQ: its record must not say DEAD_LETTERED; a retry surely not
        // enqueued: its RETRY record must not stay for a retry that is not coming
        if (action.type !== "republish" || refused) await storeFailureInstead(ctx);
        return;
      }
      if (error instanceof DeadLetterQueueFullError && !ctx.attempt.alreadyAcked) {
        // Nothing to retry now: the broker keeps the message in its queue, and it comes back
        // after its lease (the broker stopped renewing it). Trying again meanwhile, or
        // releasing it, would run it again at once.
        ctx.logger.warn(
          { taskId: ctx.attempt.message?.id, queue: ctx.delivery.queue, err: toError(error).message },
          "the DLQ is full: the message stays in its queue and comes back after its lease",
        );
        // A DEAD_LETTERED record stored before the refused move (a backend apart from the
        // broker) would say the message is in the DLQ: FAILURE instead.
        if (action.type === "deadLetter" && actions.some((a) => a.type === "store" && a.state === "DEAD_LETTERED")) {
          await storeFailureInstead(ctx);
        }
        return;
      }
      const retried = await retryStep(action, ctx, error);
      if (typeof retried === "string") {
        await failRefusedResult(ctx, retried);
        return;
      }
      ok = retried;
    }
    if (!ok) {
      // An acknowledged message's record is bookkeeping: the publish after it (its retry or
      // dead letter) must still happen, or nothing would ever publish it.
      if (ctx.attempt.alreadyAcked && action.type === "store") continue;
      // A rejected message (poison after `maxDeliveries`, undecodable, unknown task) is not
      // run again: its record is best effort. Releasing it would bring it back to be rejected
      // again, for good, while the backend refuses the record.
      const without = ctx.attempt.outcome.kind === "rejected" ? withoutRecord(action) : undefined;
      if (without !== undefined) {
        ctx.logger.error(
          { taskId: ctx.attempt.message?.id, queue: ctx.delivery.queue, step: action.type },
          "could not store the rejected message's record; settling it without one (its state stays as it was)",
        );
        if (without === null) continue;
        await executeActions([without], ctx);
        return;
      }
      if (!ctx.attempt.alreadyAcked && action.type !== "release") {
        // A record the backend alone failed to store (a `store` step: an outage of a backend
        // apart from the broker) says nothing about the message: not counted, or an outage of
        // a few minutes would make every job poison, settled without its record.
        const countDelivery = action.type !== "store";
        await ctx.delivery.release({ countDelivery }).catch((error: unknown) => {
          ctx.logger.warn({ err: toError(error).message }, "release after a failed step failed; the lease will expire");
        });
      }
      return;
    }
  }
}

/** Whether `error` is a backend's refusal for a state of its server's own (see `RecordGate`). */
function isRefusedWrite(error: unknown): boolean {
  return error instanceof BackendConnectionError && error.isRefused;
}

/** Whether `error` is a broker's refusal made before it wrote anything (nothing was added). */
function isRefused(error: unknown): boolean {
  return error instanceof BrokerConnectionError && error.isRefused;
}

/** The FAILURE record of an acknowledged message whose dead letter was not written (best effort). */
async function storeFailureInstead(ctx: ExecutionContext): Promise<void> {
  const action = { type: "store", state: "FAILURE", withValue: false, withError: true } as const;
  try {
    await runAction(action, ctx);
  } catch (error) {
    ctx.logger.warn(
      { taskId: ctx.attempt.message?.id, err: toError(error).message },
      "could not store the FAILURE record either",
    );
  }
}

/**
 * A record step's settle without the record: `null` for a lone store (the next step goes on),
 * `undefined` for a step that writes no record.
 */
function withoutRecord(action: Action): Action | null | undefined {
  switch (action.type) {
    case "store":
      return null;
    case "storeAndAck":
      return { type: "ack" };
    case "storeAndDeadLetter":
      return { type: "deadLetter" };
    default:
      return undefined;
  }
}

/**
 * `actions` without their record writes when the record already there must stay:
 * - a rejected message (poison, naming a task this worker does not know, too large for it)
 *   whose task has a final record: a copy of a finished run delivered again (its worker stopped
 *   between the record and the ack). Its rejection must not replace the outcome a `get()` may
 *   have returned (a SUCCESS turned FAILURE);
 * - a message done earlier in this worker (`done`) whose task has a `SUCCESS` already (that
 *   run's own, or another's); a `FAILURE` or `DEAD_LETTERED` of a run that could not settle the
 *   message is replaced, this message's job having succeeded.
 * A backend that cannot be read leaves the plan as it is.
 */
async function keepingFinalRecord(actions: readonly Action[], ctx: ExecutionContext): Promise<readonly Action[]> {
  const { outcome } = ctx.attempt;
  const backend = ctx.app.backend;
  const taskId = outcome.kind === "rejected" ? outcome.taskId : ctx.attempt.message?.id;
  if (taskId == null || backend === null) return actions;
  if (!actions.some((action) => withoutRecord(action) !== undefined)) return actions;
  let final: string | null;
  try {
    final = await terminalStateOf(backend, taskId);
  } catch {
    return actions;
  }
  if (final === null || (outcome.kind === "done" && final !== "SUCCESS")) return actions;
  ctx.logger.info(
    { taskId, state: final, queue: ctx.delivery.queue },
    outcome.kind === "done"
      ? "the task has a SUCCESS record already: kept, the message acknowledged without a new one"
      : "the rejected message's task has a final record already: kept, the message settled without a new one",
  );
  return actions.flatMap((action) => {
    const without = withoutRecord(action);
    return without === undefined ? [action] : without === null ? [] : [without];
  });
}

/**
 * The server's words when `error` is its refusal of the result `action` stores (see
 * {@link recordRefusal}) and the outcome can be settled as a failure instead; else undefined.
 */
function refusedResult(action: Action, ctx: ExecutionContext, error: unknown): string | undefined {
  const { kind } = ctx.attempt.outcome;
  if (ctx.settleMode === undefined || (kind !== "success" && kind !== "done")) return undefined;
  if ((action.type !== "store" && action.type !== "storeAndAck") || !action.withValue) return undefined;
  return recordRefusal(error);
}

/** Settles the attempt as a failure: its result was refused by the backend's server (`refusal`). */
async function failRefusedResult(ctx: ExecutionContext, refusal: string): Promise<void> {
  const { message } = ctx.attempt;
  const what = message ? `task "${message.name}"` : "the task";
  const error = new ValidationError(
    `${what}: the result backend refused to store its result (${refusal.slice(0, 200)}): the result is larger than the backend's server accepts; set maxResultBytes (CHICORY_MAX_RESULT_BYTES) below the server's limit, or store large data elsewhere (a file, object storage) and return a reference to it`,
  );
  await failInstead(ctx, toStoredError(error));
}

/**
 * The broker's refusal of a `retry` / `republish` step for the next attempt's size, when the
 * outcome can be settled as a failure instead (see module doc); else undefined.
 */
function retryTooLarge(action: Action, ctx: ExecutionContext, error: unknown): MessageTooLargeError | undefined {
  if (ctx.settleMode === undefined || ctx.attempt.outcome.kind !== "retry") return undefined;
  if (action.type !== "retry" && action.type !== "republish") return undefined;
  return error instanceof MessageTooLargeError ? error : undefined;
}

/** Settles the attempt as a failure: the broker refused its retry's message for its size (`refused`). */
async function failRefusedRetry(ctx: ExecutionContext, refused: MessageTooLargeError): Promise<void> {
  const { outcome } = ctx.attempt;
  const cause = outcome.kind === "retry" ? `${outcome.error.type}: ${outcome.error.message}` : "";
  await failInstead(ctx, {
    type: "MessageTooLarge",
    message:
      `cannot retry: the next attempt's ${refused.message}; the failure that asked for the retry: ${cause}`.slice(
        0,
        MAX_STORED_TEXT,
      ),
  });
}

/** Settles the attempt as a failure with `error` instead of its outcome, by the plan for a failure. */
async function failInstead(ctx: ExecutionContext, error: StoredError): Promise<void> {
  const mode = ctx.settleMode as SettleMode;
  const { message } = ctx.attempt;
  const outcome = { kind: "failure", error } as const;
  ctx.onFailedInstead?.();
  ctx.logger.warn(
    {
      taskId: message?.id,
      task: message?.name,
      queue: ctx.delivery.queue,
      ...(message ? { retries: message.retries } : {}),
      deadLettered: mode.useDeadLetterQueue,
      errorType: error.type,
      error: error.message,
    },
    "task failed",
  );
  await executeActions(settle(outcome, mode), { ...ctx, attempt: { ...ctx.attempt, outcome } });
}

/**
 * Tries a failed step again with backoff: true once it succeeds, false when it gives up, or the
 * server's words when it refuses the result the step stores (see {@link refusedResult}). A
 * record write (`store`) tells the worker's {@link RecordGate} meanwhile; past its schedule, it
 * goes on while the backend does not answer, unless it is a rejected message's.
 */
async function retryStep(action: Action, ctx: ExecutionContext, firstError: unknown): Promise<boolean | string> {
  const gate = action.type === "store" ? ctx.recordGate : undefined;
  if (gate === undefined) return retrying(action, ctx, firstError, undefined);
  const write = gate.begin();
  let retried: boolean | string = false;
  try {
    retried = await retrying(action, ctx, firstError, { gate, write });
    return retried;
  } finally {
    gate.end(write, retried === true ? "stored" : ctx.stopSignal.aborted ? "stopped" : "givenUp");
  }
}

/**
 * Tries `action` again on the steps' schedule (see {@link retryStep}); with `goesOn`, stops at
 * the first error it refuses (false).
 */
async function retrying(
  action: Action,
  ctx: ExecutionContext,
  firstError: unknown,
  gated: { readonly gate: RecordGate; readonly write: HeldWrite } | undefined,
  goesOn?: (error: unknown) => boolean,
): Promise<boolean | string> {
  const gate = gated?.gate;
  let error = firstError;
  let held = 0;
  let tries = 0;
  for (let step = 0; ; step++) {
    const refused = refusedResult(action, ctx, error);
    if (refused !== undefined) return refused;
    const taskId = ctx.attempt.message?.id;
    tries++;
    // a write the server refuses for a state of its own (out of memory) is held as for a
    // backend that does not answer: its PING answers all the same
    // (not a rejected message's record, which is not held: its refusal pauses no fetching)
    if (gated !== undefined && ctx.attempt.outcome.kind !== "rejected") {
      gated.gate.tried(gated.write, isRefusedWrite(error), toError(error).message);
    }
    const isRefusing = gated?.write.refusing === true;
    // A held record whose backend answers again gets the whole schedule once more: its try in
    // flight when the backend came back (or the first after, on a pool still reconnecting) may
    // fail, and giving up then would run the job again, which the hold was for.
    if (held > 0 && STEP_BACKOFF_MS[step] === undefined && gate?.backendDown !== true && !isRefusing) {
      held = 0;
      step = 0;
    }
    const scheduled = STEP_BACKOFF_MS[step];
    // Past the schedule, a record waits for a backend that does not answer or refuses writes for
    // now; given back, its job would only run again (a rejected message's record is best effort:
    // not held).
    const holds =
      scheduled === undefined && (gate?.backendDown === true || isRefusing) && ctx.attempt.outcome.kind !== "rejected";
    const delay = holds ? (isRefusing ? HELD_REFUSED_RETRY_MS : HELD_RECORD_RETRY_MS) : scheduled;
    if (delay === undefined || ctx.stopSignal.aborted || ctx.isConsumerClosed?.() === true) {
      if (action.type === "release") {
        // nothing is lost: the message stays pending, and comes back once its lease expires
        ctx.logger.warn(
          { taskId, queue: ctx.delivery.queue, step: action.type, err: toError(error).message },
          "could not give the message back to its queue (the broker did not answer): it is delivered again once its lease expires",
        );
      } else {
        ctx.logger.error({ taskId, step: action.type, err: toError(error).message }, "settling step failed; giving up");
      }
      return false;
    }
    if (!holds) {
      warnStepFailed(ctx.logger, { taskId, step: action.type, err: toError(error).message, retryInMs: delay });
    } else if (held++ % (isRefusing ? HELD_REFUSED_LOG_EVERY : HELD_RECORD_LOG_EVERY) === 0) {
      const why = isRefusing ? "refuses writes for now" : "does not answer";
      ctx.logger.error(
        { taskId, queue: ctx.delivery.queue, err: toError(error).message, tries },
        ctx.attempt.alreadyAcked
          ? `the result backend ${why}: the job's record waits for it (its message was acknowledged before the run)`
          : `the result backend ${why}: the job's record waits for it (the job is held, not run again)`,
      );
    }
    await (gate ? gate.pause(delay, ctx.stopSignal) : sleep(delay, ctx.stopSignal));
    // a forced stop: no more try of a write held for a backend that does not answer (it could
    // take the backend's whole query timeout); the loop gives up
    if (holds && ctx.stopSignal.aborted) continue;
    try {
      await runAction(action, ctx, true);
      return true;
    } catch (next) {
      error = next;
      if (goesOn !== undefined && !goesOn(next)) return false;
    }
  }
}

function errorText(ctx: ExecutionContext): string {
  const { outcome } = ctx.attempt;
  if (outcome.kind === "success" || outcome.kind === "done") return "";
  return truncateError(`${outcome.error.type}: ${outcome.error.message}`);
}

function nextAttempt(message: TaskMessage, ctx: ExecutionContext, delayMs: number): TaskMessage {
  const now = new Date();
  return {
    ...message,
    retries: message.retries + 1,
    eta: new Date(now.getTime() + delayMs).toISOString(),
    firstFailureAt: message.firstFailureAt ?? now.toISOString(),
    lastError: errorText(ctx),
  };
}

/**
 * Sends the next attempt's message: as the delivery's own retry (`retry`), or published anew
 * for an acknowledged message (`republish`).
 */
async function sendRetry(
  asRetry: boolean,
  body: string,
  ctx: ExecutionContext,
  message: TaskMessage,
  delayMs: number,
): Promise<void> {
  const { delivery, app } = ctx;
  if (asRetry) {
    await delivery.retry(body, delayMs);
    return;
  }
  // Unique: a publish the client sends again after a lost reply (ioredis re-sends the
  // commands in flight when it reconnects) adds the retry once (where the broker can).
  const { published } = await app.broker.publish(delivery.queue, {
    id: message.id,
    body,
    delayMs,
    priority: message.priority,
    unique: true,
  });
  if (!published) {
    ctx.logger.warn(
      { taskId: message.id, queue: delivery.queue },
      "retry not published: a message with this task id is already queued",
    );
  }
}

/** Whose record a store writes: the decoded message's task, or a rejected one's id as read. */
interface RecordTarget {
  readonly id: string;
  readonly name: string | null;
  readonly retries: number;
}

function recordTarget(attempt: Attempt): RecordTarget | null {
  const { message, outcome } = attempt;
  if (message) return message;
  // not decoded (too large), its id read from its first bytes
  if (outcome.kind === "rejected" && outcome.taskId !== null) {
    return { id: outcome.taskId, name: outcome.taskName ?? null, retries: 0 };
  }
  return null;
}

/** The record a `store` / `storeAndAck` / `storeAndDeadLetter` / `storeAndWriteDeadLetter` action writes. */
function recordOf(
  action: Extract<Action, { type: "store" | "storeAndAck" | "storeAndDeadLetter" | "storeAndWriteDeadLetter" }>,
  attempt: Attempt,
  target: RecordTarget,
): TaskRecord {
  const { outcome } = attempt;
  return {
    taskId: target.id,
    state: action.state,
    result:
      action.withValue && (outcome.kind === "success" || outcome.kind === "done") && !attempt.task?.ignoreResult
        ? (outcome.value as TaskRecord["result"])
        : undefined,
    error: action.withError && outcome.kind !== "success" && outcome.kind !== "done" ? outcome.error : undefined,
    retries: target.retries,
    ...(target.name === null ? {} : { taskName: target.name }),
    updatedAt: isoNow(),
  };
}

/**
 * False when the record of an unacknowledged delivery must not be written: the lease was lost
 * (another worker holds the job now, and stores its own outcome), or the broker lost the
 * message (`ownerless`: nobody will run it again) and the task already has a final record.
 * Logged here.
 */
async function mayStore(ctx: ExecutionContext, state: string, taskId: string, isRetry: boolean): Promise<boolean> {
  const { delivery, attempt } = ctx;
  if (attempt.alreadyAcked) return true;
  const lease = delivery.leaseState
    ? await delivery.leaseState()
    : delivery.holdsLease === undefined || (await delivery.holdsLease())
      ? "held"
      : "taken";
  if (lease === "held") return true;
  const fields = { taskId: attempt.message?.id, queue: delivery.queue, state };
  if (lease === "ownerless") {
    const backend = ctx.app.backend;
    const final = backend ? await terminalStateOf(backend, taskId) : null;
    if (final === null) {
      ctx.logger.warn(fields, OUTCOME_STORED_OWNERLESS);
      return true;
    }
    // on a try after a failed one, the state this run ended in: most likely its own record,
    // stored by that try (its reply lost) or by the record gate while the broker was away: no
    // cause for a warning (on a first try, it is another run's: a job that ran twice)
    if (isRetry && final === state) ctx.logger.info({ ...fields, storedState: final }, OUTCOME_SAME_THERE);
    else ctx.logger.warn({ ...fields, storedState: final }, OUTCOME_FINAL_THERE);
    return false;
  }
  ctx.logger.warn(fields, OUTCOME_LEFT_TO_NEW_OWNER);
  return false;
}

/** How long a release waits for each check of the task's `STARTED` record. */
const STARTED_CHECK_MS = 1000;

/**
 * Gives the message back (a run the shutdown aborted: see settle's `release`) and deletes its
 * task's `STARTED` record, so that the queued job reads `PENDING`: only the record read before
 * the release while this delivery held the lease (this run's marker, or an older run's of the
 * same job), and only if nothing replaced it meanwhile (`deleteResultIf`). Each check waits at
 * most {@link STARTED_CHECK_MS}; the release does not depend on them.
 */
async function releaseClearingStarted(ctx: ExecutionContext): Promise<void> {
  const { delivery, logger } = ctx;
  const backend = ctx.app.backend;
  const taskId = ctx.attempt.message?.id;
  const bounded = async <T>(work: () => Promise<T>, what: string): Promise<T | null> => {
    try {
      return await withinDeadline(work(), STARTED_CHECK_MS);
    } catch (error) {
      logger.debug({ taskId, err: toError(error).message }, `could not ${what} the STARTED record of a released job`);
      return null;
    }
  };
  const seen =
    taskId === undefined || !backend?.deleteResultIf
      ? null
      : await bounded(async () => {
          const stamp = await resultStampOf(backend, taskId);
          const isHeld = stamp?.state === "STARTED" && (await (delivery.holdsLease?.() ?? true));
          return isHeld ? stamp : null;
        }, "read");
  await delivery.release(ctx.countsAbortedRelease?.() ? { countDelivery: true } : undefined);
  if (seen && taskId !== undefined) await bounded(async () => backend?.deleteResultIf?.(taskId, seen), "delete");
}

/** Runs one step; `isRetry`: a try after a failed one of the same step (see {@link mayStore}). */
async function runAction(action: Action, ctx: ExecutionContext, isRetry = false): Promise<void> {
  const { delivery, attempt, app } = ctx;
  const { outcome, message } = attempt;
  switch (action.type) {
    case "store": {
      const backend = app.backend;
      const target = recordTarget(attempt);
      if (!backend || !target) return;
      if (!(await mayStore(ctx, action.state, target.id, isRetry))) return;
      await backend.storeResult(recordOf(action, attempt, target));
      return;
    }
    case "storeAndAck": {
      const target = recordTarget(attempt);
      if (app.backend && target && delivery.ackWithRecord) {
        // fenced by the broker: the record is written only if this consumer still holds the entry
        await delivery.ackWithRecord(recordOf(action, attempt, target));
        return;
      }
      // A delivery without the one-call ack (e.g. wrapped by the caller): store, then ack.
      await runAction({ ...action, type: "store" }, ctx, isRetry);
      await delivery.ack();
      return;
    }
    case "ack":
      await delivery.ack();
      return;
    case "release":
      await releaseClearingStarted(ctx);
      return;
    case "retry":
    case "republish": {
      if (!message || outcome.kind !== "retry") return;
      const next = nextAttempt(message, ctx, outcome.delayMs);
      const send = (attempt: TaskMessage) =>
        sendRetry(action.type === "retry", app.codec.encode(attempt), ctx, message, outcome.delayMs);
      try {
        await send(next);
      } catch (error) {
        // Too large (over maxMessageBytes when encoded, or refused by the broker's server,
        // which sent nothing): once more without lastError; still too large, the task fails
        // (retryTooLarge)
        if (!(error instanceof MessageTooLargeError) || next.lastError === null) throw error;
        await send({ ...next, lastError: null });
      }
      return;
    }
    case "deadLetter":
      await delivery.deadLetter(errorText(ctx));
      return;
    case "storeAndDeadLetter": {
      const target = recordTarget(attempt);
      if (app.backend && target && delivery.deadLetterWithRecord) {
        // fenced by the broker: the record is written only if the move happens
        await delivery.deadLetterWithRecord(errorText(ctx), recordOf(action, attempt, target));
        return;
      }
      await runAction({ ...action, type: "store" }, ctx, isRetry);
      await delivery.deadLetter(errorText(ctx));
      return;
    }
    case "writeDeadLetter":
      await app.broker.writeDeadLetter(delivery.queue, delivery.body, errorText(ctx));
      return;
    case "storeAndWriteDeadLetter": {
      const target = recordTarget(attempt);
      if (app.backend && target && delivery.writeDeadLetterWithRecord) {
        // both in one call: a worker that dies in between leaves no DLQ entry without its record
        await delivery.writeDeadLetterWithRecord(errorText(ctx), recordOf(action, attempt, target));
        return;
      }
      // A delivery without the one call (e.g. wrapped by the caller): the dead letter, then its
      // record, each handled as in the plan without it.
      await executeActions([{ type: "writeDeadLetter" }, { ...action, type: "store" }], ctx);
      return;
    }
  }
}

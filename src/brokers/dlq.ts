/**
 * Broker-independent pieces of dead-letter handling: turning a stored DLQ entry into a
 * {@link DlqMessage} and rewriting a body for replay. Pure: no I/O.
 * @module
 */
import type { MessageCodec } from "../core/message.js";
import { peekMessage } from "../core/message.js";
import { ChicoryError, ValidationError } from "../errors.js";
import type { DlqMessage, DlqReplayGuard } from "./broker.js";

/** What a broker stores for one dead-lettered message. */
export interface StoredDlqEntry {
  /** The raw body as it was dead-lettered. */
  readonly body: string;
  /** Why it was dead-lettered. */
  readonly error: string;
  /** When it was dead-lettered (Date, ISO string or epoch milliseconds). */
  readonly failedAt: Date | string | number;
  /** The retry counter, when the broker stored it; else read from the message. */
  readonly retryCount?: number | undefined;
  /**
   * The task id, when the broker stored it next to the body: `originalMessage` is `{ id }` for a
   * body that cannot be read (too large, not JSON), so listings still name the task.
   */
  readonly taskId?: string | undefined;
}

/**
 * `count` of a DLQ listing (`getDlqMessages`, `getDlqMessagesAfter`: named by `operation`) when
 * it is a whole number >= 0, else a ValidationError.
 */
export function dlqListCount(operation: string, count: number): number {
  if (!Number.isSafeInteger(count) || count < 0) {
    throw new ValidationError(`${operation}: count must be a whole number >= 0, got ${String(count)}`);
  }
  return count;
}

/**
 * Builds the {@link DlqMessage} shown by `getDlqMessages` from a stored entry. The
 * message is read leniently (no signature check); `retryCount` comes from the entry,
 * else from the message's `retries`, else 0.
 */
export function toDlqMessage(messageId: string, stored: StoredDlqEntry): DlqMessage {
  const originalMessage = peekMessage(stored.body) ?? (stored.taskId ? { id: stored.taskId } : null);
  const fromMessage = originalMessage?.retries;
  const retryCount =
    stored.retryCount !== undefined && Number.isFinite(stored.retryCount)
      ? stored.retryCount
      : typeof fromMessage === "number" && Number.isSafeInteger(fromMessage) && fromMessage >= 0
        ? fromMessage
        : 0;
  return {
    messageId,
    originalMessage,
    body: stored.body,
    failedAt: toDate(stored.failedAt),
    error: stored.error,
    retryCount,
  };
}

function toDate(value: Date | string | number): Date {
  if (value instanceof Date) return new Date(value.getTime());
  if (typeof value === "number") return new Date(value);
  const asNumber = /^\d+$/.test(value) ? Number(value) : Number.NaN;
  const date = Number.isFinite(asNumber) ? new Date(asNumber) : new Date(value);
  // A foreign or corrupt entry's time must not make the whole listing throw (toISOString of an
  // invalid date does): it shows as the epoch instead.
  return Number.isNaN(date.getTime()) ? new Date(0) : date;
}

/**
 * Returns the body to re-publish when replaying a DLQ entry. With `resetRetries` the
 * message gets `retries = 0` and no `eta`, `firstFailureAt` or `lastError`, and is
 * re-encoded (and re-signed when the codec signs). Without it the body is returned as is
 * after checking that it decodes.
 * @param storedError the entry's stored reason: an entry the workers rejected for its signature
 *   is refused by a process without the key (it would only be rejected again)
 * @throws ValidationError when the body is not a valid message, or is signed while the codec
 *   cannot sign its rewrite, or was rejected for its signature (the entry should stay in the DLQ)
 */
export function rewriteForReplay(
  codec: MessageCodec,
  body: string,
  resetRetries: boolean,
  storedError?: string,
): string {
  if (!codec.isSigning && storedError !== undefined && SIGNATURE_REJECTED.test(storedError)) {
    // A process without the key would replay it as it is: the workers, which verify, would
    // reject it again, and its claimed task id would stay reserved (a rejected message is
    // never trusted to release it).
    throw new ValidationError(
      "cannot replay dead-lettered message: the workers rejected it for its signature (unsigned, or signed with another key) and would again; the entry stays in the DLQ: delete it, and publish the task again from a process with the key",
    );
  }
  const decoded = codec.decode(body);
  if (!decoded.ok) {
    throw new ValidationError(
      `cannot replay dead-lettered message: ${decoded.reason}: ${decoded.error} (the entry stays in the DLQ; delete it with deleteFromDlq)`,
    );
  }
  if (!resetRetries) return body;
  if (!codec.isSigning && isSigned(body)) {
    // Re-encoded here it would go out unsigned: workers that verify would reject it for good.
    throw new ValidationError(
      "cannot replay dead-lettered message with its retries reset: it is signed and this process has no signing key (CHICORY_SIGNING_KEY) to sign the rewritten message; replay it from a process with the key, or as it is (resetRetries false, `--no-reset-retries`); the entry stays in the DLQ",
    );
  }
  return codec.encode({ ...decoded.message, retries: 0, eta: null, firstFailureAt: null, lastError: null });
}

/** The stored error of a message the workers rejected for its signature (see the runner). */
const SIGNATURE_REJECTED = /^MessageRejected: (unsigned|bad_signature):/;

/** Whether a message body carries a signature (`sig`). */
function isSigned(body: string): boolean {
  const peeked = peekMessage(body, Number.POSITIVE_INFINITY) as { sig?: unknown } | null;
  return typeof peeked?.sig === "string";
}

/**
 * Runs a replay's `move` (see {@link DlqReplayGuard}) through `guard` when the app set one,
 * for task `taskId` (a broker that stores it passes it; else {@link replayedTaskId}).
 */
export function guardedReplay(
  guard: DlqReplayGuard | undefined,
  taskId: string | undefined,
  move: () => Promise<boolean>,
): Promise<boolean> {
  return guard ? guard(taskId || undefined, move) : move();
}

/**
 * The error of a replay refused because a message of the same task id is live on the target
 * queue (queued, delayed or running): replaying would make two copies of one task id.
 */
export function replayRefusedError(messageId: string, taskId: string): ChicoryError {
  return new ChicoryError(
    `cannot replay dead-lettered message ${messageId}: a message of task ${taskId} is already queued, delayed or running (unique task id); the entry stays in the DLQ: replay it once that one has finished, or delete it`,
  );
}

/** The task id of a replayed `body` (already decoded by {@link rewriteForReplay}, whatever its size). */
export function replayedTaskId(body: string): string | undefined {
  const id = peekMessage(body, Number.POSITIVE_INFINITY)?.id;
  return typeof id === "string" && id !== "" ? id : undefined;
}

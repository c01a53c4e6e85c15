/**
 * Inspection and administration of the {@link MemoryBroker} (SPEC §7): counts, purge, DLQ
 * listing, replay and deletion, stale consumers. Every operation is synchronous inside,
 * hence atomic within the process (a replay runs once even when called concurrently).
 * @module
 */
import { staleMs } from "../core/duration.js";
import type { MessageCodec } from "../core/message.js";
import { ValidationError } from "../errors.js";
import type { BrokerAdmin, DlqMessage, DlqReplayGuard, HealthStatus } from "./broker.js";
import { dlqListCount, guardedReplay, replayRefusedError, rewriteForReplay, toDlqMessage } from "./dlq.js";
import { type MemoryMessage, MemoryQueue } from "./memory-queue.js";

/** Queue used by admin calls that name none. */
const DEFAULT_QUEUE = "default";
/** Default idle time after which a consumer without pending deliveries is stale, in seconds. */
const DEFAULT_STALE_SECONDS = 300;

/** The admin half of the memory broker; the data plane lives in `MemoryBroker`. */
export abstract class MemoryAdmin implements BrokerAdmin {
  /** The codec used to rewrite replayed messages. */
  protected codec: MessageCodec;
  /** The app's DLQ replay guard, when bound. */
  protected replayGuard: DlqReplayGuard | undefined;
  /** Queues by name, created on first use. */
  protected readonly queues = new Map<string, MemoryQueue>();
  /** Live (queued, delayed or in flight) messages per queue and task id, for `unique` publish (ids are held per queue, as on Redis and SQLite). */
  readonly #liveIds = new Map<string, number>();
  /** Which queue's DLQ holds an entry id. */
  readonly #dlqIndex = new Map<string, string>();
  #seq = 0;

  protected constructor(codec: MessageCodec) {
    this.codec = codec;
  }

  /** Adds a message to `queue`, ready now or after `delayMs`. */
  protected abstract enqueue(queue: string, id: string, body: string, priority: number, delayMs: number): void;

  /** Round trip (none for memory). */
  abstract healthcheck(): Promise<HealthStatus>;

  /** The queue named `name`, created when missing. */
  protected queue(name: string): MemoryQueue {
    let queue = this.queues.get(name);
    if (!queue) {
      queue = new MemoryQueue();
      this.queues.set(name, queue);
    }
    return queue;
  }

  /** A new arrival sequence number. */
  protected nextSeq(): number {
    return ++this.#seq;
  }

  /** True when a message of `queue` with task id `id` is queued, delayed or in flight. */
  protected isLive(queue: string, id: string): boolean {
    return (this.#liveIds.get(liveKey(queue, id)) ?? 0) > 0;
  }

  /** Counts one more live message of `queue` with task id `id`. */
  protected retainId(queue: string, id: string): void {
    const key = liveKey(queue, id);
    this.#liveIds.set(key, (this.#liveIds.get(key) ?? 0) + 1);
  }

  /** Counts one live message of `queue` with task id `id` less. */
  protected releaseId(queue: string, id: string): void {
    const key = liveKey(queue, id);
    const left = (this.#liveIds.get(key) ?? 0) - 1;
    if (left > 0) this.#liveIds.set(key, left);
    else this.#liveIds.delete(key);
  }

  /** Stores a dead letter of `queue`. */
  protected addDeadLetter(queue: string, message: MemoryMessage, error: string): void {
    const entryId = `dlq-${this.nextSeq()}`;
    this.queue(queue).dlq.set(entryId, { entryId, message, error, failedAt: Date.now() });
    this.#dlqIndex.set(entryId, queue);
  }

  /** {@inheritDoc BrokerAdmin.getDlqMessages} */
  async getDlqMessages(queue = DEFAULT_QUEUE, count = 100): Promise<DlqMessage[]> {
    return this.#listDlq("getDlqMessages", queue, count, 0);
  }

  /** {@inheritDoc BrokerAdmin.getDlqMessagesAfter} An id not of the form `dlq-<n>` is a `ValidationError`. */
  async getDlqMessagesAfter(afterMessageId: string, queue = DEFAULT_QUEUE, count = 100): Promise<DlqMessage[]> {
    const after = /^dlq-(\d{1,15})$/.exec(afterMessageId)?.[1];
    if (after === undefined) {
      throw new ValidationError(
        `DLQ message id ${JSON.stringify(afterMessageId.slice(0, 64))} is not a memory DLQ entry id (dlq-<n>, e.g. dlq-7)`,
      );
    }
    return this.#listDlq("getDlqMessagesAfter", queue, count, Number(after));
  }

  /** Up to `count` DLQ entries of `queue` with a sequence number above `afterSeq`, in order. */
  #listDlq(operation: string, queue: string, count: number, afterSeq: number): DlqMessage[] {
    dlqListCount(operation, count);
    const out: DlqMessage[] = [];
    for (const entry of this.queue(queue).dlq.values()) {
      if (out.length >= count) break;
      // entry ids are dlq-<seq>, added in sequence order
      if (afterSeq > 0 && Number(entry.entryId.slice(4)) <= afterSeq) continue;
      out.push(toDlqMessage(entry.entryId, { body: entry.message.body, error: entry.error, failedAt: entry.failedAt }));
    }
    return out;
  }

  /** {@inheritDoc BrokerAdmin.replayFromDlq} */
  async replayFromDlq(messageId: string, queue?: string, resetRetries = true): Promise<boolean> {
    const origin = this.#dlqIndex.get(messageId);
    const entry = origin === undefined ? undefined : this.queue(origin).dlq.get(messageId);
    if (origin === undefined || !entry) return false;
    // throws for a body that is not a message: the entry stays in the DLQ
    const body = rewriteForReplay(this.codec, entry.message.body, resetRetries, entry.error);
    return guardedReplay(this.replayGuard, entry.message.id, async () => {
      // checked again: a concurrent replay may have taken the entry while the guard read
      if (this.queue(origin).dlq.get(messageId) !== entry) return false;
      // another copy of the task id is live: two copies of one task id, refused (as on Redis, SQLite)
      if (this.isLive(queue ?? origin, entry.message.id)) throw replayRefusedError(messageId, entry.message.id);
      this.#removeDlq(origin, messageId);
      this.enqueue(queue ?? origin, entry.message.id, body, entry.message.priority, 0);
      return true;
    });
  }

  /** {@inheritDoc BrokerAdmin.deleteFromDlq} */
  async deleteFromDlq(messageId: string, _queue?: string): Promise<boolean> {
    const origin = this.#dlqIndex.get(messageId);
    if (origin === undefined) return false;
    this.#removeDlq(origin, messageId);
    return true;
  }

  /** {@inheritDoc BrokerAdmin.purgeDlq} */
  async purgeDlq(queue = DEFAULT_QUEUE): Promise<number> {
    const dlq = this.queue(queue).dlq;
    const count = dlq.size;
    for (const entryId of dlq.keys()) this.#dlqIndex.delete(entryId);
    dlq.clear();
    return count;
  }

  /** {@inheritDoc BrokerAdmin.getDlqCount} */
  async getDlqCount(queue = DEFAULT_QUEUE): Promise<number> {
    return this.queue(queue).dlq.size;
  }

  /** {@inheritDoc BrokerAdmin.getPendingCount} */
  async getPendingCount(queue = DEFAULT_QUEUE): Promise<number> {
    return this.queue(queue).pending.size;
  }

  /** {@inheritDoc BrokerAdmin.getQueueSize} */
  async getQueueSize(queue = DEFAULT_QUEUE): Promise<number> {
    const q = this.queue(queue);
    return q.ready.length + q.delayed.size;
  }

  /** {@inheritDoc BrokerAdmin.getConsumerCount} */
  async getConsumerCount(queue = DEFAULT_QUEUE): Promise<number> {
    return this.queue(queue).consumers.size;
  }

  /** {@inheritDoc BrokerAdmin.purgeQueue} */
  async purgeQueue(queue = DEFAULT_QUEUE): Promise<number> {
    const removed = this.queue(queue).purge();
    for (const message of removed) this.releaseId(queue, message.id);
    return removed.length;
  }

  /** {@inheritDoc BrokerAdmin.cleanupStaleClients} */
  async cleanupStaleClients(queue = DEFAULT_QUEUE, staleSeconds = DEFAULT_STALE_SECONDS): Promise<number> {
    const cutoff = Date.now() - staleMs(staleSeconds);
    const q = this.queue(queue);
    let removed = 0;
    for (const [consumerId, lastSeen] of q.consumers) {
      if (lastSeen < cutoff && !q.hasPendingOf(consumerId)) {
        q.consumers.delete(consumerId);
        removed++;
      }
    }
    return removed;
  }

  #removeDlq(queue: string, entryId: string): void {
    this.queue(queue).dlq.delete(entryId);
    this.#dlqIndex.delete(entryId);
  }
}

/** The key of a live message: queue names cannot hold a NUL. */
function liveKey(queue: string, id: string): string {
  return `${queue}\u0000${id}`;
}

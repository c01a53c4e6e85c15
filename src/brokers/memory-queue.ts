/**
 * The state of one queue of the {@link MemoryBroker}: ready messages ordered by priority
 * then arrival, delayed messages, deliveries in flight and dead letters. Synchronous, so
 * every operation is atomic within the process.
 * @module
 */

/** A message held by the memory broker. */
export interface MemoryMessage {
  /** Task id from {@link OutgoingMessage.id}. */
  readonly id: string;
  /** Raw body. */
  readonly body: string;
  /** Priority (higher first); 0 when none was given. */
  readonly priority: number;
  /** Arrival order among equal priorities. */
  seq: number;
  /** Deliveries so far. */
  deliveryCount: number;
  /** Due time (epoch ms) while delayed. */
  dueAt?: number | undefined;
}

/** A message handed to a consumer and not yet settled. */
export interface MemoryPending {
  /** The message handed out. */
  readonly message: MemoryMessage;
  /** The consumer holding it. */
  readonly consumerId: string;
  /** Set once the owning consumer closed: the lease runs out at this time (epoch ms). */
  expiresAt?: number;
}

/** A dead-lettered message of the memory broker. */
export interface MemoryDlqEntry {
  /** The DLQ entry id (`dlq-<sequence number>`). */
  readonly entryId: string;
  /** The dead-lettered message. */
  readonly message: MemoryMessage;
  /** Why it was dead-lettered. */
  readonly error: string;
  /** When it was dead-lettered (epoch ms). */
  readonly failedAt: number;
}

/** One queue's messages. */
export class MemoryQueue {
  /** Ready messages, priority descending then `seq` ascending. */
  readonly ready: MemoryMessage[] = [];
  /** Delayed messages (each has `dueAt`). */
  readonly delayed = new Set<MemoryMessage>();
  /** In-flight deliveries by delivery id. */
  readonly pending = new Map<string, MemoryPending>();
  /** Dead letters by entry id, oldest first. */
  readonly dlq = new Map<string, MemoryDlqEntry>();
  /** Consumers registered on this queue with the time they last fetched (epoch ms). */
  readonly consumers = new Map<string, number>();

  /** Inserts a ready message at its place (binary search on priority, then seq). */
  pushReady(message: MemoryMessage): void {
    let low = 0;
    let high = this.ready.length;
    while (low < high) {
      const mid = (low + high) >>> 1;
      const other = this.ready[mid] as MemoryMessage;
      const before =
        other.priority > message.priority || (other.priority === message.priority && other.seq < message.seq);
      if (before) low = mid + 1;
      else high = mid;
    }
    this.ready.splice(low, 0, message);
  }

  /** Removes and returns up to `max` ready messages, best first. */
  takeReady(max: number): MemoryMessage[] {
    return this.ready.splice(0, Math.max(0, max));
  }

  /** Moves delayed messages due at `now` to ready; returns how many moved. */
  promoteDue(now: number, nextSeq: () => number): number {
    let moved = 0;
    for (const message of this.delayed) {
      if ((message.dueAt ?? 0) <= now) {
        this.delayed.delete(message);
        message.dueAt = undefined;
        message.seq = nextSeq();
        this.pushReady(message);
        moved++;
      }
    }
    return moved;
  }

  /** Returns expired leases (of closed consumers) to ready; returns how many. */
  reclaimExpired(now: number): number {
    let moved = 0;
    for (const [deliveryId, entry] of this.pending) {
      if (entry.expiresAt !== undefined && entry.expiresAt <= now) {
        this.pending.delete(deliveryId);
        this.pushReady(entry.message);
        moved++;
      }
    }
    return moved;
  }

  /** Earliest due time of a delayed message or lease expiry, or undefined. */
  nextDueAt(): number | undefined {
    let next: number | undefined;
    for (const message of this.delayed) {
      if (message.dueAt !== undefined && (next === undefined || message.dueAt < next)) next = message.dueAt;
    }
    for (const entry of this.pending.values()) {
      if (entry.expiresAt !== undefined && (next === undefined || entry.expiresAt < next)) next = entry.expiresAt;
    }
    return next;
  }

  /** True when `consumerId` holds a delivery of this queue. */
  hasPendingOf(consumerId: string): boolean {
    for (const entry of this.pending.values()) if (entry.consumerId === consumerId) return true;
    return false;
  }

  /** Deletes every waiting (ready and delayed) message; returns them. */
  purge(): MemoryMessage[] {
    const removed = [...this.ready.splice(0), ...this.delayed];
    this.delayed.clear();
    return removed;
  }
}

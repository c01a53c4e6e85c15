/**
 * The in-process broker, for tests and single-process apps. Everything lives in this
 * process's memory: nothing is durable and other processes cannot share it.
 *
 * Semantics (the broker contract, `test/contract/broker-contract.ts`): FIFO per queue among
 * equal priorities (higher priority first); delayed messages by timers that are unref'd and
 * stopped on `disconnect`; a delivery belongs to its consumer until settled, its lease being
 * renewed implicitly while the consumer is open; once the consumer closes, unsettled
 * deliveries become available again after `claimMinIdleMs` with `deliveryCount + 1`.
 * `fetch` waits on an internal event (no polling).
 * @module
 */
import { MessageCodec, peekMessage } from "../core/message.js";
import { timerDelay } from "../core/sleep.js";
import { BrokerConnectionError } from "../errors.js";
import type {
  Broker,
  BrokerBinding,
  BrokerCapabilities,
  Consumer,
  ConsumerOptions,
  HealthStatus,
  OutgoingMessage,
  PublishResult,
} from "./broker.js";
import { MemoryAdmin } from "./memory-admin.js";
import { MemoryConsumer, type MemoryConsumerHost, MemoryDelivery, type MemorySettler } from "./memory-consumer.js";
import type { MemoryMessage } from "./memory-queue.js";

/** Options of {@link MemoryBroker}. */
export interface MemoryBrokerOptions {
  /** Milliseconds after which a closed consumer's unsettled delivery is redelivered (default 30000). */
  claimMinIdleMs?: number | undefined;
}

/**
 * A broker held in this process's memory.
 * @example
 * ```ts
 * const app = new Chicory({ broker: new MemoryBroker(), backend: new MemoryBackend() });
 * ```
 */
export class MemoryBroker extends MemoryAdmin implements Broker {
  /** Always `"memory"`. */
  readonly kind = "memory";
  /** Everything but durability and several processes. */
  readonly capabilities: BrokerCapabilities = {
    priorities: true,
    delayedDelivery: true,
    uniqueIds: true,
    durable: false,
    multiProcess: false,
  };
  /** Always `"memory://"`. */
  readonly displayUrl = "memory://";
  /** Lease time of a closed consumer's deliveries, in milliseconds. */
  readonly claimMinIdleMs: number;
  #isConnected = false;
  #timer: NodeJS.Timeout | undefined;
  #timerDueAt = 0;
  readonly #readyWaiters = new Set<() => void>();
  #deliverySeq = 0;
  /** What consumers and deliveries call back into (kept off the public surface). */
  readonly #host: MemoryConsumerHost & MemorySettler = {
    assertConnected: () => this.#assertConnected(),
    touch: (queues, consumerId) => this.#touch(queues, consumerId),
    forget: (queues, consumerId) => this.#forget(queues, consumerId),
    take: (queues, max, consumerId) => this.#take(queues, max, consumerId),
    waitForReady: () => this.#waitForReady(),
    expireLeases: (queues, consumerId) => this.#expireLeases(queues, consumerId),
    ack: (queue, deliveryId) => this.#ack(queue, deliveryId),
    retry: (queue, deliveryId, body, delayMs) => this.#retry(queue, deliveryId, body, delayMs),
    deadLetter: (queue, deliveryId, error) => this.#deadLetter(queue, deliveryId, error),
    release: (queue, deliveryId, countDelivery) => this.#release(queue, deliveryId, countDelivery),
  };

  constructor(options: MemoryBrokerOptions = {}) {
    super(new MessageCodec());
    this.claimMinIdleMs = Math.max(0, options.claimMinIdleMs ?? 30_000);
  }

  /** Uses the app's codec for DLQ replay rewrites. */
  bind(binding: BrokerBinding): void {
    this.codec = binding.codec;
    this.replayGuard = binding.guardReplay;
  }

  /** Marks the broker connected and re-arms timers of delayed messages; idempotent. */
  async connect(): Promise<void> {
    if (this.#isConnected) return;
    this.#isConnected = true;
    this.#wake();
  }

  /** Stops timers and wakes waiting fetches; messages stay in memory. Idempotent. */
  async disconnect(): Promise<void> {
    if (!this.#isConnected) return;
    this.#isConnected = false;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#notifyReady();
  }

  /** Publishes to `queue` (delayed by `delayMs`, idempotent by id with `unique`). */
  async publish(queue: string, message: OutgoingMessage): Promise<PublishResult> {
    this.#assertConnected();
    if (message.unique && this.isLive(queue, message.id)) return { published: false };
    this.enqueue(queue, message.id, message.body, message.priority ?? 0, message.delayMs ?? 0);
    return { published: true };
  }

  /** A consumer of `options.queues`. */
  consumer(options: ConsumerOptions): Consumer {
    return new MemoryConsumer(this.#host, options.queues, options.consumerId);
  }

  /** Connected state (no I/O). */
  async healthcheck(): Promise<HealthStatus> {
    return this.#isConnected
      ? { connected: true, latencyMs: 0 }
      : { connected: false, error: "memory broker is not connected" };
  }

  #assertConnected(): void {
    if (!this.#isConnected) throw new BrokerConnectionError("memory broker is not connected: call connect() first");
  }

  #touch(queues: readonly string[], consumerId: string): void {
    const now = Date.now();
    for (const name of queues) this.queue(name).consumers.set(consumerId, now);
  }

  #forget(queues: readonly string[], consumerId: string): void {
    for (const name of queues) this.queue(name).consumers.delete(consumerId);
  }

  #take(queues: readonly string[], max: number, consumerId: string): MemoryDelivery[] {
    const out: MemoryDelivery[] = [];
    for (const name of queues) {
      if (out.length >= max) break;
      const queue = this.queue(name);
      for (const message of queue.takeReady(max - out.length)) {
        message.deliveryCount++;
        const deliveryId = `${name}:${++this.#deliverySeq}`;
        queue.pending.set(deliveryId, { message, consumerId });
        out.push(new MemoryDelivery(this.#host, name, deliveryId, message));
      }
    }
    return out;
  }

  #waitForReady(): { promise: Promise<void>; dispose(): void } {
    let resolve: () => void = () => {};
    const promise = new Promise<void>((r) => {
      resolve = r;
    });
    this.#readyWaiters.add(resolve);
    return { promise, dispose: () => this.#readyWaiters.delete(resolve) };
  }

  #expireLeases(queues: readonly string[], consumerId: string): void {
    const expiresAt = Date.now() + this.claimMinIdleMs;
    for (const name of queues) {
      for (const entry of this.queue(name).pending.values()) {
        if (entry.consumerId === consumerId) entry.expiresAt = expiresAt;
      }
    }
    this.#wake();
  }

  #ack(queue: string, deliveryId: string): void {
    const entry = this.#takePending(queue, deliveryId);
    if (entry) this.releaseId(queue, entry.id);
  }

  #retry(queue: string, deliveryId: string, body: string, delayMs: number): void {
    const entry = this.#takePending(queue, deliveryId);
    if (!entry) return;
    this.releaseId(queue, entry.id);
    this.enqueue(queue, entry.id, body, entry.priority, delayMs);
  }

  /** Writes an already acknowledged message into `queue`'s DLQ. */
  async writeDeadLetter(queue: string, body: string, error: string): Promise<void> {
    this.#assertConnected();
    const id = peekMessage(body)?.id;
    const message: MemoryMessage = {
      id: typeof id === "string" ? id : "",
      body,
      priority: 0,
      seq: this.nextSeq(),
      deliveryCount: 1,
    };
    this.addDeadLetter(queue, message, error);
  }

  #deadLetter(queue: string, deliveryId: string, error: string): void {
    const entry = this.#takePending(queue, deliveryId);
    if (!entry) return;
    this.releaseId(queue, entry.id);
    this.addDeadLetter(queue, entry, error);
  }

  #release(queue: string, deliveryId: string, countDelivery: boolean): void {
    const entry = this.#takePending(queue, deliveryId);
    if (!entry) return;
    if (!countDelivery) entry.deliveryCount = Math.max(0, entry.deliveryCount - 1);
    this.queue(queue).pushReady(entry);
    this.#notifyReady();
  }

  /** Adds a message to `queue`, ready now or after `delayMs`. */
  protected override enqueue(queue: string, id: string, body: string, priority: number, delayMs: number): void {
    const message: MemoryMessage = { id, body, priority, seq: this.nextSeq(), deliveryCount: 0 };
    this.retainId(queue, id);
    if (delayMs > 0) {
      message.dueAt = Date.now() + delayMs;
      this.queue(queue).delayed.add(message);
      this.#wake();
    } else {
      this.queue(queue).pushReady(message);
      this.#notifyReady();
    }
  }

  #takePending(queue: string, deliveryId: string): MemoryMessage | undefined {
    const pending = this.queue(queue).pending;
    const entry = pending.get(deliveryId);
    if (!entry) return undefined;
    pending.delete(deliveryId);
    return entry.message;
  }

  #notifyReady(): void {
    const waiters = [...this.#readyWaiters];
    this.#readyWaiters.clear();
    for (const resolve of waiters) resolve();
  }

  /** Moves due messages and expired leases to ready, then arms one timer for the next due time. */
  #wake(): void {
    if (!this.#isConnected) return;
    const now = Date.now();
    let moved = 0;
    let next: number | undefined;
    for (const queue of this.queues.values()) {
      moved += queue.promoteDue(now, () => this.nextSeq()) + queue.reclaimExpired(now);
      const due = queue.nextDueAt();
      if (due !== undefined && (next === undefined || due < next)) next = due;
    }
    if (moved > 0) this.#notifyReady();
    if (next === undefined) {
      if (this.#timer !== undefined) clearTimeout(this.#timer);
      this.#timer = undefined;
      return;
    }
    if (this.#timer !== undefined && this.#timerDueAt <= next) return;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timerDueAt = next;
    this.#timer = setTimeout(
      () => {
        this.#timer = undefined;
        this.#wake();
      },
      timerDelay(next - now), // a delay of weeks: woken at Node's timer limit, then armed again
    );
    this.#timer.unref();
  }
}

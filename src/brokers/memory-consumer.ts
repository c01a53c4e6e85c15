/**
 * Consumer and delivery of the {@link MemoryBroker}. A fetch waits on the broker's
 * "message ready" event (no polling); a delivery settles itself exactly once.
 * @module
 */
import type { Consumer, Delivery, ReleaseOptions } from "./broker.js";
import type { MemoryMessage } from "./memory-queue.js";

/** What the consumer needs from its broker. */
export interface MemoryConsumerHost {
  /** Registers `consumerId` as a live consumer of `queues` (refreshing its last-seen time). */
  touch(queues: readonly string[], consumerId: string): void;
  /** Moves up to `max` ready messages of `queues` (in order) to pending for `consumerId`. */
  take(queues: readonly string[], max: number, consumerId: string): MemoryDelivery[];
  /** Resolves when a message may be ready or the broker disconnects; `dispose` cancels the wait. */
  waitForReady(queues: readonly string[]): { promise: Promise<void>; dispose(): void };
  /** Starts the lease countdown of every delivery `consumerId` holds on `queues`. */
  expireLeases(queues: readonly string[], consumerId: string): void;
  /** Unregisters `consumerId` from `queues`. */
  forget(queues: readonly string[], consumerId: string): void;
  /** Throws when the broker is not connected. */
  assertConnected(): void;
}

/** Longest single wait of a fetch before it returns `[]` (the caller calls again). */
const MAX_WAIT_MS = 5000;

/** A pull consumer of the memory broker. */
export class MemoryConsumer implements Consumer {
  readonly #host: MemoryConsumerHost;
  readonly #queues: readonly string[];
  readonly #consumerId: string;
  readonly #deliveries = new Set<Delivery>();
  #isClosed = false;

  constructor(host: MemoryConsumerHost, queues: readonly string[], consumerId: string) {
    this.#host = host;
    this.#queues = [...queues];
    this.#consumerId = consumerId;
    host.touch(this.#queues, consumerId);
  }

  /** Deliveries handed out and not yet settled. */
  get inFlight(): number {
    return this.#deliveries.size;
  }

  /** Waits for messages (event-driven) and returns at most `max`; `[]` on abort or close. */
  async fetch(max: number, signal: AbortSignal): Promise<Delivery[]> {
    if (this.#isClosed || signal.aborted || max <= 0) return [];
    this.#host.assertConnected();
    const deadline = Date.now() + MAX_WAIT_MS;
    for (;;) {
      this.#host.touch(this.#queues, this.#consumerId);
      const taken = this.#host.take(this.#queues, max, this.#consumerId);
      if (taken.length > 0) {
        for (const delivery of taken) {
          this.#deliveries.add(delivery);
          delivery.attach((settled) => this.#deliveries.delete(settled));
        }
        return taken;
      }
      const left = deadline - Date.now();
      if (left <= 0 || signal.aborted || this.#isClosed) return [];
      await this.#waitOnce(signal, left);
      if (signal.aborted || this.#isClosed) return [];
      this.#host.assertConnected();
    }
  }

  /** Stops this consumer; its unsettled deliveries are redelivered after `claimMinIdle`. */
  async close(): Promise<void> {
    if (this.#isClosed) return;
    this.#isClosed = true;
    this.#host.expireLeases(this.#queues, this.#consumerId);
    this.#host.forget(this.#queues, this.#consumerId);
  }

  async #waitOnce(signal: AbortSignal, timeoutMs: number): Promise<void> {
    const ready = this.#host.waitForReady(this.#queues);
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    const stop = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
      onAbort = resolve;
      signal.addEventListener("abort", onAbort, { once: true });
    });
    try {
      await Promise.race([ready.promise, stop]);
    } finally {
      ready.dispose();
      clearTimeout(timer);
      if (onAbort) signal.removeEventListener("abort", onAbort);
    }
  }
}

/** The settle actions a delivery performs through its broker (each a no-op when not pending). */
export interface MemorySettler {
  ack(queue: string, deliveryId: string): void;
  retry(queue: string, deliveryId: string, body: string, delayMs: number): void;
  deadLetter(queue: string, deliveryId: string, error: string): void;
  release(queue: string, deliveryId: string, countDelivery: boolean): void;
}

/** One delivery of the memory broker; only the first settle call takes effect. */
export class MemoryDelivery implements Delivery {
  readonly queue: string;
  readonly deliveryId: string;
  readonly body: string;
  readonly deliveryCount: number;
  /** {@inheritDoc Delivery.messageKey} (the queue and the message's sequence number) */
  readonly messageKey: string;
  readonly #settler: MemorySettler;
  #onSettled: ((delivery: Delivery) => void) | undefined;
  #isSettled = false;

  constructor(settler: MemorySettler, queue: string, deliveryId: string, message: MemoryMessage) {
    this.#settler = settler;
    this.queue = queue;
    this.deliveryId = deliveryId;
    this.body = message.body;
    this.deliveryCount = message.deliveryCount;
    this.messageKey = `${queue}:${message.seq}`;
  }

  /** Links the delivery to the consumer that counts it in `inFlight`. */
  attach(onSettled: (delivery: Delivery) => void): void {
    this.#onSettled = onSettled;
  }

  async ack(): Promise<void> {
    if (this.#settle()) this.#settler.ack(this.queue, this.deliveryId);
  }

  async retry(body: string, delayMs: number): Promise<void> {
    if (this.#settle()) this.#settler.retry(this.queue, this.deliveryId, body, delayMs);
  }

  async deadLetter(error: string): Promise<void> {
    if (this.#settle()) this.#settler.deadLetter(this.queue, this.deliveryId, error);
  }

  async release(options?: ReleaseOptions): Promise<void> {
    if (this.#settle()) this.#settler.release(this.queue, this.deliveryId, options?.countDelivery === true);
  }

  #settle(): boolean {
    if (this.#isSettled) return false;
    this.#isSettled = true;
    this.#onSettled?.(this);
    return true;
  }
}

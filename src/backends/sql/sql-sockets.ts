/**
 * The sockets under a SQL backend's pool, so that a connection a stalled database holds can be
 * closed instead of kept for ever.
 *
 * An operation abandoned after `queryTimeout` leaves its connection waiting for an answer that
 * may never come (a half-open link after a NAT or firewall dropped it, a frozen server). The
 * pool would keep that connection checked out, or queue the next statement behind it, and
 * ending the pool would wait for a goodbye that never comes. So each dialect reports the socket
 * of every connection an operation checks out ({@link holdSocket}), the backend destroys those
 * of an operation it gives up on ({@link SqlOperation.abandon}), and the driver then fails the
 * statement and its pool discards the connection. {@link OpenSockets} bounds the pool's close
 * the same way.
 * @module
 */

import { AsyncLocalStorage } from "node:async_hooks";
import { settlesWithin } from "../../core/sleep.js";

/** A connection's socket, as far as it is closed here (a `net.Socket` or `tls.TLSSocket`). */
export interface SocketLike {
  /** Closes the socket at once. */
  destroy(): void;
  /** True once the socket is closed (then it is not noted). */
  readonly destroyed?: boolean;
  /** Listens for the socket's close (it is then no longer open). */
  once(event: "close", listener: () => void): unknown;
}

/** The sockets one backend operation holds. */
export class SqlOperation {
  readonly #held = new Set<SocketLike>();
  #isAbandoned = false;

  /**
   * Whether the backend gave up on this operation. A connection it gets from the pool after
   * that has sent nothing yet: the dialect gives it back and fails the checkout with
   * {@link AbandonedCheckout} (destroying it would cost a new connection per operation that
   * timed out waiting for the pool, a storm of them when a stalled database comes back).
   */
  get isAbandoned(): boolean {
    return this.#isAbandoned;
  }

  /** Notes `socket` as checked out by this operation; returns what to call when it is released. */
  hold(socket: SocketLike): () => void {
    if (this.#isAbandoned) {
      // Not reached through the dialects, which check isAbandoned first.
      socket.destroy();
      return noop;
    }
    this.#held.add(socket);
    return () => this.#held.delete(socket);
  }

  /** Destroys the sockets still held, and any checked out later by this operation. */
  abandon(): void {
    this.#isAbandoned = true;
    for (const socket of this.#held) socket.destroy();
    this.#held.clear();
  }

  /** Runs `fn` as this operation: checkouts made within it are held by it. */
  run<T>(fn: () => Promise<T>): Promise<T> {
    return current.run(this, fn);
  }
}

/** A checkout that completed after the backend gave up on its operation (nobody sees it). */
export class AbandonedCheckout extends Error {
  override readonly name = "AbandonedCheckout";
  constructor() {
    super("the operation was given up on (queryTimeout) before it got a connection");
  }
}

const current = new AsyncLocalStorage<SqlOperation>();

function noop(): void {}

/**
 * Holds `socket` for the operation that asked for the connection (`operation`, read with
 * {@link currentOperation} when the checkout began); returns what to call when it is released.
 */
export function holdSocket(operation: SqlOperation | undefined, socket: SocketLike | undefined): () => void {
  if (operation === undefined || socket === undefined) return noop;
  return operation.hold(socket);
}

/**
 * Makes the next `release()` of a checked-out `connection` call `letGo` first. The wrapper lasts
 * one checkout: at release the connection's own `release` is put back as it was (pg-pool gives
 * each checkout its own; mysql2's is on the prototype), so wrappers never pile up.
 */
export function onRelease<C extends { release(...args: never[]): unknown }>(connection: C, letGo: () => void): C {
  const before = Object.getOwnPropertyDescriptor(connection, "release");
  const release = connection.release;
  Object.defineProperty(connection, "release", {
    configurable: true,
    writable: true,
    value: function releaseHeld(...args: never[]) {
      letGo();
      if (before) Object.defineProperty(connection, "release", before);
      else delete (connection as Partial<C>).release;
      return release.apply(connection, args);
    },
  });
  return connection;
}

/**
 * A connection the pool handed to `operation` (read with {@link currentOperation} when the
 * checkout began): given back with {@link AbandonedCheckout} thrown when the backend gave up on
 * the operation meanwhile, else returned with `socket` held by the operation until released.
 */
export function adoptCheckout<C extends { release(...args: never[]): unknown }>(
  operation: SqlOperation | undefined,
  connection: C,
  socket: SocketLike | undefined,
): C {
  if (operation?.isAbandoned) {
    connection.release();
    throw new AbandonedCheckout();
  }
  return onRelease(connection, holdSocket(operation, socket));
}

/** The operation running now, if any (read it synchronously when a checkout begins). */
export function currentOperation(): SqlOperation | undefined {
  return current.getStore();
}

/**
 * How long closing a pool waits for the database to say goodbye before it closes the sockets:
 * 5 s, or `queryTimeoutMs` if shorter (and not 0).
 */
export function closeGraceMs(queryTimeoutMs: number): number {
  return cappedByQueryTimeout(5_000, queryTimeoutMs);
}

/** `ms`, or `queryTimeoutMs` if shorter (and not 0: no limit). */
export function cappedByQueryTimeout(ms: number, queryTimeoutMs: number): number {
  return queryTimeoutMs > 0 ? Math.min(queryTimeoutMs, ms) : ms;
}

/** How long a pool's close may still take once its sockets were destroyed. */
const AFTER_DESTROY_MS = 1_000;

/** Every open socket of one pool, to close a pool the database no longer answers. */
export class OpenSockets {
  readonly #open = new Set<SocketLike>();

  /** Notes a new connection's socket (until it closes). */
  add(socket: SocketLike | undefined): void {
    if (socket === undefined || socket.destroyed === true || this.#open.has(socket)) return;
    this.#open.add(socket);
    socket.once("close", () => this.#open.delete(socket));
  }

  /** How many are open. */
  get size(): number {
    return this.#open.size;
  }

  /**
   * Waits for `ending` (the pool's own close) and then for the sockets to close, all within
   * `graceMs`; then destroys every socket still open (and waits for `ending` at most
   * {@link AFTER_DESTROY_MS} more: the driver fails what ran on them). Never rejects.
   */
  async close(ending: Promise<unknown>, graceMs: number): Promise<void> {
    const deadline = performance.now() + graceMs;
    const left = () => Math.max(0, deadline - performance.now());
    const settled = ending.then(
      () => true,
      () => true,
    );
    if (!(await settlesWithin(settled, left()))) {
      this.#destroyAll();
      await settlesWithin(settled, AFTER_DESTROY_MS);
    }
    if (this.#open.size > 0) {
      const closed = Promise.all(
        [...this.#open].map((socket) => new Promise<void>((r) => socket.once("close", () => r()))),
      );
      if (!(await settlesWithin(closed, left()))) this.#destroyAll();
    }
  }

  #destroyAll(): void {
    for (const socket of this.#open) socket.destroy();
    this.#open.clear();
  }
}

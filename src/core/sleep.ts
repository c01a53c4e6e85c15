import { offAbort, onAbort } from "./abort-fanout.js";

/**
 * Longest delay a Node.js timer supports (about 24.8 days); a longer one fires after 1 ms.
 * Timers fed from user durations go through {@link timerDelay}.
 */
export const MAX_TIMER_MS = 2_147_483_647;

/** `ms` clamped to what `setTimeout` honours (0 .. {@link MAX_TIMER_MS}). */
export function timerDelay(ms: number): number {
  return Number.isFinite(ms) ? Math.min(Math.max(0, ms), MAX_TIMER_MS) : MAX_TIMER_MS;
}

/**
 * A timer for a delay of any length: one past {@link MAX_TIMER_MS} (a wait's timeout of weeks)
 * is armed again in steps of at most that, where a plain `setTimeout` would fire after 1 ms.
 * Calls `fire(arg)` once the whole delay has passed, unless {@link LongTimeout.clear}ed first.
 */
export class LongTimeout<T> {
  #timer: NodeJS.Timeout;
  #leftMs = 0;
  readonly #fire: (arg: T) => void;
  readonly #arg: T;

  constructor(fire: (arg: T) => void, ms: number, arg: T) {
    this.#fire = fire;
    this.#arg = arg;
    this.#timer = this.#arm(ms);
  }

  /** Stops the timer (idempotent). */
  clear(): void {
    clearTimeout(this.#timer);
  }

  #arm(ms: number): NodeJS.Timeout {
    const step = timerDelay(ms);
    this.#leftMs = ms - step;
    return setTimeout(LongTimeout.#tick<T>, step, this);
  }

  static #tick<U>(timeout: LongTimeout<U>): void {
    if (timeout.#leftMs > 0) timeout.#timer = timeout.#arm(timeout.#leftMs);
    else timeout.#fire(timeout.#arg);
  }
}

/** Resolves after `ms`, or at once when `signal` aborts; leaves no listener behind. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const onAbort = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, timerDelay(ms));
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** Resolves in the next turn of the event loop (after its I/O callbacks). */
export function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Resolves true when `promise` settles within `ms` (`Infinity`: no limit) and before `signal`
 * aborts, false otherwise (its rejection rejects). The promise goes on (a later rejection is
 * swallowed): only the caller stops waiting. Leaves no timer or listener behind.
 */
export function settlesWithin(promise: Promise<unknown>, ms: number, signal?: AbortSignal): Promise<boolean> {
  return new Promise<boolean>((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    const done = () => {
      clearTimeout(timer);
      if (signal) offAbort(signal, giveUp);
    };
    const giveUp = () => {
      done();
      resolve(false);
    };
    promise.then(
      () => {
        done();
        resolve(true);
      },
      (error: unknown) => {
        done();
        reject(error);
      },
    );
    if (signal?.aborted) return giveUp();
    if (ms !== Number.POSITIVE_INFINITY) timer = setTimeout(giveUp, timerDelay(ms));
    // shared per signal: a caller's signal may be given to many waits at once
    if (signal) onAbort(signal, giveUp);
  });
}

/** The error {@link withinDeadline} rejects with. */
export class DeadlinePassed extends Error {
  constructor(ms: number) {
    super(`no answer within ${ms} ms`);
    this.name = "DeadlinePassed";
  }
}

/**
 * `promise`, or a rejection with {@link DeadlinePassed} once `ms` pass first. The promise goes
 * on (its later rejection is swallowed): only the caller stops waiting.
 */
export async function withinDeadline<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new DeadlinePassed(ms)), timerDelay(ms));
  });
  try {
    return await Promise.race([promise, deadline]);
  } catch (error) {
    if (error instanceof DeadlinePassed) promise.catch(() => undefined);
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Abort listeners shared per signal: one real `"abort"` listener on an `AbortSignal`, however
 * many waits listen through it. A caller's signal given to many waits at once (a request's
 * signal passed to a hundred `get()`s) would otherwise pass Node's limit of listeners per event
 * target and print a `MaxListenersExceededWarning` (a leak warning where nothing leaks).
 * @module
 */

/** A listener: a function or an object with `handleEvent` (no closure needed). */
export type AbortListener = (() => void) | { handleEvent(): void };

interface Fanout {
  readonly listeners: Set<AbortListener>;
  readonly fire: () => void;
}

const fanouts = new WeakMap<AbortSignal, Fanout>();

/**
 * Calls `listener` once when `signal` aborts (not when it has already: check `signal.aborted`
 * first), until {@link offAbort} removes it. Listeners run in the order added; one that throws
 * does not keep the others from running (its error is reported as an uncaught one, as an
 * event listener's is).
 */
export function onAbort(signal: AbortSignal, listener: AbortListener): void {
  let fanout = fanouts.get(signal);
  if (fanout === undefined) {
    const listeners = new Set<AbortListener>();
    const fire = () => {
      fanouts.delete(signal);
      for (const l of listeners) {
        try {
          if (typeof l === "function") l();
          else l.handleEvent();
        } catch (error) {
          queueMicrotask(() => {
            throw error;
          });
        }
      }
      listeners.clear();
    };
    fanout = { listeners, fire };
    fanouts.set(signal, fanout);
    signal.addEventListener("abort", fire, { once: true });
  }
  fanout.listeners.add(listener);
}

/** Removes `listener` (a no-op when it is not there); the signal's own listener goes with the last. */
export function offAbort(signal: AbortSignal, listener: AbortListener): void {
  const fanout = fanouts.get(signal);
  if (fanout === undefined || !fanout.listeners.delete(listener) || fanout.listeners.size > 0) return;
  fanouts.delete(signal);
  signal.removeEventListener("abort", fanout.fire);
}

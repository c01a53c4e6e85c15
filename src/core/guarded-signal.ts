/**
 * Guards the abort listeners of a task's `ctx.signal`: Node reports an error thrown by an
 * `EventTarget` listener (or a promise it returned that rejects) as an uncaught exception, which
 * would end the worker's process, and with it the other jobs running in it.
 * @module
 */
import { isThenable } from "./thenable.js";

const addListener = EventTarget.prototype.addEventListener;
const removeListener = EventTarget.prototype.removeEventListener;

/** What `addEventListener` takes: a function, or an object with a `handleEvent` method. */
type Listener = ((event: Event) => unknown) | { handleEvent(event: Event): unknown };

/**
 * Makes the listeners added to `signal` from now on (`addEventListener`, `onabort`, and so
 * whatever a library adds through them: `events.addAbortListener`, `fetch`) hand what they
 * throw, or what a promise they return rejects with, to `report` instead of letting it escape
 * as an uncaught exception. Listeners run as before otherwise (same `this`, same options,
 * removable with the function or object that was added). Signals derived from `signal`
 * (`AbortSignal.any`, `AbortSignal.timeout`) are separate targets: their listeners are not
 * guarded, nor is a listener added through `EventTarget.prototype.addEventListener.call`.
 * What `report` throws is dropped.
 */
export function guardListeners(signal: AbortSignal, report: (error: unknown) => void): void {
  const safeReport = (error: unknown): void => {
    try {
      report(error);
    } catch {
      // a report that throws must not become the uncaught exception the guard is for
    }
  };
  // One wrapper per listener, so that adding it twice adds it once and removing it finds it.
  const wrappers = new WeakMap<object, (this: unknown, event: Event) => void>();
  const wrap = (listener: Listener): ((this: unknown, event: Event) => void) => {
    let wrapper = wrappers.get(listener);
    if (wrapper === undefined) {
      wrapper = function guarded(this: unknown, event: Event): void {
        try {
          const result: unknown =
            typeof listener === "function" ? listener.call(this, event) : listener.handleEvent(event);
          if (isThenable(result)) result.then(undefined, safeReport);
        } catch (error) {
          safeReport(error);
        }
      };
      wrappers.set(listener, wrapper);
    }
    return wrapper;
  };
  const isListener = (listener: unknown): listener is Listener =>
    typeof listener === "function" || (typeof listener === "object" && listener !== null);
  Object.defineProperties(signal, {
    addEventListener: {
      configurable: true,
      writable: true,
      value(this: AbortSignal, type: string, listener: unknown, options?: unknown): void {
        // anything else goes as it is, for Node's own checks and messages
        const callback = isListener(listener) ? wrap(listener) : listener;
        Reflect.apply(addListener, this, [type, callback, options]);
      },
    },
    removeEventListener: {
      configurable: true,
      writable: true,
      value(this: AbortSignal, type: string, listener: unknown, options?: unknown): void {
        const callback = isListener(listener) ? (wrappers.get(listener) ?? listener) : listener;
        Reflect.apply(removeListener, this, [type, callback, options]);
      },
    },
  });
}

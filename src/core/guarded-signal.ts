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
type Listener = ((event: Event) => unknown) | { handleEvent?: (event: Event) => unknown };

/** A guarded signal's report (which never throws), and its listeners' wrappers (one per listener). */
interface Guard {
  readonly report: (error: unknown) => void;
  readonly wrappers: WeakMap<object, (this: unknown, event: Event) => void>;
}

const guards = new WeakMap<object, Guard>();

function isListener(listener: unknown): listener is Listener {
  return typeof listener === "function" || (typeof listener === "object" && listener !== null);
}

/** The wrapper of `listener` on the signal `guard` is for (made once, so that removal finds it). */
function wrapperOf(guard: Guard, listener: Listener): (this: unknown, event: Event) => void {
  let wrapper = guard.wrappers.get(listener);
  if (wrapper === undefined) {
    const { report } = guard;
    wrapper = function guarded(this: unknown, event: Event): void {
      try {
        let result: unknown;
        if (typeof listener === "function") result = Reflect.apply(listener, this, [event]);
        else {
          const handle: unknown = listener.handleEvent;
          if (!handle) return; // (none: ignored, as Node ignores it)
          if (typeof handle !== "function") throw new TypeError("the listener's handleEvent is not a function");
          result = Reflect.apply(handle, listener, [event]);
        }
        if (isThenable(result)) result.then(undefined, report);
      } catch (error) {
        report(error);
      }
    };
    guard.wrappers.set(listener, wrapper);
  }
  return wrapper;
}

/**
 * The prototype of a guarded signal: `AbortSignal.prototype` with `addEventListener` and
 * `removeEventListener` that wrap the listener. One for every guarded signal, so that they
 * share their shape.
 */
const guardedPrototype: object = Object.create(AbortSignal.prototype, {
  addEventListener: {
    configurable: true,
    writable: true,
    value(this: AbortSignal, type: string, listener: unknown, options?: unknown): void {
      const guard = guards.get(this);
      // anything else goes as it is, for Node's own checks and messages
      const callback = guard !== undefined && isListener(listener) ? wrapperOf(guard, listener) : listener;
      Reflect.apply(addListener, this, [type, callback, options]);
    },
  },
  removeEventListener: {
    configurable: true,
    writable: true,
    value(this: AbortSignal, type: string, listener: unknown, options?: unknown): void {
      const wrapper = isListener(listener) ? guards.get(this)?.wrappers.get(listener) : undefined;
      Reflect.apply(removeListener, this, [type, wrapper ?? listener, options]);
    },
  },
});

/**
 * Makes the listeners added to `signal` from now on (`addEventListener`, `onabort`, and so
 * whatever a library adds through them: `events.addAbortListener`, `fetch`) hand what they
 * throw, or what a promise they return rejects with, to `report` instead of letting it escape
 * as an uncaught exception. Listeners run as before otherwise (same `this`, same options,
 * removable with the function or object that was added; an object without `handleEvent` is
 * ignored). Signals derived from `signal` (`AbortSignal.any`, `AbortSignal.timeout`) are
 * separate targets: their listeners are not guarded, nor is a listener added through
 * `EventTarget.prototype.addEventListener.call`, nor one `events.addAbortListener` adds after
 * the signal aborted (Node then runs it from a microtask, not through the signal). What
 * `report` throws is dropped. A signal guarded already keeps its first report. Only a native
 * signal (whose prototype is `AbortSignal.prototype`) is guarded: a stand-in of another class
 * keeps its own methods. Visible difference: `events.getEventListeners(signal, "abort")` lists
 * the wrappers, not the listeners added.
 */
export function guardListeners(signal: AbortSignal, report: (error: unknown) => void): void {
  if (guards.has(signal) || Object.getPrototypeOf(signal) !== AbortSignal.prototype) return;
  const safeReport = (error: unknown): void => {
    try {
      report(error);
    } catch {
      // a report that throws must not become the uncaught exception the guard is for
    }
  };
  guards.set(signal, { report: safeReport, wrappers: new WeakMap() });
  Object.setPrototypeOf(signal, guardedPrototype);
}

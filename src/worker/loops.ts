/**
 * Background loops of a worker (heartbeat, cleanup): cancellable, awaited on stop, with
 * optional jitter, and never keeping the process alive on their own.
 * @module
 */
import { timerDelay } from "../core/sleep.js";

/** A running loop. */
export interface Loop {
  /** Stops the loop and waits for a running iteration to finish. */
  stop(): Promise<void>;
}

/** Options of {@link startLoop}. */
export interface LoopOptions {
  /** Milliseconds between the end of one iteration and the start of the next. */
  readonly intervalMs: number;
  /** Relative jitter applied to each interval, e.g. 0.15 for ±15 %. */
  readonly jitter?: number;
  /** Run once immediately (default false). */
  readonly runFirst?: boolean;
  /** Milliseconds (jittered too) before the first iteration, when not `runFirst`; default `intervalMs`. */
  readonly firstDelayMs?: number;
  /** Called with an iteration's error; the loop goes on. */
  readonly onError: (error: unknown) => void;
  /** Randomness (tests). */
  readonly random?: () => number;
}

/** Milliseconds of one jittered interval. */
export function jitteredInterval(intervalMs: number, jitter: number, random: () => number = Math.random): number {
  return Math.max(1, intervalMs * (1 - jitter + 2 * jitter * random()));
}

/** Starts `body` every `intervalMs` (jittered) until stopped. */
export function startLoop(body: () => Promise<void>, options: LoopOptions): Loop {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();

  const schedule = (delayMs: number) => {
    if (stopped) return;
    timer = setTimeout(tick, timerDelay(delayMs));
    timer.unref();
  };
  const tick = () => {
    running = body()
      .catch(options.onError)
      .finally(() => schedule(jitteredInterval(options.intervalMs, options.jitter ?? 0, options.random)));
  };
  if (options.runFirst) tick();
  else schedule(jitteredInterval(options.firstDelayMs ?? options.intervalMs, options.jitter ?? 0, options.random));

  return {
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      await running;
    },
  };
}

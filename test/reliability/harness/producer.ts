/**
 * The in-process producer: dispatches jobs through the real API (`task.delay`) and records the
 * outcome of every enqueue. Only CONFIRMED ids (delay() resolved) enter the books.
 */
import type { Task } from "../../../src/task.js";
import { sleep } from "./wait.js";

/** What the producer saw. */
export interface ProducerLedger {
  /** Task ids whose enqueue was confirmed, in order. */
  readonly confirmed: string[];
  /** Enqueues that rejected (error messages). */
  readonly failed: string[];
}

/** Options of {@link produce}. */
export interface ProduceOptions {
  /** Jobs to dispatch. */
  readonly count: number;
  /** The task's argument (ms of simulated work) for job `i`. */
  readonly ms: (i: number) => number;
  /** Concurrent dispatches (default 50). */
  readonly batch?: number;
  /** Upper bound on the rate, jobs/s (default: none). */
  readonly ratePerSecond?: number;
  /** Stop early when aborted. */
  readonly signal?: AbortSignal;
}

/** Creates an empty producer ledger. */
export function newProducerLedger(): ProducerLedger {
  return { confirmed: [], failed: [] };
}

/** Dispatches `count` jobs of `task`, recording each outcome in `ledger`. */
export async function produce(
  task: Task<[number], number>,
  ledger: ProducerLedger,
  options: ProduceOptions,
): Promise<void> {
  const batch = options.batch ?? 50;
  const started = Date.now();
  for (let i = 0; i < options.count; i += batch) {
    if (options.signal?.aborted) return;
    const n = Math.min(batch, options.count - i);
    await Promise.all(
      Array.from({ length: n }, async (_, k) => {
        try {
          const result = await task.delay(options.ms(i + k));
          ledger.confirmed.push(result.taskId);
        } catch (error) {
          ledger.failed.push(String(error));
        }
      }),
    );
    if (options.ratePerSecond) {
      const dueAt = started + ((i + n) / options.ratePerSecond) * 1000;
      const wait = dueAt - Date.now();
      if (wait > 0) await sleep(wait);
    }
  }
}

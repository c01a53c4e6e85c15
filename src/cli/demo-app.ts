/**
 * The app `chicory demo` runs: a few example tasks showing a plain task, a slow one, one that
 * fails twice and then succeeds through its retry policy, and one that always fails and ends
 * in the dead-letter queue.
 * @module
 */
import { Chicory } from "../app.js";
import type { TaskContext } from "../context.js";
import { sleep } from "../core/sleep.js";

/** The error the demo's payment task always raises. */
export class CardDeclinedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CardDeclinedError";
  }
}

/** Builds the demo app on `broker` (and `backend`, default: the broker's location). */
export function createDemoApp(options: { broker: string; backend?: string | undefined }) {
  const app = new Chicory({
    broker: options.broker,
    ...(options.backend === undefined ? {} : { backend: options.backend }),
  });

  const add = app.task({ name: "add" }, async (a: number, b: number) => a + b);

  const slowSquare = app.task({ name: "slow_square" }, async (x: number) => {
    await sleep(300);
    return x * x;
  });

  const flakyFetch = app.task(
    { name: "flaky_fetch", context: true, retryPolicy: { maxRetries: 3, retryDelay: 0.2, jitter: false } },
    async (ctx: TaskContext, url: string) => {
      if (ctx.retries < 2) throw new Error(`connection reset by ${url} (attempt ${ctx.retries + 1})`);
      return { url, status: 200, attempts: ctx.retries + 1 };
    },
  );

  const chargeCard = app.task(
    { name: "charge_card", retryPolicy: { maxRetries: 1, retryDelay: 0.2, jitter: false } },
    async (card: string, amount: number): Promise<{ charged: number }> => {
      throw new CardDeclinedError(`card ${card.slice(-4).padStart(card.length, "*")} declined for ${amount}`);
    },
  );

  return { app, tasks: { add, slowSquare, flakyFetch, chargeCard } };
}

/**
 * Waiting helpers of the reliability harness: poll a condition with a deadline (used where no
 * event exists), and a seeded random source so a failing schedule can be replayed.
 */

/** Options of {@link waitUntil}. */
export interface WaitOptions {
  /** Give up after this many ms (throws). */
  readonly timeoutMs: number;
  /** Pause between probes (default 50 ms). */
  readonly intervalMs?: number;
  /** What is awaited, for the error message. */
  readonly what: string;
}

/** Polls `probe` until it returns a value other than undefined/false; throws after the timeout. */
export async function waitUntil<T>(
  probe: () => Promise<T | undefined | false> | T | undefined | false,
  options: WaitOptions,
): Promise<T> {
  const deadline = Date.now() + options.timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${options.timeoutMs} ms waiting for ${options.what}`);
    await sleep(options.intervalMs ?? 50);
  }
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A seeded PRNG (mulberry32) in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The seed of this run: `CHICORY_RELIABILITY_SEED`, else random (always printed by the tests). */
export function runSeed(): number {
  const fromEnv = Number(process.env.CHICORY_RELIABILITY_SEED);
  return Number.isSafeInteger(fromEnv) && fromEnv > 0 ? fromEnv : Math.floor(Math.random() * 2 ** 31) + 1;
}

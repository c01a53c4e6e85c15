/**
 * Publishes through a Redis Cluster that is moving: while a primary fails over (`CLUSTERDOWN`,
 * then `MOVED` to a node that is gone) or a queue's slot migrates (`TRYAGAIN`), an ioredis
 * `Cluster` retries a command for about 16 redirections × 100 ms by default and then fails
 * with "Too many Cluster redirections" — about 1.5 s, where a failover takes seconds. A publish
 * call names its own receipt key, so the same call sent again is applied once (a copy that
 * finds the receipt answers as the first did): it is sent again, with a growing pause, until
 * the caller's time limit, which then decides the answer.
 * @module
 */
import { sleep } from "../core/sleep.js";

/** First pause before sending a call again, ms (doubled each time, up to {@link MAX_PAUSE_MS}). */
const FIRST_PAUSE_MS = 100;
/** Longest pause between two sends, ms. */
const MAX_PAUSE_MS = 1000;

/**
 * True for the errors of a Cluster in transition: no primary for a slot yet (`CLUSTERDOWN`), a
 * slot migrating (`TRYAGAIN`), or an ioredis `Cluster` that ran out of redirections meanwhile.
 * A single-node client never gets them.
 */
export function isClusterMoving(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  return /^(CLUSTERDOWN|TRYAGAIN)\b|Too many Cluster redirections/.test(error.message);
}

/**
 * Runs `send` and sends it again while it fails with {@link isClusterMoving} and `untilMs`
 * (`performance.now()` time) has not passed. `send` must be safe to apply twice (a publish
 * call with its receipt key): a copy that failed with "Too many Cluster redirections" may have
 * been applied by an earlier redirection.
 */
export async function resendWhileClusterMoves<T>(send: () => Promise<T>, untilMs: number): Promise<T> {
  let pauseMs = FIRST_PAUSE_MS;
  for (;;) {
    try {
      return await send();
    } catch (error) {
      const leftMs = untilMs - performance.now();
      if (!isClusterMoving(error) || leftMs <= 0) throw error;
      await sleep(Math.min(pauseMs, leftMs));
      pauseMs = Math.min(pauseMs * 2, MAX_PAUSE_MS);
    }
  }
}

/**
 * Moves the delayed jobs this process scheduled (retries its workers settle, countdowns it
 * publishes) into their stream when they fall due. The workers' own movers check the delayed
 * set at the next due time they know of, and at least every second for entries others add:
 * without this, a 100 ms retry or countdown could wait for that recheck, up to a second. The
 * move script's `XADD` wakes the workers blocked on the stream, so the job starts on time.
 *
 * Best effort and bounded: delays up to {@link HORIZON_MS}, at most {@link MAX_DUE_PER_QUEUE}
 * due times per queue, one timer per queue (unref'd: it never holds the process open), due
 * times less than {@link COALESCE_MS} apart served by one wake-up. A wake-up moves what is due
 * in batches of {@link MOVE_BATCH} (one bounded script call each, one after the other): while a
 * call moves a full batch and this process has jobs due that may still be in the set, the next
 * call follows at once, so a burst due at one moment is in its stream after one wake-up (not a
 * batch now and the rest at the workers' next recheck, up to a second later). The move script
 * judges "due" by Redis's clock and moves an entry once whoever runs it, so a wake-up moves
 * nothing ahead of Redis's clock: one that served due times up to {@link COALESCE_MS} ahead
 * (the publishes of a burst answered a few ms apart), or whose timer fired a little early,
 * and finds Redis still holding an entry due within {@link COALESCE_MS}, wakes again when
 * Redis says it is due, for every due time it served and did not move (so a burst served
 * ahead is moved whole then, not one batch of it). A failed call leaves the job to the
 * workers' recheck.
 * @module
 */
import type { Logger } from "../../core/logger.js";
import { type RedisClientLike, runScript } from "../../redis/redis-client.js";
import type { QueueKeys } from "./redis-keys.js";

/** Longest delay this process moves itself; later ones are left to the workers' recheck. */
const HORIZON_MS = 60_000;
/** Most due times kept per queue (beyond, the workers' recheck serves them). */
const MAX_DUE_PER_QUEUE = 10_000;
/** Due times this close after the one a timer fires for are served by the same call. */
const COALESCE_MS = 5;
/** Delayed entries moved per script call (here and by the workers' mover). */
export const MOVE_BATCH = 500;
/**
 * Bytes of bodies after which one move call stops (at least one entry moves): 500 bodies of up
 * to the 1 MiB message limit would hold Redis for a second or more in one script.
 */
export const MOVE_BYTES = 2 * 1024 * 1024;

/**
 * True when a move-delayed.lua reply says the call stopped at one of its bounds (entries or
 * bytes) with entries due still: it moved some, and the earliest left is due by Redis's clock.
 */
export function moreDue(reply: readonly [unknown, unknown, unknown, unknown]): boolean {
  const next = Number(reply[1]);
  return Number(reply[0]) > 0 && next >= 0 && next <= Number(reply[2]);
}

interface QueueDue {
  readonly keys: QueueKeys;
  /** Due times (performance.now() ms), ascending. */
  readonly due: number[];
  timer: NodeJS.Timeout | undefined;
  /** When `timer` fires. */
  timerAt: number;
}

/** The delayed jobs of one broker instance, moved when due (see the module's comment). */
export class DueMover {
  readonly #main: RedisClientLike;
  readonly #logger: Logger;
  readonly #queues = new Map<string, QueueDue>();
  #closed = false;

  constructor(main: RedisClientLike, logger: Logger) {
    this.#main = main;
    this.#logger = logger;
  }

  /**
   * Notes a delayed job of `keys`'s queue that Redis has accepted `delayMs` from now (call it
   * once the script that added it has answered: Redis's due time then lies before ours).
   */
  schedule(keys: QueueKeys, delayMs: number): void {
    if (this.#closed || !(delayMs > 0) || delayMs > HORIZON_MS) return;
    let q = this.#queues.get(keys.delayed);
    if (q === undefined) {
      q = { keys, due: [], timer: undefined, timerAt: Number.POSITIVE_INFINITY };
      this.#queues.set(keys.delayed, q);
    }
    if (q.due.length >= MAX_DUE_PER_QUEUE) return;
    insertDue(q, performance.now() + delayMs + 1); // +1: setTimeout and Redis round to whole ms
    this.#arm(q);
  }

  /** Stops every timer; later calls to {@link DueMover.schedule} do nothing. */
  close(): void {
    this.#closed = true;
    for (const q of this.#queues.values()) clearTimeout(q.timer);
    this.#queues.clear();
  }

  #arm(q: QueueDue): void {
    const next = q.due[0];
    if (next === undefined) {
      if (q.timer === undefined) this.#queues.delete(q.keys.delayed);
      return;
    }
    if (q.timer !== undefined) {
      if (q.timerAt <= next) return;
      clearTimeout(q.timer);
    }
    q.timerAt = next;
    q.timer = setTimeout(() => this.#fire(q), Math.max(0, Math.ceil(next - performance.now())));
    q.timer.unref();
  }

  #fire(q: QueueDue): void {
    q.timer = undefined;
    q.timerAt = Number.POSITIVE_INFINITY;
    const now = performance.now();
    const until = now + COALESCE_MS;
    let served = 0;
    while (served < q.due.length && (q.due[served] as number) <= until) served++;
    const latest = q.due[served - 1] ?? now;
    q.due.splice(0, served);
    void this.#move(q, served, latest > now ? latest : undefined).then(() => {
      if (!this.#closed) this.#arm(q);
    });
  }

  /**
   * Moves the due entries of `q`, a batch per call, while a call moves a full batch and fewer
   * than `served` (this wake-up's due times) have moved: at most `served / MOVE_BATCH + 1`
   * calls. `ahead`: the latest due time served that lay ahead of the wake-up. If Redis still
   * holds an entry due within {@link COALESCE_MS} and this wake-up served due times it did not
   * move (or served one ahead of it), those due times are noted again, no earlier than `ahead`
   * and than Redis's next due time (one more wake-up, which moves them all).
   * Never throws: a failure is left to the workers' recheck.
   */
  async #move(q: QueueDue, served: number, ahead: number | undefined): Promise<void> {
    const { delayed, delayedData, stream, unique } = q.keys;
    try {
      let left = served;
      let dropped = 0;
      let reply: [number, string, number, number];
      do {
        reply = (await runScript(
          this.#main,
          "chicoryMoveDelayed",
          [delayed, delayedData, stream, unique],
          [MOVE_BATCH, MOVE_BYTES],
        )) as [number, string, number, number];
        left -= reply[0];
        dropped += Number(reply[3]);
      } while (moreDue(reply) && left > 0 && !this.#closed);
      if (dropped > 0) warnDropped(this.#logger, q.keys.queue, dropped);
      // Redis holds an entry due within COALESCE_MS: this wake-up ran before it by Redis's clock
      // (see the module's comment).
      const nextDue = Number(reply[1]); // -1: none left
      const untilNext = nextDue - reply[2];
      if ((left > 0 || ahead !== undefined) && nextDue >= 0 && untilNext <= COALESCE_MS) {
        const at = Math.max(ahead ?? 0, performance.now() + Math.max(0, untilNext) + 1);
        insertDue(q, at, Math.min(Math.max(1, left), MAX_DUE_PER_QUEUE - q.due.length));
      }
    } catch (error) {
      // the workers' recheck moves it instead
      this.#logger.debug(
        { queue: q.keys.queue, err: error instanceof Error ? error.message : String(error) },
        "redis: could not move a due delayed job",
      );
    }
  }
}

/**
 * Says that `dropped` due delayed jobs of `queue` had no stored body (`move-delayed.lua` drops
 * them): this process's due mover and the workers' both moved them.
 */
export function warnDropped(logger: Logger, queue: string, dropped: number): void {
  logger.warn({ queue, dropped }, "due delayed jobs had no stored body (restored or edited data?) and were dropped");
}

/**
 * Inserts due time `at`, `count` times, into `q.due` (ascending: most calls append, later due
 * times come later).
 */
function insertDue(q: QueueDue, at: number, count = 1): void {
  if (count <= 0) return;
  let i = q.due.length;
  while (i > 0 && (q.due[i - 1] as number) > at) i--;
  if (count === 1) q.due.splice(i, 0, at);
  else q.due.splice(i, 0, ...new Array<number>(count).fill(at));
}

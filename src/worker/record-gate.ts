/**
 * Backpressure while a worker's result backend cannot store records (RELIABILITY D1). When a
 * record write fails and is tried again, the gate probes the backend (`healthcheck()`, a second
 * after each answer, while any write is being tried again or the backend was found away):
 * - while the backend does not answer (or until the first probe answers), the worker fetches
 *   no new message (a fetch under way is ended: `onClose`): the jobs it holds wait for the
 *   backend instead of more jobs running whose results could not be stored either; once a
 *   probe finds it not answering, the consumer's read-ahead is given back (`onPause`);
 * - while it does not answer, a write whose backoff schedule is spent keeps being tried every
 *   15 s: an unacknowledged job is held (its lease renewed by the broker's consumer), not given
 *   back to run again; an acknowledged one's (`at_most_once`) record waits too; a rejected
 *   message's record is not held (see `executor.ts`);
 * - once it answers again, fetching resumes and the waiting writes are tried at once (each
 *   with its whole schedule again). Fetching stays paused, and the probes go on, until then,
 *   even when no write waits any more (a rejected message's record, not held, given up).
 * A probe not answered within 5 s counts as "down" (a database that stopped answering on an open
 * connection: its own `queryTimeout` may be a minute); the next probe waits for its answer up
 * to 30 s more. The pause is logged (error) each time the backend is found not answering, and
 * the resumption (info) when it answers again.
 * A backend that answers its probe while a write keeps failing (a record it refuses, a write
 * permission missing, a full disk) pauses fetching only until that probe's answer: the failure
 * is the record's, and the write gives up after its schedule as before. But a write the server
 * refuses for a state of its own that ends by itself (`BackendConnectionError.isRefused`:
 * a Redis out of memory, a read-only replica) is held as for a backend that does not answer
 * (its probe, a `PING`, answers all the same): fetching stays paused while any write's last
 * try was so refused, logged (error) once as it begins, and the first such write stored again
 * wakes the others, and fetching resumes once none is refused (info).
 * @module
 */
import type { Logger } from "../core/logger.js";
import { settlesWithin, sleep, timerDelay } from "../core/sleep.js";

/** Options of a {@link RecordGate}. */
export interface RecordGateOptions {
  /**
   * Called each time a probe finds the backend not answering while it was not known so (the
   * worker gives back what its consumer read ahead): not for a write that fails while the
   * backend answers, nor before the first probe's answer.
   */
  readonly onPause?: () => void;
  /** Called when the gate closes (a write fails while it was open): the worker ends a fetch under way. */
  readonly onClose?: () => void;
  /** Milliseconds from a probe's answer to the next probe while records fail (default 1000; tests). */
  readonly everyMs?: number;
  /** A probe without an answer within this many milliseconds counts as "down" (default 5000; tests). */
  readonly timeoutMs?: number;
}

/** A write's part in the gate, from {@link RecordGate.begin} to {@link RecordGate.end}. */
export interface HeldWrite {
  /** The gate's epoch when the write began: one that began before a {@link RecordGate.stop} counts no more. */
  readonly epoch: number;
  /** True while its last try was refused by the server's state ({@link RecordGate.tried}). */
  refusing: boolean;
}

/** What the gate knows of the backend while records fail. */
type BackendState = "unknown" | "down" | "up";

/** See module doc. One per worker. */
export class RecordGate {
  readonly #probe: () => Promise<boolean>;
  readonly #logger: Logger;
  readonly #probeEveryMs: number;
  readonly #probeTimeoutMs: number;
  readonly #onPause: (() => void) | undefined;
  readonly #onClose: (() => void) | undefined;
  /** Incremented by {@link RecordGate.stop}: the writes begun before count no more. */
  #epoch = 0;
  /** Record writes being tried again now. */
  #failing = 0;
  #state: BackendState = "unknown";
  /** Writes whose last try the server refused for a state of its own (see module doc). */
  #refusing = 0;
  /** True from the refusals' logged beginning until their end is logged (or none is left). */
  #isRefusalLogged = false;
  #refusedAtMs = 0;
  /** Stops the probe loop that runs (null: none runs). */
  #probes: AbortController | null = null;
  /** Pending {@link RecordGate.whenOpen} calls. */
  readonly #onOpen = new Set<() => void>();
  /** Pending {@link RecordGate.pause} calls: woken when the backend answers again. */
  readonly #onBack = new Set<() => void>();
  #pausedAtMs = 0;

  /**
   * @param probe resolves true when the backend answers (never rejects).
   * @param logger where the pause and the resumption are logged.
   */
  constructor(probe: () => Promise<boolean>, logger: Logger, options: RecordGateOptions = {}) {
    this.#probe = probe;
    this.#logger = logger;
    this.#onPause = options.onPause;
    this.#onClose = options.onClose;
    this.#probeEveryMs = options.everyMs ?? 1000;
    this.#probeTimeoutMs = options.timeoutMs ?? 5000;
  }

  /**
   * True while the worker must not fetch: the last probe found the backend not answering, or
   * records are failing and no probe has answered yet.
   */
  get closed(): boolean {
    return this.#state === "down" || (this.#failing > 0 && this.#state === "unknown") || this.#refusing > 0;
  }

  /** True when the last probe found the backend not answering (while records fail, or since). */
  get backendDown(): boolean {
    return this.#state === "down";
  }

  /** Record writes being tried again now. */
  get failing(): number {
    return this.#failing;
  }

  /** A record write failed and is tried again: pass the answer to {@link RecordGate.end} once it ends. */
  begin(): HeldWrite {
    const wasClosed = this.closed;
    this.#failing++;
    if (this.#probes === null) {
      this.#state = "unknown";
      this.#probes = new AbortController();
      void this.#probeLoop(this.#probes.signal);
    }
    if (!wasClosed) this.#onClose?.();
    return { epoch: this.#epoch, refusing: false };
  }

  /**
   * A try of `write` failed: `isRefused` when the server refused it for a state of its own that
   * ends by itself (see module doc); `error` is logged when that begins the gate's refusals.
   */
  tried(write: HeldWrite, isRefused: boolean, error: string): void {
    if (write.epoch !== this.#epoch || write.refusing === isRefused) return;
    write.refusing = isRefused;
    if (!isRefused) {
      this.#refusing--;
      if (this.#refusing === 0) this.#isRefusalLogged = false; // (another failure now: not "taken")
      this.#open();
      return;
    }
    this.#refusing++;
    if (this.#isRefusalLogged) return;
    this.#isRefusalLogged = true;
    this.#refusedAtMs = performance.now();
    this.#logger.error(
      { failingRecords: this.#failing, err: error },
      "the result backend refuses writes for now: fetching paused, the jobs held wait for it (not run again)",
    );
    this.#onPause?.();
  }

  /**
   * A write begun with {@link RecordGate.begin} ended: `stored`, `givenUp` (its job given back,
   * or a rejected message's record dropped), or `stopped` (a forced stop of the worker).
   */
  end(write: HeldWrite, how: "stored" | "givenUp" | "stopped"): void {
    if (write.epoch !== this.#epoch) return;
    if (write.refusing) {
      write.refusing = false;
      this.#refusing--;
      // the server took one: the others held try now; fetching resumes once none is refused
      if (how === "stored") this.#wakePauses();
      if (this.#refusing === 0 && this.#isRefusalLogged) {
        this.#isRefusalLogged = false;
        if (how === "stored") {
          this.#logger.info(
            { failingRecords: this.#failing - 1, pausedMs: Math.round(performance.now() - this.#refusedAtMs) },
            "the result backend takes writes again: fetching resumes, the records held are stored",
          );
        }
      }
    }
    this.#failing--;
    if (this.#failing > 0) {
      this.#open(); // (when this was the last write refused and a probe has answered)
      return;
    }
    // Given up (a rejected message's record) while the backend does not answer: the gate stays
    // closed, the probes go on, until one answers.
    if (this.#state === "down" && how === "givenUp") return;
    if (this.#state === "down" && how === "stored") this.#logResumed(); // before a probe saw the backend back
    this.#reset();
  }

  /**
   * The worker stopped (its outcomes settled or given up): no more probes, and the writes that
   * began before count no more (a later start begins with the gate open).
   */
  stop(): void {
    this.#epoch++;
    this.#failing = 0;
    this.#refusing = 0;
    this.#isRefusalLogged = false;
    this.#reset();
  }

  /** Resolves once the gate is open, or when `signal` aborts. */
  whenOpen(signal: AbortSignal): Promise<void> {
    if (!this.closed || signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        signal.removeEventListener("abort", done);
        this.#onOpen.delete(done);
        resolve();
      };
      signal.addEventListener("abort", done, { once: true });
      this.#onOpen.add(done);
    });
  }

  /** Resolves after `ms`, when `signal` aborts, or when the backend answers again, whichever is first. */
  pause(ms: number, signal: AbortSignal): Promise<void> {
    if (signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        this.#onBack.delete(done);
        resolve();
      };
      const timer = setTimeout(done, timerDelay(ms));
      signal.addEventListener("abort", done, { once: true });
      this.#onBack.add(done);
    });
  }

  #reset(): void {
    this.#state = "unknown";
    this.#probes?.abort();
    this.#probes = null;
    this.#open();
  }

  /**
   * Probes the backend a second after each answer until `signal` aborts. A probe without an
   * answer in time says "down"; its answer is then waited for a while before the next probe (a
   * database that does not answer would otherwise pile probes up, each holding a connection),
   * but not for ever: a probe stuck on a dead connection must not keep fetching paused once the
   * backend is back.
   */
  async #probeLoop(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      const answered = this.#probe().catch(() => false);
      const inTime = await settlesWithin(answered, this.#probeTimeoutMs, signal);
      if (signal.aborted) return;
      if (inTime) this.#found(await answered);
      else {
        this.#found(false);
        const late = await settlesWithin(answered, LATE_ANSWER_WAIT_MS, signal);
        if (signal.aborted) return;
        if (late && (await answered)) this.#found(true);
      }
      await sleep(this.#probeEveryMs, signal);
    }
  }

  /** A probe's answer: the state, the log lines of its changes, and who waits for an answer. */
  #found(answers: boolean): void {
    const before = this.#state;
    this.#state = answers ? "up" : "down";
    if (before !== "down" && !answers) {
      this.#pausedAtMs = performance.now();
      this.#logger.error(
        { failingRecords: this.#failing },
        "the result backend does not answer: fetching paused, the jobs held wait for it (not run again)",
      );
      this.#onPause?.();
    }
    if (!answers) return;
    if (before === "down") {
      this.#logResumed();
      // (only then: while it answers, the writes failing keep their own backoff)
      this.#wakePauses();
    }
    if (this.#failing === 0)
      this.#reset(); // no write waits any more: probing ends
    else this.#open();
  }

  #logResumed(): void {
    this.#logger.info(
      { failingRecords: this.#failing, pausedMs: Math.round(performance.now() - this.#pausedAtMs) },
      "the result backend answers again: fetching resumes, the records held are stored",
    );
  }

  #wakePauses(): void {
    for (const wake of [...this.#onBack]) wake();
  }

  #open(): void {
    if (this.closed) return;
    for (const done of [...this.#onOpen]) done();
  }
}

/** How long a probe's late answer is waited for before the next probe (see `#probeLoop`). */
const LATE_ANSWER_WAIT_MS = 30_000;

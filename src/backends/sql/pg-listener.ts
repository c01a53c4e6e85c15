/**
 * One LISTEN connection per process and database, shared by every PostgreSQL backend
 * instance (and so by all their waiters). Terminal writes run `pg_notify(channel, task_id)`
 * in the same statement; the payload is the stored (encoded) task id.
 *
 * The connection is opened on the first subscription and closed with the last. When it
 * fails (killed, server restart) it is recreated with exponential backoff (100 ms to 5 s)
 * and LISTENs again; subscribers are told when notifications stop and resume, so they poll
 * meanwhile and re-check every waiting id after the gap.
 *
 * A connection that stops answering without an error (a half-open link) is found by a
 * liveness probe (`PgListenSource.probe`) and replaced the same way.
 *
 * A lost or failing LISTEN connection is told at info level, once per run of failures (the
 * attempts after the first at debug), and so is its return: waits do not depend on it (they
 * poll meanwhile), and a database outage that they meet is warned of by the wait hub.
 * @module
 */
import type { Logger } from "../../core/logger.js";
import { DeadlinePassed, withinDeadline } from "../../core/sleep.js";
import type { PgListenClient, PgListenSource } from "./sql-types.js";

/** What a subscriber receives. */
export interface PgSubscriber {
  /** A notification on the channel. */
  onNotify(payload: string): void;
  /** Notifications started (true) or stopped (false) flowing. */
  onStatus(isListening: boolean): void;
}

const shared = new Map<string, PgSharedListener>();

/** Subscribes to `channel`; returns the function that unsubscribes. */
export function subscribePg(
  source: PgListenSource,
  channel: string,
  subscriber: PgSubscriber,
  logger: Logger,
): () => Promise<void> {
  const key = `${source.key}\0${channel}`;
  let listener = shared.get(key);
  if (!listener) {
    listener = new PgSharedListener(source, channel, logger, () => shared.delete(key));
    shared.set(key, listener);
  }
  listener.add(subscriber);
  const owner = listener;
  return () => owner.remove(subscriber);
}

class PgSharedListener {
  readonly #source: PgListenSource;
  readonly #channel: string;
  readonly #logger: Logger;
  readonly #onEmpty: () => void;
  readonly #subscribers = new Set<PgSubscriber>();
  #client: PgListenClient | undefined;
  #isListening = false;
  #isClosed = false;
  #backoffMs = 100;
  #retryTimer: NodeJS.Timeout | undefined;
  #probeTimer: NodeJS.Timeout | undefined;
  /** The connection was lost, or failed to open, since it last listened: told once. */
  #isFailing = false;
  /** Ends the opening of a connection under way (the last subscriber left meanwhile). */
  readonly #closing = new AbortController();

  constructor(source: PgListenSource, channel: string, logger: Logger, onEmpty: () => void) {
    this.#source = source;
    this.#channel = channel;
    this.#logger = logger;
    this.#onEmpty = onEmpty;
  }

  add(subscriber: PgSubscriber): void {
    this.#subscribers.add(subscriber);
    if (this.#isListening) subscriber.onStatus(true);
    if (this.#subscribers.size === 1 && !this.#client && !this.#retryTimer) void this.#open();
  }

  async remove(subscriber: PgSubscriber): Promise<void> {
    this.#subscribers.delete(subscriber);
    if (this.#subscribers.size > 0) return;
    this.#isClosed = true;
    this.#closing.abort();
    this.#onEmpty();
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    clearTimeout(this.#probeTimer);
    const client = this.#client;
    this.#client = undefined;
    this.#isListening = false;
    if (client) {
      client.removeAllListeners("notification");
      client.removeAllListeners("end");
      await client.end().catch(() => undefined);
    }
  }

  async #open(): Promise<void> {
    this.#retryTimer = undefined;
    if (this.#isClosed) return;
    let client: PgListenClient;
    try {
      client = await this.#source.connect(this.#closing.signal);
    } catch (error) {
      if (this.#isClosed) return;
      const fields = { err: error, retryInMs: this.#backoffMs };
      const message = "PostgreSQL LISTEN connection failed; retrying (waiters poll meanwhile)";
      if (this.#isFailing) this.#logger.debug(fields, message);
      else this.#logger.info(fields, message);
      this.#isFailing = true;
      this.#retryLater();
      return;
    }
    if (this.#isClosed) {
      await client.end().catch(() => undefined);
      return;
    }
    this.#client = client;
    let isLost = false;
    const lost = (error?: Error) => {
      if (isLost || this.#client !== client) return;
      isLost = true;
      clearTimeout(this.#probeTimer);
      this.#client = undefined;
      this.#setListening(false);
      client.removeAllListeners("notification");
      client.removeAllListeners("end");
      client.on("error", () => undefined);
      void client.end().catch(() => undefined);
      if (this.#isClosed) return;
      const fields = { err: error, retryInMs: this.#backoffMs };
      const message = "PostgreSQL LISTEN connection lost; reconnecting (waiters poll meanwhile)";
      if (this.#isFailing) this.#logger.debug(fields, message);
      else this.#logger.info(fields, message);
      this.#isFailing = true;
      this.#retryLater();
    };
    client.removeAllListeners("error");
    client.on("error", lost);
    client.on("end", () => lost());
    client.on("notification", (message) => {
      if (message.channel === this.#channel && message.payload !== undefined) {
        for (const s of this.#subscribers) s.onNotify(message.payload);
      }
    });
    try {
      await client.query(`listen "${this.#channel.replaceAll('"', '""')}"`);
    } catch (error) {
      lost(error as Error);
      return;
    }
    this.#backoffMs = 100;
    if (this.#isFailing) this.#logger.info("PostgreSQL LISTEN connection listens again");
    else this.#logger.debug("PostgreSQL LISTEN connection listening");
    this.#isFailing = false;
    this.#setListening(true);
    this.#probeLater(client, lost);
  }

  /** Runs the liveness probe of `client` after the interval, and again after each answer. */
  #probeLater(client: PgListenClient, lost: (error?: Error) => void): void {
    const probe = this.#source.probe;
    if (probe === undefined || this.#isClosed || this.#client !== client) return;
    this.#probeTimer = setTimeout(async () => {
      try {
        await withinDeadline(client.query("select 1"), probe.timeoutMs);
      } catch (error) {
        const silent = new Error(`no answer to a liveness probe within ${probe.timeoutMs / 1000} s`);
        lost(error instanceof DeadlinePassed ? silent : (error as Error));
        return;
      }
      this.#probeLater(client, lost);
    }, probe.intervalMs);
    this.#probeTimer.unref();
  }

  #setListening(isListening: boolean): void {
    if (this.#isListening === isListening) return;
    this.#isListening = isListening;
    for (const s of this.#subscribers) s.onStatus(isListening);
  }

  #retryLater(): void {
    if (this.#isClosed || this.#retryTimer) return;
    const delay = this.#backoffMs;
    this.#backoffMs = Math.min(this.#backoffMs * 2, 5000);
    this.#retryTimer = setTimeout(() => void this.#open(), delay);
    this.#retryTimer.unref();
  }
}

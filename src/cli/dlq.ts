/**
 * `chicory dlq list|count|replay|delete|purge <module>`: inspect and administer dead letters.
 * Without `--queue`, a command covers every queue the app knows (worker queues and task
 * queues); `replay`/`delete` look the entry up in each of them and refuse an id that several
 * of them hold.
 * @module
 */
import type { Command } from "commander";
import type { Chicory } from "../app.js";
import type { Broker, DlqMessage } from "../brokers/broker.js";
import { onStopSignals, signalExitCode } from "../core/signals.js";
import { settlesWithin } from "../core/sleep.js";
import { toError } from "../errors.js";
import { connectApp, connectBroker, targetQueues, withApp } from "./app-session.js";
import { purgeConfirmed, requireConfirmable } from "./confirm.js";
import { intAtLeast, withLogLevel, withQueues } from "./options.js";
import {
  CliFailure,
  CliUsageError,
  codeOf,
  EXIT_OK,
  errorLine,
  printInfo,
  printJson,
  printLine,
  printTable,
  truncate,
} from "./output.js";

type Run = (action: () => Promise<number>) => Promise<void>;

/** Options of the `chicory dlq` subcommands. */
export interface DlqCommandOptions {
  queue?: string[];
  json?: boolean;
  limit?: number;
  /** `list`: the entries after this entry id (one queue). */
  after?: string;
  all?: boolean;
  resetRetries?: boolean;
  /** `purge`: no question (required when stdin is not a terminal). */
  yes?: boolean;
}

/** A DLQ entry as printed by `dlq list --json`. */
export interface DlqEntryView {
  queue: string;
  messageId: string;
  taskName: string | null;
  taskId: string | null;
  args: unknown;
  retryCount: number;
  failedAt: string;
  error: string;
}

function view(queue: string, m: DlqMessage): DlqEntryView {
  const original = m.originalMessage;
  return {
    queue,
    messageId: m.messageId,
    taskName: typeof original?.name === "string" ? original.name : null,
    taskId: typeof original?.id === "string" ? original.id : null,
    args: original?.args ?? null,
    retryCount: m.retryCount,
    failedAt: m.failedAt.toISOString(),
    error: m.error,
  };
}

/**
 * Up to `limit` entries of each queue's DLQ, from its head or, with `after`, past that entry id
 * (one queue). What was left out is said on stderr, with the `--after` that lists on.
 */
async function listEntries(
  app: Chicory,
  queues: readonly string[],
  limit: number,
  after: string | undefined,
): Promise<DlqEntryView[]> {
  const broker = app.broker;
  const entries: DlqEntryView[] = [];
  for (const queue of queues) {
    // What was left out is said on stderr: the listing itself (and its JSON) stays as asked.
    let messages: DlqMessage[];
    if (after === undefined) {
      messages = await broker.getDlqMessages(queue, limit);
      const more = messages.length >= limit ? (await broker.getDlqCount(queue)) - messages.length : 0;
      const on = broker.getDlqMessagesAfter ? onFrom(messages) : "";
      if (more > 0) printInfo(`chicory: ${queue}: ${more} more dead letters not listed (raise --limit${on})`);
    } else {
      // one more than shown tells whether more follow
      messages = await readerAfter(broker)(after, queue, limit + 1);
      if (messages.length > limit) {
        messages = messages.slice(0, limit);
        printInfo(`chicory: ${queue}: more dead letters not listed (raise --limit${onFrom(messages)})`);
      }
    }
    for (const m of messages) entries.push(view(queue, m));
  }
  return entries;
}

/** The broker's `getDlqMessagesAfter`; a usage error when it has none (RabbitMQ). */
function readerAfter(broker: Broker): NonNullable<Broker["getDlqMessagesAfter"]> {
  const read = broker.getDlqMessagesAfter;
  if (!read) throw new CliUsageError(`dlq list --after: the ${broker.kind} broker cannot list a DLQ past an entry id`);
  return read.bind(broker);
}

/** `, or list on with --after <id>` for the last entry listed. */
function onFrom(listed: readonly DlqMessage[]): string {
  const last = listed.at(-1)?.messageId;
  return last === undefined ? "" : `, or list on with --after ${last}`;
}

async function list(spec: string, opts: DlqCommandOptions): Promise<number> {
  return withApp(spec, async ({ app }) => {
    // said first, before connecting: naming one queue would not help
    if (opts.after !== undefined) readerAfter(app.broker);
    await connectBroker(app);
    const queues = targetQueues(app, opts.queue);
    if (opts.after !== undefined && queues.length !== 1) {
      throw new CliUsageError(
        `dlq list --after: entry ids belong to one queue's DLQ; name it with -q (the app has ${queues.length}: ${queues.join(", ")})`,
      );
    }
    const entries = await listEntries(app, queues, opts.limit ?? 100, opts.after);
    if (opts.json) {
      printJson(entries);
      return EXIT_OK;
    }
    printTable(
      ["QUEUE", "MESSAGE ID", "TASK", "TASK ID", "RETRIES", "FAILED AT", "ERROR"],
      entries.map((e) => [
        e.queue,
        e.messageId,
        e.taskName ?? "?",
        e.taskId ?? "?",
        String(e.retryCount),
        e.failedAt,
        truncate(e.error, 80),
      ]),
      opts.after === undefined
        ? `no dead letters in ${queueNames(queues)} (another queue: name it with -q)`
        : `no dead letters after ${opts.after} in ${queueNames(queues)}`,
    );
    return EXIT_OK;
  });
}

async function count(spec: string, opts: DlqCommandOptions): Promise<number> {
  return withApp(spec, async ({ app }) => {
    await connectBroker(app);
    const queues = targetQueues(app, opts.queue);
    // no prototype: a queue may be named `__proto__`
    const counts: Record<string, number> = Object.create(null);
    for (const queue of queues) counts[queue] = await app.broker.getDlqCount(queue);
    if (opts.json) printJson(counts);
    else if (queues.length === 1) printLine(String(counts[queues[0] ?? ""] ?? 0));
    else {
      const total = Object.values(counts).reduce((a, b) => a + b, 0);
      printTable(
        ["QUEUE", "DLQ"],
        [...Object.entries(counts).map(([q, n]) => [q, String(n)]), ["total", String(total)]],
        "",
      );
    }
    return EXIT_OK;
  });
}

/** An entry `dlq replay --all` left in the DLQ, and why. */
interface LeftEntry {
  readonly queue: string;
  readonly messageId: string;
  readonly reason: string;
}

/** Errors about the entry itself (bad body, unique refusal): the entry is skipped, the rest replayed. */
function isEntryError(error: unknown): boolean {
  const code = codeOf(error);
  return code !== "BROKER_CONNECTION" && code !== "BACKEND_CONNECTION";
}

/**
 * Replays in flight at once: one replay is a few round trips (read the entry, the task's
 * record, move it, clear the record), so one at a time left the connection idle most of the
 * time. Within a window, entries may reach their queue out of DLQ order. A broker whose DLQ
 * operations run one after the other (`serialDlq`: RabbitMQ) gains nothing from a window, and
 * would queue a timeout each behind a failure (a backend down): one at a time there.
 */
function replayWindow(app: Chicory): number {
  return app.broker.capabilities.serialDlq === true ? 1 : 64;
}

/** New DLQ entries read per listing at most: a few windows' worth. */
const REPLAY_BATCH = 256;

/**
 * Bytes of bodies a listing should hold about: with large bodies (up to the 1 MiB message limit)
 * a listing reads fewer entries, as the last one's average body size says.
 */
const REPLAY_LISTING_BYTES = 32 * 1024 * 1024;

/**
 * How long replays under way are waited for once the command stops (a signal, a connection
 * failure): they take milliseconds, unless the server does not answer, and then the command
 * says so instead of hanging.
 */
const REPLAY_GRACE_MS = 5000;

/** What `dlq replay --all` did. */
interface ReplayOutcome {
  replayed: number;
  /** Entries it could not replay (they stay in the DLQ), in DLQ order. */
  readonly left: LeftEntry[];
  /** Entries replayed whose task's old failure record could not be deleted. */
  readonly recordsKept: LeftEntry[];
  /** Replays still under way when it stopped waiting for them (REPLAY_GRACE_MS after a stop). */
  unanswered: number;
  /** The connection failure that stopped it. */
  failure?: { readonly error: unknown };
}

/**
 * Replays the entries each queue's DLQ holds when it starts: at most that many, so entries
 * that die again while it runs (a task that still fails) are not replayed once more, and the
 * command ends. An entry that cannot be replayed (its body is not a valid message, another
 * copy of a unique task id is queued) stays in the DLQ and is reported, in DLQ order; the
 * others go on. Up to {@link replayWindow} replays run at once. A connection failure or
 * `stop` ends it once the replays under way have ended, or {@link REPLAY_GRACE_MS} later
 * (`unanswered` counts those it left).
 */
async function replayAll(
  app: Chicory,
  queues: readonly string[],
  resetRetries: boolean,
  stop: AbortSignal,
): Promise<ReplayOutcome> {
  const outcome: ReplayOutcome = { replayed: 0, left: [], recordsKept: [], unanswered: 0 };
  const halt = new AbortController(); // a stop, or a connection failure
  const onStop = () => halt.abort();
  stop.addEventListener("abort", onStop, { once: true });
  try {
    for (const queue of queues) {
      if (halt.signal.aborted || !(await replayQueue(app, queue, resetRetries, halt, outcome))) break;
    }
    return outcome;
  } catch (error) {
    // a count or listing that failed before any replay of the queue was under way
    if (outcome.failure === undefined) outcome.failure = { error };
    return outcome;
  } finally {
    stop.removeEventListener("abort", onStop);
  }
}

/**
 * {@link replayAll} for one queue: lanes take entries from listings read ahead (a listing is
 * read again once fewer than a window's worth are waiting). Each listing starts past the last
 * entry listed where the broker lists past an id (`getDlqMessagesAfter`), else it reads the
 * entries left behind and those taken again (they stay in the DLQ until moved), which is
 * quadratic in the entries left. Returns false when it stopped waiting for replays under way
 * (`outcome.unanswered`).
 */
async function replayQueue(
  app: Chicory,
  queue: string,
  resetRetries: boolean,
  halt: AbortController,
  outcome: ReplayOutcome,
): Promise<boolean> {
  const window = replayWindow(app);
  const budget = await app.broker.getDlqCount(queue);
  const taken = new Set<string>(); // listed, to be replayed once (at most `budget`)
  const waiting: string[] = []; // ids only: a listing's bodies are let go at once
  let batchSize = REPLAY_BATCH;
  const left: { index: number; entry: LeftEntry }[] = [];
  let isExhausted = false;
  let underWay = 0;
  let listing: Promise<void> | null = null;

  const broker = app.broker;
  let cursor: string | undefined; // the last entry listed, where the broker lists past an id
  const list = async (): Promise<void> => {
    // Entries left behind and those under way or waiting are still first in the DLQ: a broker
    // that lists past an id starts after the last one listed, the others read past them.
    const batch =
      cursor !== undefined && broker.getDlqMessagesAfter
        ? await broker.getDlqMessagesAfter(cursor, queue, batchSize)
        : await broker.getDlqMessages(queue, left.length + underWay + waiting.length + batchSize);
    cursor = batch.at(-1)?.messageId ?? cursor;
    const fresh = batch.filter((m) => !taken.has(m.messageId)).slice(0, budget - taken.size);
    if (fresh.length === 0) isExhausted = true;
    for (const m of fresh) {
      taken.add(m.messageId);
      waiting.push(m.messageId);
    }
    if (taken.size >= budget) isExhausted = true;
    if (batch.length > 0) {
      const averageBytes = batch.reduce((sum, m) => sum + m.body.length, 0) / batch.length;
      batchSize = Math.max(16, Math.min(REPLAY_BATCH, Math.floor(REPLAY_LISTING_BYTES / Math.max(averageBytes, 1))));
    }
  };
  const readAhead = (): Promise<void> => {
    listing ??= list()
      .catch((error: unknown) => {
        if (outcome.failure === undefined) outcome.failure = { error };
        halt.abort();
      })
      .finally(() => {
        listing = null;
      });
    return listing;
  };
  const take = async (): Promise<string | undefined> => {
    for (;;) {
      if (halt.signal.aborted) return undefined;
      if (waiting.length < window && !isExhausted) {
        const reading = readAhead();
        if (waiting.length === 0) await reading;
      }
      if (waiting.length > 0 || isExhausted) return waiting.shift();
    }
  };
  let order = 0;
  const lane = async (): Promise<void> => {
    for (let messageId = await take(); messageId !== undefined && !halt.signal.aborted; messageId = await take()) {
      const index = order++;
      underWay++;
      try {
        if (await app.broker.replayFromDlq(messageId, queue, resetRetries)) outcome.replayed++;
      } catch (error) {
        if (codeOf(error) === "REPLAY_RECORD_KEPT") {
          outcome.replayed++;
          outcome.recordsKept.push({ queue, messageId, reason: toError(error).message });
        } else if (isEntryError(error)) {
          left.push({ index, entry: { queue, messageId, reason: withoutApiHint(error) } });
        } else if (outcome.failure === undefined) {
          outcome.failure = { error };
          halt.abort();
        }
      } finally {
        underWay--;
      }
    }
  };
  const lanes = Promise.all(Array.from({ length: Math.min(window, Math.max(budget, 1)) }, lane));
  // until the lanes end, or a stop or failure halts them: then they get REPLAY_GRACE_MS more
  const halted = new Promise<void>((resolve) => halt.signal.addEventListener("abort", () => resolve(), { once: true }));
  await Promise.race([lanes, halted]);
  const hasEnded = !halt.signal.aborted || (await settlesWithin(lanes, REPLAY_GRACE_MS));
  left.sort((a, b) => a.index - b.index);
  for (const { entry } of left) outcome.left.push(entry);
  if (!hasEnded) outcome.unanswered = underWay;
  return hasEnded;
}

/**
 * The queues `replay`/`delete` of entry `id` should try, in order. Entry ids are the broker's,
 * and on Redis unique only within one queue's DLQ stream: two queues' DLQs can hold the same
 * id, and trying each queue in turn would act on whichever comes first. So the queues' DLQs
 * are searched for `id`: several holding it is a usage error, one is the queue to use. Where
 * the broker looks an entry up by id (`hasDlqEntry`: Redis, SQLite), that is done even for one
 * queue and only the queues holding it are returned (none: nothing to act on). Otherwise, with
 * several queues, their DLQs are listed; none found leaves every queue to the broker, which
 * rejects an id of the wrong form (a usage error) or finds nothing (the caller's failure).
 */
async function queuesForEntry(app: Chicory, queues: readonly string[], id: string): Promise<readonly string[]> {
  const broker = app.broker;
  if (broker.hasDlqEntry) {
    // Even for one queue: a broker whose replay takes its queue as the target (SQLite) would
    // otherwise move another queue's dead letter there.
    const holding: string[] = [];
    for (const queue of queues) if (await broker.hasDlqEntry(id, queue)) holding.push(queue);
    if (holding.length > 1) throw severalQueuesError(id, holding);
    return holding;
  }
  if (queues.length <= 1) return queues;
  const holding: string[] = [];
  for (const queue of queues) {
    const size = await broker.getDlqCount(queue);
    if (size === 0) continue;
    const entries = await broker.getDlqMessages(queue, size);
    if (entries.some((m) => m.messageId === id)) holding.push(queue);
  }
  if (holding.length > 1) throw severalQueuesError(id, holding);
  return holding.length === 1 ? holding : queues;
}

function severalQueuesError(id: string, holding: readonly string[]): CliUsageError {
  return new CliUsageError(
    `dead-letter entry ${id} is in the DLQ of several queues (${holding.join(", ")}): pass -q <queue> to say which`,
  );
}

/** A replay refusal's text without the library's hint, which names its API (the command names its own). */
function withoutApiHint(error: unknown): string {
  return toError(error).message.replace(/; delete it with deleteFromDlq\)$/, ")");
}

/**
 * `dlq replay --all`. A first SIGINT/SIGTERM stops it once the replays under way have ended
 * (each move is atomic), or {@link REPLAY_GRACE_MS} later when the server does not answer, and
 * it says how far it got; a second exits at once. A connection failure stops it the same way.
 */
async function replayEverything(
  app: Chicory,
  spec: string,
  queues: readonly string[],
  resetRetries: boolean,
  json: boolean,
): Promise<number> {
  let signal: NodeJS.Signals | undefined;
  const stop = new AbortController();
  const offSignals = onStopSignals((received) => {
    signal = received;
    stop.abort();
  });
  let outcome: ReplayOutcome;
  try {
    outcome = await replayAll(app, queues, resetRetries, stop.signal);
  } finally {
    offSignals();
  }
  const { replayed, left, recordsKept, unanswered, failure } = outcome;
  const where = queues.join(", ");
  if (json) printJson({ replayed, queues, notReplayed: left, recordsKept, ...(signal ? { interrupted: signal } : {}) });
  else {
    if (signal === undefined && failure === undefined) {
      printLine(`replayed ${replayed} message(s) from the dead-letter queue (${where})`);
    }
    for (const entry of left) printLine(`not replayed: ${entry.queue} ${entry.messageId}: ${entry.reason}`);
    for (const entry of recordsKept)
      printLine(`replayed, old record kept: ${entry.queue} ${entry.messageId}: ${entry.reason}`);
  }
  const noAnswer =
    unanswered > 0
      ? `; ${unanswered} replay(s) under way got no answer within ${REPLAY_GRACE_MS / 1000} s (each moves its entry whole or not at all)`
      : "";
  if (failure !== undefined) {
    printInfo(`replayed ${replayed} message(s) before the failure below${noAnswer}: run the command again to go on`);
    throw failure.error;
  }
  if (signal !== undefined) {
    const waiting = await dlqLeft(app, queues, unanswered > 0);
    printInfo(
      `interrupted by ${signal}: replayed ${replayed} message(s)${noAnswer}; ${waiting}: run the command again to go on`,
    );
    return signalExitCode(signal);
  }
  if (left.length === 0) return EXIT_OK;
  throw new CliFailure(
    `${left.length} entr${left.length === 1 ? "y" : "ies"} left in the dead-letter queue (listed above; remove one with: chicory dlq delete ${spec} <id>)`,
  );
}

/** "N left in the dead-letter queue (…)", or why it was not counted. */
async function dlqLeft(app: Chicory, queues: readonly string[], isUnanswered: boolean): Promise<string> {
  const where = queues.join(", ");
  if (isUnanswered) return `the dead-letter queue (${where}) was not counted (the server does not answer)`;
  try {
    const counts = await Promise.all(queues.map((q) => app.broker.getDlqCount(q)));
    return `${counts.reduce((a, b) => a + b, 0)} left in the dead-letter queue (${where})`;
  } catch (error) {
    return `the dead-letter queue (${where}) could not be counted: ${errorLine(error)}`;
  }
}

async function replay(spec: string, id: string | undefined, opts: DlqCommandOptions): Promise<number> {
  if (!id && !opts.all) throw new CliUsageError("dlq replay: pass a message id, or --all to replay every entry");
  if (id && opts.all) throw new CliUsageError("dlq replay: pass a message id or --all, not both");
  const resetRetries = opts.resetRetries ?? true;
  return withApp(spec, async ({ app }) => {
    await connectApp(app);
    const queues = targetQueues(app, opts.queue);
    if (!id) return replayEverything(app, spec, queues, resetRetries, opts.json === true);
    for (const queue of await queuesForEntry(app, queues, id)) {
      let moved: boolean;
      let recordKept: string | undefined;
      try {
        moved = await app.broker.replayFromDlq(id, queue, resetRetries);
      } catch (error) {
        if (codeOf(error) === "REPLAY_RECORD_KEPT") {
          // replayed, but the task's old failure record could not be deleted: said, as --all does
          moved = true;
          recordKept = toError(error).message;
        } else {
          // the entry cannot be replayed (its body, a unique refusal): a failure, not a usage error
          if (!/cannot replay/.test(String(error))) throw error;
          const reason = withoutApiHint(error);
          throw new CliFailure(`${queue} ${id}: ${reason} (remove it with: chicory dlq delete ${spec} ${id})`);
        }
      }
      if (moved) {
        if (opts.json) {
          printJson({
            queue,
            messageId: id,
            replayed: true,
            retriesReset: resetRetries,
            ...(recordKept === undefined ? {} : { recordKept }),
          });
        } else {
          printLine(`replayed ${id} to queue ${queue}${resetRetries ? " (retries reset)" : ""}`);
          if (recordKept !== undefined) printLine(`old record kept: ${recordKept}`);
        }
        return EXIT_OK;
      }
    }
    throw new CliFailure(`no dead-letter entry ${id} in queue(s) ${queues.join(", ")}`);
  });
}

async function remove(spec: string, id: string, opts: DlqCommandOptions): Promise<number> {
  return withApp(spec, async ({ app }) => {
    await connectBroker(app);
    const queues = targetQueues(app, opts.queue);
    for (const queue of await queuesForEntry(app, queues, id)) {
      if (await app.broker.deleteFromDlq(id, queue)) {
        if (opts.json) printJson({ queue, messageId: id, deleted: true });
        else printLine(`deleted ${id} from the dead-letter queue of ${queue}`);
        return EXIT_OK;
      }
    }
    throw new CliFailure(`no dead-letter entry ${id} in queue(s) ${queues.join(", ")}`);
  });
}

async function purge(spec: string, opts: DlqCommandOptions): Promise<number> {
  requireConfirmable("dlq purge", opts.yes);
  return withApp(spec, async ({ app }) => {
    await connectBroker(app);
    const queues = targetQueues(app, opts.queue);
    const purged = await purgeConfirmed(queues, opts.yes, {
      what: "dead-letter message",
      count: (queue) => app.broker.getDlqCount(queue),
      purge: (queue) => app.broker.purgeDlq(queue),
    });
    if (opts.json) printJson(purged);
    else {
      const total = Object.values(purged).reduce((a, b) => a + b, 0);
      printLine(`purged ${total} dead-letter message(s) (${queues.join(", ")})`);
    }
    return EXIT_OK;
  });
}

function sub(parent: Command, name: string, description: string): Command {
  const command = parent.command(name).description(description);
  return command.argument("<module>", "app module: path/to/app.ts[:export]");
}

function common(command: Command): Command {
  withQueues(command, "queue (repeatable); default: every queue of the app");
  return withLogLevel(command);
}

/** `-y` of the commands that change the DLQ without asking: taken, so scripts may pass it to every one. */
const NOTHING_TO_CONFIRM = "accepted, and changes nothing: this command asks no question";

/** Adds `chicory dlq ...` to the program. */
export function registerDlqCommand(program: Command, run: Run): void {
  const dlq = program.command("dlq").description("inspect and administer dead-letter queues");
  common(sub(dlq, "list", "list dead-lettered messages"))
    .option("--limit <n>", "entries per queue (default 100)", intAtLeast(1))
    .option("--after <id>", "the entries after this entry id (one queue, -q; Redis, SQLite)")
    .option("--json", "print JSON")
    .action((spec: string, opts: DlqCommandOptions) => run(() => list(spec, opts)));
  common(sub(dlq, "count", "count dead-lettered messages"))
    .option("--json", "print JSON")
    .action((spec: string, opts: DlqCommandOptions) => run(() => count(spec, opts)));
  common(sub(dlq, "replay", "republish a dead-lettered message (or --all) to its queue"))
    .argument("[id]", "message id (from dlq list)")
    .option("--all", "replay every entry")
    .option("--no-reset-retries", "keep the message's retry counter")
    .option("-y, --yes", NOTHING_TO_CONFIRM)
    .option("--json", "print JSON")
    .action((spec: string, id: string | undefined, opts: DlqCommandOptions) => run(() => replay(spec, id, opts)));
  common(sub(dlq, "delete", "delete one dead-lettered message"))
    .argument("<id>", "message id (from dlq list)")
    .option("-y, --yes", NOTHING_TO_CONFIRM)
    .option("--json", "print JSON")
    .action((spec: string, id: string, opts: DlqCommandOptions) => run(() => remove(spec, id, opts)));
  common(sub(dlq, "purge", "delete every dead-lettered message"))
    .option("-y, --yes", "do not ask (required when stdin is not a terminal)")
    .option("--json", "print JSON")
    .action((spec: string, opts: DlqCommandOptions) => run(() => purge(spec, opts)));
}

/** `queue "a"` or `queues "a", "b"`, for a line that says which queues were read. */
function queueNames(queues: readonly string[]): string {
  return `${queues.length === 1 ? "queue" : "queues"} ${queues.map((q) => `"${q}"`).join(", ")}`;
}

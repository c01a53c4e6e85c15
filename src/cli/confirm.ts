/**
 * Confirmation of the commands that delete messages for good (`queue purge`, `dlq purge`):
 * `--yes`, or a yes to a question asked on an interactive terminal. A script (stdin not a
 * terminal) must say `--yes`: a purge is never run because nobody was there to answer.
 * @module
 */
import { createInterface } from "node:readline";
import type { Readable, Writable } from "node:stream";
import { CliFailure, CliUsageError } from "./output.js";

/** Where the question is asked (the process's stdin and stderr by default; tests give their own). */
export interface ConfirmIo {
  readonly input: Readable & { readonly isTTY?: boolean | undefined };
  readonly output: Writable;
}

const PROCESS_IO: ConfirmIo = { input: process.stdin, output: process.stderr };

/**
 * Throws a usage error when `yes` is not set and nobody can be asked (stdin is not a
 * terminal): checked before anything connects or counts. `command` names it in the error.
 */
export function requireConfirmable(command: string, yes: boolean | undefined, io: ConfirmIo = PROCESS_IO): void {
  if (yes === true || io.input.isTTY === true) return;
  throw new CliUsageError(`${command} deletes messages for good: pass --yes to confirm (stdin is not a terminal)`);
}

/**
 * Asks `question` (a `[y/N]` is added) unless `yes` is set; resolves when the answer is yes
 * (`y` or `yes`, any case) and throws a {@link CliFailure} "nothing deleted" otherwise.
 */
export async function confirmDeletion(
  question: string,
  yes: boolean | undefined,
  io: ConfirmIo = PROCESS_IO,
): Promise<void> {
  if (yes === true) return;
  io.output.write(`${question} [y/N] `);
  const rl = createInterface({ input: io.input, terminal: false });
  let answer: string;
  try {
    // the first line; an input that ends without one (Ctrl-D) answers no
    answer = await new Promise<string>((resolve) => {
      rl.once("line", resolve);
      rl.once("close", () => resolve(""));
    });
  } finally {
    rl.close();
  }
  if (!/^\s*y(es)?\s*$/i.test(answer)) throw new CliFailure("nothing deleted (not confirmed)");
}

/** What {@link purgeConfirmed} purges: `what` names the messages in the question. */
export interface PurgeTarget {
  readonly what: string;
  count(queue: string): Promise<number>;
  purge(queue: string): Promise<number>;
}

/**
 * Purges `queues` (`queue purge`, `dlq purge`), after asking unless `yes`: the question says
 * how many there are now (the purge takes what arrives meanwhile too); with none counted,
 * nothing is asked or purged. Returns how many each queue's purge deleted.
 */
export async function purgeConfirmed(
  queues: readonly string[],
  yes: boolean | undefined,
  target: PurgeTarget,
): Promise<Record<string, number>> {
  // no prototype: a queue may be named `__proto__`
  const purged: Record<string, number> = Object.create(null);
  if (yes !== true) {
    const counts = await Promise.all(queues.map((queue) => target.count(queue)));
    const now = counts.reduce((a, b) => a + b, 0);
    if (now === 0) {
      for (const queue of queues) purged[queue] = 0;
      return purged;
    }
    await confirmDeletion(`delete every ${target.what} of ${queues.join(", ")} (${now} now)?`, yes);
  }
  for (const queue of queues) purged[queue] = await target.purge(queue);
  return purged;
}

// App module of the load tests with faults (load-soak-faults, load-slow-consumer), run by real
// `chicory worker` processes; it imports the BUILT package, as a user's app would. Broker and
// backend come from CHICORY_BROKER_URL and its CHICORY_{BROKER,BACKEND}_REDIS_* variables.
// Every task appends a `start` line to a per-process JSONL ledger (harness/ledger.ts format) with
// fs.writeSync BEFORE it does anything else, so the ledger survives a SIGKILL and counts every
// run, reruns included, without depending on the Redis under test.
//   CHICORY_TEST_LEDGER_DIR      directory of the ledgers (file: ledger-<pid>.jsonl); required
//   CHICORY_TEST_HEAP_EVERY_MS   with `node --expose-gc`: every that many ms a full GC, then a
//                                `{"msg":"test heap","at":…,"heapUsed":…}` line on stderr
import { closeSync, openSync, writeSync } from "node:fs";
import { join } from "node:path";
import { Chicory } from "../../../dist/index.js";

export const app = new Chicory();

const dir = process.env.CHICORY_TEST_LEDGER_DIR;
if (!dir) throw new Error("CHICORY_TEST_LEDGER_DIR is required");
const fd = openSync(join(dir, `ledger-${process.pid}.jsonl`), "a");
process.once("exit", () => closeSync(fd));

function record(ctx, at) {
  writeSync(fd, `${JSON.stringify({ e: "start", id: ctx.taskId, pid: process.pid, t: at, r: ctx.retries })}\n`);
}

const heapEvery = Number(process.env.CHICORY_TEST_HEAP_EVERY_MS ?? 0);
const gc = /** @type {(() => void) | undefined} */ (globalThis.gc);
const heapTimer =
  heapEvery > 0 && typeof gc === "function"
    ? setInterval(() => {
        gc();
        const line = { level: 30, msg: "test heap", at: Date.now(), heapUsed: process.memoryUsage().heapUsed };
        process.stderr.write(`${JSON.stringify(line)}\n`);
      }, heapEvery)
    : undefined;
heapTimer?.unref();
app.onWorkerShutdown(() => {
  if (heapTimer) clearInterval(heapTimer);
});

/** At-least-once: records its start and returns the epoch ms at which it started. */
app.task({ name: "stamp_ledger", context: true, deliveryMode: "at_least_once" }, (ctx) => {
  const at = Date.now();
  record(ctx, at);
  return at;
});

/** At-least-once, no result: records its start, then sleeps `ms` (a slow consumer). */
app.task({ name: "slow", context: true, deliveryMode: "at_least_once", ignoreResult: true }, async (ctx, ms) => {
  record(ctx, Date.now());
  await new Promise((resolve) => setTimeout(resolve, ms));
  return null;
});

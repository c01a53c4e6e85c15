// App module of the load tests (test/reliability/load-*.test.ts), run by real `chicory worker`
// processes. It imports the BUILT package, as a user's app would. Broker and backend come from
// CHICORY_BROKER_URL / CHICORY_BACKEND_URL and their CHICORY_{BROKER,BACKEND}_{REDIS,RABBITMQ}_*
// variables.
//   CHICORY_TEST_LOAD_KEYS       key prefix of the test's own books (required by `tick`)
//   CHICORY_TEST_LOAD_REDIS_URL  Redis holding the books (default: CHICORY_BROKER_URL, for a
//                                Redis broker)
import { Redis } from "ioredis";
import { Chicory } from "../../../dist/index.js";

export const app = new Chicory();

const keys = process.env.CHICORY_TEST_LOAD_KEYS;
/** @type {Redis | undefined} */
let books;
function booksClient() {
  if (!keys) throw new Error("CHICORY_TEST_LOAD_KEYS is required");
  const url = process.env.CHICORY_TEST_LOAD_REDIS_URL ?? process.env.CHICORY_BROKER_URL ?? "redis://127.0.0.1:6379/0";
  books ??= new Redis(url, {
    enableAutoPipelining: true,
    connectionName: "load-test-books",
  });
  return books;
}

// CHICORY_TEST_HEAP_EVERY_MS (with `node --expose-gc`): every that many ms, a full GC, then one
// JSON line `{"msg":"test heap","at":<epoch ms>,"heapUsed":<bytes>}` on stderr. The heap that
// survives a full GC is a steadier leak signal than RSS, which V8 grows in steps while it warms up.
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

app.onWorkerShutdown(async () => {
  if (heapTimer) clearInterval(heapTimer);
  await books?.quit().catch(() => undefined);
});

/**
 * Backlog job `i`: sets bit i of `<keys>:seen` and counts the run in `<keys>:done`, before the
 * worker acknowledges the message. A bit that was already set counts in `<keys>:dup`, so the
 * books prove "every job exactly once" (BITCOUNT == done == N, dup == 0) for a few bytes per job.
 */
app.task({ name: "tick", ignoreResult: true }, async (i) => {
  const redis = booksClient();
  const [was] = await Promise.all([redis.setbit(`${keys}:seen`, i, 1), redis.incr(`${keys}:done`)]);
  if (was === 1) await redis.incr(`${keys}:dup`);
  return null;
});

/** Soak job: returns the epoch ms at which it started (enqueue→start latency oracle). */
app.task({ name: "stamp" }, () => Date.now());

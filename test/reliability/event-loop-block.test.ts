/**
 * An event loop blocked by CPU work (RELIABILITY R6): a task that busy-loops for 3 × the lease
 * (SQLite, Redis: `claimMinIdle` 1 s) or 4 × the AMQP heartbeat (RabbitMQ: 1 s, set in the URL)
 * blocks its own worker's lease renewal or heartbeats. The behaviour documented in
 * docs/reliability.md:
 * - one worker alone: its run ends, and its outcome is stored; on RabbitMQ the server closed the
 *   blocked connection and requeued the message, which comes back to the same worker: it
 *   remembers its successful run of it and acknowledges it without a run (one run);
 * - a second worker free meanwhile takes the job over once the lease runs out (RabbitMQ: once
 *   the server closed the first connection) and runs it again: one duplicate. The first run's
 *   outcome is fenced; the second run blocks its own loop as long, so the first worker, free
 *   again, is handed the job back, remembers its run of that message and acknowledges it without
 *   running it (nor rejecting it as poison, with `maxDeliveries` 2), storing that run's SUCCESS.
 *   The final state is SUCCESS (still, once both workers are idle), two runs, neither worker
 *   exits, the first logs its lost lease or closed channel, and nothing is left in the broker.
 */
import { describe, expect, it } from "vitest";
import type { Chicory, Task } from "../../src/index.js";
import { SERVICES, skipUnless } from "../helpers/services.js";
import { hasRabbitmqctl } from "../integration/rabbitmq/rabbitmq-test-utils.js";
import { awaitBooks, report, waitQuiet } from "./harness/books.js";
import { readLedger } from "./harness/ledger.js";
import { newProducerLedger, produce } from "./harness/producer.js";
import { rabbitWorkQuiet } from "./harness/rabbitmq.js";
import { type BrokerKind, openSandbox, type Sandbox } from "./harness/sandbox.js";
import { sleep, waitUntil } from "./harness/wait.js";

const CLAIM_MS = 1000;
const BUSY_MS = 3 * CLAIM_MS;

/**
 * RabbitMQ: the AMQP heartbeat (s), in the broker URL; the task blocks for 4 × it (the server
 * closes a connection silent for about twice the heartbeat: 3 × left little margin).
 */
const HEARTBEAT_S = 1;
const RABBIT_BUSY_MS = 4000 * HEARTBEAT_S;

const skipRedis = await skipUnless("redis");
const skipRabbit = (await skipUnless("rabbitmq")) || skipRedis || !(await hasRabbitmqctl());

/** The fixture's `busy(ms)` task (its handler runs in the worker processes only). */
function busyTask(app: Chicory): Task<[number], number> {
  return app.task({ name: "busy", deliveryMode: "at_least_once" }, (_ms: number): number => {
    throw new Error("runs in the worker processes only");
  });
}

/** Nothing queued or held in the broker (RabbitMQ: as `rabbitmqctl` counts, AMQP does not tell). */
async function quiet(sb: Sandbox): Promise<boolean> {
  if (sb.broker !== "rabbitmq") return waitQuiet(sb.app, Date.now() + 10_000);
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (await rabbitWorkQuiet(sb.prefix ?? "")) return true;
    if (Date.now() > deadline) return false;
    await sleep(100);
  }
}

async function blockedLoopScenario(broker: BrokerKind, workers: 1 | 2): Promise<void> {
  const env: Record<string, string> = { CHICORY_WORKER_MAX_DELIVERIES: "2" };
  if (broker === "rabbitmq") env.CHICORY_BROKER_URL = `${SERVICES.rabbitmq}?heartbeat=${HEARTBEAT_S}`;
  const sb = openSandbox({ broker, claimMinIdleMs: CLAIM_MS, env });
  const busyMs = broker === "rabbitmq" ? RABBIT_BUSY_MS : BUSY_MS;
  try {
    await sb.app.connect();
    // Both up before the job comes (a worker's start-up may take longer than the block on a
    // busy machine): either takes it, the other is free while its loop is blocked.
    const started = [await sb.processes.startWorker({ name: "a", concurrency: 1, env: sb.env })];
    if (workers === 2) started.push(await sb.processes.startWorker({ name: "b", concurrency: 1, env: sb.env }));
    const producer = newProducerLedger();
    await produce(busyTask(sb.app), producer, { count: 1, ms: () => busyMs });
    const ids = producer.confirmed;
    expect(ids).toHaveLength(1);
    const id = ids[0] ?? "";
    const runs = () => readLedger(sb.ledgerDir).startsById.get(id) ?? [];
    await waitUntil(() => runs().length > 0, { timeoutMs: 15_000, what: "the first run's start" });
    const firstPid = runs()[0]?.pid;
    const first = started.find((p) => p.pid === firstPid);
    if (first === undefined) throw new Error(`the first run's pid ${firstPid} is no worker's`);
    const state = async () => (await sb.app.backend?.getResult(id))?.state;
    await waitUntil(async () => (await state()) === "SUCCESS" || (await state()) === "FAILURE", {
      timeoutMs: 4 * busyMs + 15_000,
      what: "the job's final record",
    });
    const record = await sb.app.backend?.getResult(id);
    const books = await awaitBooks(sb.app, ids, sb.ledgerDir, 30_000);
    expect(await quiet(sb)).toBe(true);
    const pids = runs().map((e) => (e.pid === first.pid ? "first" : "second"));
    report(`${broker}-event-loop-block-${workers}`, {
      broker,
      claimMinIdleMs: CLAIM_MS,
      busyMs,
      runs: pids,
      state: record?.state,
      books,
    });
    if (workers === 1) {
      expect(record?.state).toBe("SUCCESS");
      expect(pids).toEqual(["first"]);
    } else {
      expect(record?.state).toBe("SUCCESS");
      expect(pids).toEqual(["first", "second"]); // exactly one duplicate
      await first.waitForStderr(
        broker === "rabbitmq" ? /the channel that delivered the jobs running here closed/ : /lease lost/,
        10_000,
      );
    }
    expect(books.missing).toBe(0);
    expect(await sb.app.broker.getDlqCount("default")).toBe(0);
    // no worker exited
    expect(sb.processes.alive).toHaveLength(workers);
    // Once every run ended and the workers stopped (a graceful stop settles what they hold),
    // the record is still SUCCESS: a late run's outcome was not stored over it.
    const ends = () => readLedger(sb.ledgerDir).endsById.get(id)?.length ?? 0;
    await waitUntil(() => ends() === runs().length, { timeoutMs: 2 * busyMs + 15_000, what: "every run's end" });
    for (const p of started) p.signal("SIGTERM");
    await Promise.all(started.map((p) => p.exited));
    expect((await sb.app.backend?.getResult(id))?.state).toBe("SUCCESS");
  } catch (error) {
    console.error(sb.processes.describe());
    throw error;
  } finally {
    await sb.close();
  }
}

describe("event loop blocked by a task for 3 × the lease (R6)", () => {
  for (const broker of ["sqlite", "redis", "rabbitmq"] as const) {
    const skip = broker === "redis" ? skipRedis : broker === "rabbitmq" ? skipRabbit : false;
    it.skipIf(skip)(
      `${broker}: one worker alone ends the run and stores its outcome`,
      async () => {
        await blockedLoopScenario(broker, 1);
      },
      60_000,
    );

    it.skipIf(skip)(
      `${broker}: with a second worker, the job runs exactly twice and ends SUCCESS; no exit, nothing left`,
      async () => {
        await blockedLoopScenario(broker, 2);
      },
      60_000,
    );
  }
});

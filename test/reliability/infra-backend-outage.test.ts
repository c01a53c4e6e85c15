/**
 * Infrastructure fault (RELIABILITY §3.4 D1, backpressure): a PostgreSQL result backend goes
 * away for longer than a settling step's backoff (~31 s) while at-least-once jobs run on a Redis
 * broker, then on a RabbitMQ quorum queue (whose consumer's read-ahead a paused worker gives
 * back, and whose subscription it opens again on resuming). The backend reaches PostgreSQL
 * through a chaos proxy that resets its connections and refuses new ones for
 * {@link OUTAGE_MS}. Pass: the worker stops fetching once a record cannot be written (after the
 * pause is logged, the handler ends at most 2 × concurrency more times); the jobs it holds are neither given back nor
 * run again, their records written once the backend answers; fetching resumes on its own (and
 * is not said to before); every job ends SUCCESS and ran exactly once.
 */
import { describe, expect, it } from "vitest";
import { PostgresBackend } from "../../src/backends/sql/index.js";
import type { Broker } from "../../src/brokers/broker.js";
import { RabbitMqBroker } from "../../src/brokers/rabbitmq/index.js";
import { RedisBroker } from "../../src/brokers/redis/index.js";
import { withinDeadline } from "../../src/core/sleep.js";
import { Chicory, Worker } from "../../src/index.js";
import { capturingLogger } from "../helpers/capturing-logger.js";
import { SERVICES, skipUnless, uniqueName } from "../helpers/services.js";
import { dropPgTables } from "../integration/sql/sql-test-helpers.js";
import { deleteRabbitQueues } from "./harness/rabbitmq.js";
import { ChaosProxy } from "./infra/chaos-proxy.js";
import { JobLedger, report, sleepMs, waitFor } from "./infra/ledger.js";
import { deleteRedisKeys } from "./infra/redis-keys.js";

const skipRedis = await skipUnless("redis");
const skipRabbit = await skipUnless("rabbitmq");
const skipPg = await skipUnless("postgres");
const JOBS = 300;
const CONCURRENCY = 4;
/** Longer than a settling step's whole backoff schedule (100 ms .. 15 s: 30.6 s of pauses). */
const OUTAGE_MS = 40_000;

/** A broker under test and how to remove what it left. */
interface BrokerUnderTest {
  readonly broker: Broker;
  cleanup(): Promise<void>;
}

const BROKERS: ReadonlyArray<readonly [string, boolean, (name: string) => BrokerUnderTest]> = [
  [
    "Redis",
    skipRedis,
    (name) => ({
      broker: new RedisBroker({ url: SERVICES.redis, keyPrefix: name }),
      cleanup: () => deleteRedisKeys(name),
    }),
  ],
  [
    "RabbitMQ quorum queue",
    skipRabbit,
    (name) => ({
      broker: new RabbitMqBroker({ url: SERVICES.rabbitmq, prefix: name, queueType: "quorum", prefetchCount: 8 }),
      cleanup: async () => void (await deleteRabbitQueues(name)),
    }),
  ],
];

describe.each(BROKERS)(
  "reliability: a result backend outage longer than the settle backoff (%s broker)",
  (label, skip, open) => {
    it.skipIf(skip || skipPg)(
      "pauses fetching, holds the jobs taken (not run again), and stores their records once the backend is back",
      async () => {
        const name = uniqueName("chicory_t_");
        const tablePrefix = `${name}_`;
        const pgUrl = new URL(SERVICES.postgres);
        const proxy = new ChaosProxy(Number(pgUrl.port || 5432));
        const proxyUrl = new URL(SERVICES.postgres);
        proxyUrl.hostname = "127.0.0.1";
        proxyUrl.port = String(await proxy.listen());
        const { broker, cleanup } = open(name);
        const backend = new PostgresBackend({ url: proxyUrl.toString(), tablePrefix });
        const app = new Chicory({ broker, backend });
        const ledger = new JobLedger();
        const job = app.task({ name: "rel_outage_job" }, async (i: number) => {
          await sleepMs(5 + (i % 10));
          ledger.ran(i);
          return { i };
        });
        const taskId = (i: number) => `${name}-${i}`;
        const { logger, lines, until } = capturingLogger();
        const worker = new Worker(app, { logger, concurrency: CONCURRENCY, heartbeatInterval: 1 });
        const reader = new PostgresBackend({ url: SERVICES.postgres, tablePrefix });
        const runs = () => [...ledger.runs.values()].reduce((a, b) => a + b, 0);
        try {
          await app.connect();
          await reader.connect();
          for (let i = 0; i < JOBS; i++) {
            await job.applyAsync([i], { taskId: taskId(i) });
            ledger.confirm(i);
          }
          await worker.start();
          expect(await waitFor(() => ledger.runs.size >= 40, 30_000, 10)).toBe(true);

          proxy.refuse(true);
          const reset = proxy.cut();
          const outageAt = Date.now();
          await withinDeadline(until(/fetching paused/), 10_000); // the worker's pause
          const pausedAfterMs = Date.now() - outageAt;
          const runsAtPause = runs();
          await sleepMs(OUTAGE_MS); // the outage itself
          const runsAtEnd = runs();
          const held = new Set(
            lines.filter((l) => l.message.includes("the job's record waits for it")).map((l) => l.fields.taskId),
          );
          const releasedDuring = lines.filter((l) => l.message === "settling step failed; giving up").length;

          const resumedEarly = lines.filter((l) => /fetching resumes/.test(l.message)).length;
          proxy.refuse(false);
          const healedAt = Date.now();
          await withinDeadline(until(/fetching resumes/), 10_000); // its resumption
          const resumedAfterMs = Date.now() - healedAt;
          const allStored = await waitFor(
            async () => {
              const records = await Promise.all(Array.from({ length: JOBS }, (_, i) => reader.getResult(taskId(i))));
              return records.every((r) => r?.state === "SUCCESS");
            },
            60_000,
            250,
          );
          const drainedMs = Date.now() - healedAt;
          const wrong: number[] = [];
          for (let i = 0; i < JOBS; i++) {
            const record = await reader.getResult(taskId(i));
            if (record?.state !== "SUCCESS" || (record.result as { i?: number } | undefined)?.i !== i) wrong.push(i);
          }
          report(`backend outage (PostgreSQL, 40 s; ${label} broker)`, {
            jobs: JOBS,
            concurrency: CONCURRENCY,
            connectionsReset: reset,
            refusedConnects: proxy.refused,
            pausedAfterMs,
            runsAtPause,
            runsDuringOutageAfterPause: runsAtEnd - runsAtPause,
            heldJobs: held.size,
            releasedDuring,
            resumedAfterMs,
            drainedMs,
            wrong: wrong.length,
            duplicates: ledger.duplicates(),
          });
          expect(allStored).toBe(true);
          expect(wrong).toEqual([]);
          expect(runsAtEnd - runsAtPause).toBeLessThanOrEqual(2 * CONCURRENCY);
          expect(held.size).toBeGreaterThan(0);
          expect(releasedDuring).toBe(0);
          expect(resumedEarly).toBe(0);
          expect(ledger.duplicates()).toBe(0);
          expect(ledger.runs.size).toBe(JOBS);
          expect(await broker.getPendingCount("default")).toBe(0);
        } finally {
          proxy.refuse(false);
          await worker.stop(5).catch(() => undefined);
          await app.disconnect().catch(() => undefined);
          await reader.disconnect().catch(() => undefined);
          await proxy.close();
          await dropPgTables(tablePrefix);
          await cleanup();
        }
      },
    );
  },
);

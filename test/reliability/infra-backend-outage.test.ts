/**
 * Infrastructure fault (RELIABILITY §3.4 D1, backpressure): the result backend goes away for
 * longer than a settling step's backoff (~31 s) while at-least-once jobs run. Two outages:
 * - a PostgreSQL backend reached through a chaos proxy that resets its connections and refuses
 *   new ones (the backend's calls fail at once), on a Redis broker, then on a RabbitMQ quorum
 *   queue (whose consumer's read-ahead a paused worker gives back, and whose subscription it
 *   opens again on resuming);
 * - a Redis backend on a redis-server of the test's own, frozen (SIGSTOP: its connections stay
 *   open and nothing answers, so the backend's calls and probes end only by their deadlines),
 *   then killed (SIGKILL) and started again on its port, with a Redis broker on the shared
 *   server.
 * Each lasts {@link OUTAGE_MS} after the pause. Pass: the worker stops fetching once a record cannot be written
 * (after the pause is logged, the handler ends at most 2 × concurrency more times); the jobs it
 * holds are neither given back nor run again, their records written once the backend answers;
 * fetching resumes on its own (and is not said to before); every job ends SUCCESS and ran
 * exactly once.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { Backend } from "../../src/backends/backend.js";
import { RedisBackend } from "../../src/backends/redis/index.js";
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
import { freePort, OwnRedis, type RedisPersistence } from "./infra/redis-server.js";

const skipRedis = await skipUnless("redis");
const skipRabbit = await skipUnless("rabbitmq");
const skipPg = await skipUnless("postgres");
/** The frozen-server case starts a redis-server of its own (in CI it must be there). */
const skipOwnRedis = spawnSync("redis-server", ["--version"]).status !== 0 && process.env.CI !== "true";
const JOBS = 300;
const CONCURRENCY = 4;
/** Longer than a settling step's whole backoff schedule (100 ms .. 15 s: 30.6 s of pauses). */
const OUTAGE_MS = 40_000;

/** A broker under test and how to remove what it left. */
interface BrokerUnderTest {
  readonly broker: Broker;
  cleanup(): Promise<void>;
}

/** A result backend under test, the outage done to it, and how to remove what it left. */
interface BackendUnderTest {
  /** What the outage is, for the report. */
  readonly outage: string;
  /**
   * True when the outage outlasts a record write's whole backoff, so that the worker holds the
   * jobs it took: the backend's calls fail at once. A Redis backend's calls wait up to 10 s each
   * for an answer (a frozen server) or for the connection to come back (a killed one), so 40 s
   * do not spend the backoff: no job is held yet, none is given back.
   */
  readonly holdsPastBackoff: boolean;
  /** The backend the app uses (through the fault). */
  readonly backend: Backend;
  /** Reads the records past the fault. */
  readonly reader: Backend;
  /** Starts the outage; returns what it counted (connections reset), if anything. */
  fail(): number | undefined;
  /** Ends the outage. */
  heal(): void;
  /** Reports what the fault saw (connections refused), if anything. */
  figures(): Record<string, number>;
  cleanup(): Promise<void>;
}

function redisBroker(name: string): BrokerUnderTest {
  return { broker: new RedisBroker({ url: SERVICES.redis, keyPrefix: name }), cleanup: () => deleteRedisKeys(name) };
}

function rabbitQuorumBroker(name: string): BrokerUnderTest {
  return {
    broker: new RabbitMqBroker({ url: SERVICES.rabbitmq, prefix: name, queueType: "quorum", prefetchCount: 8 }),
    cleanup: async () => void (await deleteRabbitQueues(name)),
  };
}

/** PostgreSQL behind a chaos proxy that resets its connections and refuses new ones. */
async function pgBehindProxy(name: string): Promise<BackendUnderTest> {
  const tablePrefix = `${name}_`;
  const pgUrl = new URL(SERVICES.postgres);
  const proxy = new ChaosProxy(Number(pgUrl.port || 5432));
  const proxyUrl = new URL(SERVICES.postgres);
  proxyUrl.hostname = "127.0.0.1";
  proxyUrl.port = String(await proxy.listen());
  return {
    outage: "PostgreSQL, connections reset and refused",
    holdsPastBackoff: true,
    backend: new PostgresBackend({ url: proxyUrl.toString(), tablePrefix }),
    reader: new PostgresBackend({ url: SERVICES.postgres, tablePrefix }),
    fail: () => {
      proxy.refuse(true);
      return proxy.cut();
    },
    heal: () => proxy.refuse(false),
    figures: () => ({ refusedConnects: proxy.refused }),
    cleanup: async () => {
      proxy.refuse(false);
      await proxy.close();
      await dropPgTables(tablePrefix);
    },
  };
}

/** Sends `sig` to the server, if it runs. */
function signalServer(server: OwnRedis, sig: NodeJS.Signals): void {
  try {
    if (server.pid !== undefined) process.kill(server.pid, sig);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ESRCH") throw error; // (it exited)
  }
}

/** A Redis backend on a redis-server of the test's own, and the outage `fault` does to it. */
async function ownRedisBackend(
  name: string,
  persistence: RedisPersistence,
  outage: string,
  fault: (server: OwnRedis) => { fail(): void; heal(): void },
): Promise<BackendUnderTest> {
  const dir = mkdtempSync(join(tmpdir(), "chicory-outage-"));
  const server = new OwnRedis(await freePort(), dir, persistence);
  await server.start();
  const { fail, heal } = fault(server);
  return {
    outage,
    holdsPastBackoff: false,
    backend: new RedisBackend({ url: server.url, keyPrefix: name, env: {} }),
    reader: new RedisBackend({ url: server.url, keyPrefix: name, env: {} }),
    fail: () => {
      fail();
      return undefined;
    },
    heal,
    figures: () => ({}),
    cleanup: async () => {
      signalServer(server, "SIGCONT");
      await server.kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A redis-server of the test's own, frozen with SIGSTOP (connections open, no answer). */
const frozenOwnRedis = (name: string) =>
  ownRedisBackend(name, "none", "Redis on a server of its own, frozen (SIGSTOP)", (server) => ({
    fail: () => signalServer(server, "SIGSTOP"),
    heal: () => signalServer(server, "SIGCONT"),
  }));

/** A redis-server of the test's own, killed (SIGKILL) and started again on its port. */
const killedOwnRedis = (name: string) =>
  ownRedisBackend(
    name,
    "always",
    "Redis on a server of its own, killed (SIGKILL) and started again (appendfsync always)",
    (server) => ({
      fail: () => void server.kill(),
      heal: () => {
        if (server.pid === undefined) void server.start(); // (called again by the test's cleanup)
      },
    }),
  );

const CASES: ReadonlyArray<
  readonly [string, boolean, (name: string) => BrokerUnderTest, (name: string) => Promise<BackendUnderTest>]
> = [
  ["PostgreSQL backend, Redis broker", skipRedis || skipPg, redisBroker, pgBehindProxy],
  ["PostgreSQL backend, RabbitMQ quorum queue", skipRabbit || skipPg, rabbitQuorumBroker, pgBehindProxy],
  ["Redis backend on a frozen server, Redis broker", skipRedis || skipOwnRedis, redisBroker, frozenOwnRedis],
  ["Redis backend on a killed server, Redis broker", skipRedis || skipOwnRedis, redisBroker, killedOwnRedis],
];

describe.each(CASES)(
  "reliability: a result backend outage longer than the settle backoff (%s)",
  (label, skip, openBroker, openBackend) => {
    it.skipIf(skip)(
      "pauses fetching, holds the jobs taken (not run again), and stores their records once the backend is back",
      async () => {
        const name = uniqueName("chicory_t_");
        const { broker, cleanup } = openBroker(name);
        const fault = await openBackend(name);
        const { backend, reader } = fault;
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

          const reset = fault.fail();
          const outageAt = Date.now();
          await withinDeadline(until(/fetching paused/), 30_000); // the worker's pause
          const pausedAfterMs = Date.now() - outageAt;
          const runsAtPause = runs();
          await sleepMs(OUTAGE_MS); // the outage itself
          const runsAtEnd = runs();
          const held = new Set(
            lines.filter((l) => l.message.includes("the job's record waits for it")).map((l) => l.fields.taskId),
          );
          const releasedDuring = lines.filter((l) => l.message === "settling step failed; giving up").length;

          const resumedEarly = lines.filter((l) => /fetching resumes/.test(l.message)).length;
          fault.heal();
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
          report(`backend outage (${fault.outage}, ${OUTAGE_MS / 1000} s; ${label})`, {
            jobs: JOBS,
            concurrency: CONCURRENCY,
            ...(reset === undefined ? {} : { connectionsReset: reset }),
            ...fault.figures(),
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
          expect(held.size > 0).toBe(fault.holdsPastBackoff);
          expect(releasedDuring).toBe(0);
          expect(resumedEarly).toBe(0);
          expect(ledger.duplicates()).toBe(0);
          expect(ledger.runs.size).toBe(JOBS);
          expect(await broker.getPendingCount("default")).toBe(0);
        } finally {
          fault.heal();
          await worker.stop(5).catch(() => undefined);
          await app.disconnect().catch(() => undefined);
          await reader.disconnect().catch(() => undefined);
          await fault.cleanup();
          await cleanup();
        }
      },
    );
  },
);

/**
 * Infrastructure fault (RELIABILITY §3.2 B6, issue 6): the shared RabbitMQ node is restarted
 * (`rabbitmqctl stop_app` / `start_app`) in the middle of a run of 2,000 at-least-once jobs.
 * Pass: every job whose publish was confirmed (delay() resolved) ends SUCCESS in the backend;
 * producers and workers resume on their own within 30 s of the node being back (measured);
 * publishes attempted during the outage reject (counted, excluded from "confirmed", retried
 * by the test's producer under the same task id). The node is always started again in `finally`.
 */
import { execFile } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { RabbitMqBroker } from "../../src/brokers/rabbitmq/index.js";
import { Chicory, silentLogger, Worker } from "../../src/index.js";
import { reachable, SERVICES, skipUnless, uniqueName } from "../helpers/services.js";
import { deleteQueues, hasRabbitmqctl } from "../integration/rabbitmq/rabbitmq-test-utils.js";
import { JobLedger, produce, report, sleepMs, waitFor } from "./infra/ledger.js";
import { deleteRedisKeys } from "./infra/redis-keys.js";

const run = promisify(execFile);
const skip = (await skipUnless("rabbitmq")) || (await skipUnless("redis")) || !(await hasRabbitmqctl());
const JOBS = 2000;
const RECOVERY_BOUND_MS = 30_000;

async function rabbitmqctl(...args: string[]): Promise<void> {
  await run("rabbitmqctl", args, { timeout: 120_000 });
}

const LOG_DIR = "/var/log/rabbitmq";

/** The node's main log file, when it is readable on this host. */
function nodeLog(): string | undefined {
  if (!existsSync(LOG_DIR)) return undefined;
  const name = readdirSync(LOG_DIR).find((f) => /^rabbit@.*\.log$/.test(f) && !f.includes("_upgrade"));
  return name ? `${LOG_DIR}/${name}` : undefined;
}

/** Stale-delivery-tag channel errors logged after byte `from` of the node log. */
function staleTagErrors(log: string | undefined, from: number): number | null {
  if (!log) return null;
  const text = readFileSync(log).subarray(from).toString();
  return (text.match(/unknown delivery tag/g) ?? []).length;
}

describe.skipIf(skip)("infra: RabbitMQ node restart mid-run (destructive)", () => {
  it(`loses no confirmed job of ${JOBS} and resumes on its own within 30 s`, async () => {
    const name = uniqueName("rel-rmq");
    const broker = new RabbitMqBroker({
      url: SERVICES.rabbitmq,
      prefix: name,
      connectionName: name,
      reconnectDelay: 0.5,
      maxReconnectDelay: 2,
      publishTimeout: 10,
      prefetchCount: 16,
    });
    const app = new Chicory({
      broker,
      backend: SERVICES.redis,
      config: { env: { CHICORY_BACKEND_REDIS_KEY_PREFIX: name } },
    });
    const ledger = new JobLedger();
    const job = app.task({ name: "rel_rmq_job" }, async (i: number) => {
      await sleepMs(2 + (i % 5));
      ledger.ran(i);
      return i;
    });
    const taskId = (i: number) => `${name}-${i}`;
    const workers = [0, 1].map(() => new Worker(app, { logger: silentLogger, concurrency: 8, heartbeatInterval: 1 }));
    let nodeStopped = false;
    const log = nodeLog();
    const logFrom = log ? statSync(log).size : 0;
    const times = { stopAt: 0, downAt: 0, startAt: 0, portUpAt: 0, readyAt: 0 };
    let restarting: Promise<void> | null = null;
    const restart = async () => {
      times.stopAt = Date.now();
      nodeStopped = true;
      await rabbitmqctl("stop_app");
      times.downAt = Date.now();
      await sleepMs(1000);
      times.startAt = Date.now();
      // When the AMQP port accepts connections again: the reference point of recovery times.
      const portUp = (async () => {
        while (!(await reachable("rabbitmq"))) await sleepMs(25);
        times.portUpAt = Date.now();
      })();
      await rabbitmqctl("start_app");
      await rabbitmqctl("await_startup");
      await portUp;
      nodeStopped = false;
      times.readyAt = Date.now();
    };
    try {
      await app.connect();
      for (const w of workers) await w.start();
      const started = Date.now();
      await produce({
        count: JOBS,
        ratePerSec: 250,
        parallel: 16,
        publish: (i) => job.applyAsync([i], { taskId: taskId(i) }),
        ledger,
        retryAfterMs: 250,
        deadline: Date.now() + 150_000,
        onStart: (i) => {
          if (i === Math.floor(JOBS * 0.3)) restarting = restart();
        },
      });
      await restarting;
      expect(times.readyAt).toBeGreaterThan(0);
      const upAt = times.portUpAt;
      const allRan = await waitFor(() => ledger.notRun().length === 0, 90_000, 100);
      const ranAt = Date.now();

      const backend = app.backend;
      if (!backend) throw new Error("no backend");
      const notSuccess: number[] = [];
      const indexes = [...ledger.confirmed.keys()];
      for (let k = 0; k < indexes.length; k += 200) {
        const chunk = indexes.slice(k, k + 200);
        const records = await Promise.all(chunk.map((i) => backend.getResult(taskId(i))));
        records.forEach((r, j) => {
          if (r?.state !== "SUCCESS" || r.result !== chunk[j]) notSuccess.push(chunk[j] as number);
        });
      }
      // Confirms after stop_app returned can only come from the restarted node. Times are
      // measured from the moment its AMQP port accepted connections (clamped at 0: the port
      // is polled every 25 ms).
      const since = (t: number | undefined) => Math.max(0, (t ?? Number.POSITIVE_INFINITY) - upAt);
      const producerRecoveryMs = since(Math.min(...[...ledger.confirmed.values()].filter((t) => t >= times.downAt)));
      const consumerRecoveryMs = since(ledger.firstCompletionAfter(upAt));
      // A job published and consumed entirely after the node was back.
      const endToEndRecoveryMs = since(ledger.firstRunOfJobStartedAfter(upAt));
      const figures = {
        jobs: JOBS,
        confirmed: ledger.confirmed.size,
        failedPublishAttempts: ledger.failedAttempts,
        failureKinds: Object.fromEntries(ledger.failureKinds),
        notRun: ledger.notRun().length,
        notSuccess: notSuccess.length,
        duplicates: ledger.duplicates(),
        stopAppMs: times.downAt - times.stopAt,
        outageMs: upAt - times.stopAt,
        startAppToPortMs: upAt - times.startAt,
        awaitStartupDoneAfterPortMs: times.readyAt - upAt,
        producerRecoveryMs,
        consumerRecoveryMs,
        endToEndRecoveryMs,
        drainedAfterUpMs: ranAt - upAt,
        staleDeliveryTagErrors: staleTagErrors(log, logFrom),
        totalMs: ranAt - started,
      };
      report("rabbitmq-restart", figures);
      expect(allRan).toBe(true);
      expect(ledger.confirmed.size).toBe(JOBS);
      expect(notSuccess).toEqual([]);
      // Acks of deliveries from before the restart are never sent on a new channel.
      expect(staleTagErrors(log, logFrom) ?? 0).toBe(0);
      expect(consumerRecoveryMs).toBeLessThanOrEqual(RECOVERY_BOUND_MS);
      expect(producerRecoveryMs).toBeLessThanOrEqual(RECOVERY_BOUND_MS);
      expect(endToEndRecoveryMs).toBeLessThanOrEqual(RECOVERY_BOUND_MS);
      expect(await waitFor(async () => (await broker.getPendingCount("default")) === 0, 10_000, 200)).toBe(true);
    } finally {
      if (nodeStopped || restarting) {
        await (restarting as Promise<void> | null)?.catch(() => undefined);
        if (nodeStopped) {
          await rabbitmqctl("start_app").catch(() => undefined);
          await rabbitmqctl("await_startup").catch(() => undefined);
        }
      }
      for (const w of workers) await w.stop(5).catch(() => undefined);
      await app.disconnect().catch(() => undefined);
      await deleteQueues(broker).catch(() => undefined);
      await deleteRedisKeys(name).catch(() => undefined);
    }
  });
});

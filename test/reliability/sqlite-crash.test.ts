/**
 * Process-crash tests on the embedded default (SQLite broker + SQLite backend in one file in a
 * temp dir), with real `chicory worker` processes (the built CLI) and the ledger oracle:
 * - a worker SIGKILLed mid-run: every confirmed job still completes (missing == 0);
 * - a task running 3.5x the lease runs once (lease renewal); SIGTERM drains gracefully;
 * - a producer SIGKILLed mid-batch: the file stays consistent and loses no confirmed job.
 * Lease 1 s (CHICORY_BROKER_SQLITE_CLAIM_MIN_IDLE_MS=1000) so reclaim is quick.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { awaitBooks, report } from "./harness/books.js";
import { readLedger, recoveries, startsOf } from "./harness/ledger.js";
import { PRODUCER_SCRIPT } from "./harness/processes.js";
import { newProducerLedger, produce } from "./harness/producer.js";
import { openSandbox } from "./harness/sandbox.js";
import { CLAIM_MS, longTaskScenario, secondSignalScenario, sigtermScenario } from "./harness/scenarios.js";
import { runSeed, seededRandom, waitUntil } from "./harness/wait.js";

describe("SQLite broker: process crashes", () => {
  it("a worker SIGKILLed mid-run loses no confirmed job (300 at-least-once jobs, 2 workers + replacement)", async () => {
    const seed = runSeed();
    const random = seededRandom(seed);
    const sb = openSandbox({ broker: "sqlite", claimMinIdleMs: CLAIM_MS });
    try {
      await sb.app.connect();
      const concurrency = 4;
      const w1 = await sb.processes.startWorker({ name: "w1", concurrency, env: sb.env });
      const w2 = await sb.processes.startWorker({ name: "w2", concurrency, env: sb.env });
      const producer = newProducerLedger();
      const produced = produce(sb.work, producer, { count: 300, ms: () => 20 + Math.floor(random() * 31) });
      // Mid-run: both workers busy, the killed one has started a few jobs.
      await waitUntil(
        () => {
          const ledger = readLedger(sb.ledgerDir);
          return startsOf(ledger, w1.pid) >= 20 && startsOf(ledger, w2.pid) >= 5;
        },
        { timeoutMs: 20_000, what: "both workers running jobs" },
      );
      const killAt = Date.now();
      w1.signal("SIGKILL");
      const killedExit = await w1.exited;
      const w3 = await sb.processes.startWorker({ name: "w3", concurrency, env: sb.env });
      await produced;
      expect(producer.failed).toEqual([]);
      const books = await awaitBooks(sb.app, producer.confirmed, sb.ledgerDir, 60_000);
      const recovery = recoveries(readLedger(sb.ledgerDir), w1.pid, killAt);
      report("sqlite-worker-sigkill", {
        seed,
        jobs: 300,
        concurrency,
        claimMinIdleMs: CLAIM_MS,
        kills: 1,
        books,
        interruptedByKill: recovery.interrupted.length,
        recoveryMs: recovery.recoveryMs,
        replacementPid: w3.pid,
      });
      expect(killedExit.signal).toBe("SIGKILL");
      expect(books.confirmed).toBe(300);
      expect(books.missingSample).toEqual([]);
      expect(books.missing).toBe(0);
      expect(books.success).toBe(300);
      expect(recovery.neverRestarted).toEqual([]);
      // At most the killed worker's in-flight jobs run again (claims never exceed free slots).
      // the killed worker held up to 2 × concurrency unacknowledged jobs (running + settling)
      expect(books.duplicateStarts).toBeLessThanOrEqual(2 * concurrency);
      expect(books.duplicates).toBeLessThanOrEqual(2 * concurrency);
      for (const ms of recovery.recoveryMs) expect(ms).toBeLessThan(CLAIM_MS + 5000);
      // Nothing left behind: no queued or leased rows.
      expect(await sb.app.broker.getQueueSize("default")).toBe(0);
      expect(await sb.app.broker.getPendingCount("default")).toBe(0);
    } catch (error) {
      console.error(sb.processes.describe());
      throw error;
    } finally {
      await sb.close();
    }
  }, 120_000);

  it("a task running 3.5x the lease with two live workers runs exactly once", async () => {
    await longTaskScenario("sqlite");
  }, 60_000);

  it("SIGTERM: running jobs finish and are acked (no redelivery), queued jobs go to another worker promptly, exit 0", async () => {
    await sigtermScenario("sqlite");
  }, 60_000);

  it("a second signal during a graceful stop exits at once; the running jobs are rerun by another worker", async () => {
    await secondSignalScenario("sqlite");
  }, 60_000);

  it("a producer SIGKILLed mid-batch leaves a consistent file; every confirmed job is queued, then drained", async () => {
    const sb = openSandbox({ broker: "sqlite", claimMinIdleMs: CLAIM_MS });
    try {
      await sb.app.connect(); // creates the schema before the producer starts
      const producerLedger = join(sb.dir, "producer.jsonl");
      const producer = sb.processes.spawnNode("producer", [PRODUCER_SCRIPT], {
        ...sb.env,
        CHICORY_TEST_LEDGER_DIR: "",
        CHICORY_TEST_PRODUCER_LEDGER: producerLedger,
        CHICORY_TEST_PRODUCE_COUNT: "2000",
        CHICORY_TEST_PRODUCE_BATCH: "50",
      });
      const confirmedIds = (): string[] => {
        let text = "";
        try {
          text = readFileSync(producerLedger, "utf8");
        } catch {
          return [];
        }
        const ids: string[] = [];
        for (const line of text.split("\n")) {
          try {
            const entry = JSON.parse(line) as { e?: string; id?: string };
            if (entry.e === "confirmed" && typeof entry.id === "string") ids.push(entry.id);
          } catch {
            // torn last line
          }
        }
        return ids;
      };
      await waitUntil(() => confirmedIds().length >= 400, {
        timeoutMs: 30_000,
        intervalMs: 2,
        what: "400 confirmed enqueues",
      });
      producer.signal("SIGKILL");
      const exit = await producer.exited;
      const confirmed = confirmedIds();
      expect(exit.signal).toBe("SIGKILL");
      expect(producer.output.stdout).not.toContain("done");
      expect(confirmed.length).toBeLessThan(2000);

      // The file: integrity_check ok; every confirmed id is in the queue (no worker ran yet).
      const db = new Database(sb.dbPath ?? "", { readonly: true, fileMustExist: true });
      let queued: Set<string>;
      let integrity: string;
      try {
        integrity = String((db.prepare("PRAGMA integrity_check").get() as { integrity_check: string }).integrity_check);
        queued = new Set(
          (
            db.prepare("SELECT task_id FROM chicory_jobs WHERE queue = 'default'").all() as Array<{ task_id: string }>
          ).map((r) => r.task_id),
        );
      } finally {
        db.close();
      }
      expect(integrity).toBe("ok");
      const notQueued = confirmed.filter((id) => !queued.has(id));
      expect(notQueued).toEqual([]);

      // A worker afterwards drains everything that was enqueued (confirmed or not).
      await sb.processes.startWorker({ name: "drain", concurrency: 8, env: sb.env });
      const enqueued = [...queued];
      const books = await awaitBooks(sb.app, enqueued, sb.ledgerDir, 60_000);
      report("sqlite-producer-sigkill", {
        requested: 2000,
        confirmedBeforeKill: confirmed.length,
        rowsInFileAfterKill: queued.size,
        enqueuedNotConfirmed: queued.size - confirmed.length,
        integrity,
        books,
      });
      expect(books.missingSample).toEqual([]);
      expect(books.missing).toBe(0);
      expect(books.success).toBe(queued.size);
      expect(books.duplicates).toBe(0);
      expect(await sb.app.broker.getQueueSize("default")).toBe(0);
    } catch (error) {
      console.error(sb.processes.describe());
      throw error;
    } finally {
      await sb.close();
    }
  }, 120_000);
});

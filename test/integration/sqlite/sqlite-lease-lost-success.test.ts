/**
 * A run that succeeds after losing its lease, on workers of one SQLite file with a result backend
 * slower than the broker: the worker stores that SUCCESS (the task had no final record) and, its
 * slot free, is handed the job back (the worker that took it over stalls in turn) before the
 * write lands. The delivery again waits for the SUCCESS this worker is storing, finds it and is
 * acknowledged without a third run.
 */
import Database from "better-sqlite3";
import { afterEach, expect, it } from "vitest";
import type { TaskRecord } from "../../../src/backends/backend.js";
import { Chicory, MemoryBackend, silentLogger, Worker } from "../../../src/index.js";
import { OWN_SUCCESS_AFTER_MS } from "../../../src/worker/runner.js";
import { deferred } from "../../helpers/deferred.js";
import { removeDb, tempDbPath } from "./sqlite-test-files.js";

/** A backend whose writes take 150 ms (across a network, busy). */
class SlowWrites extends MemoryBackend {
  override async storeResult(record: TaskRecord): Promise<void> {
    await new Promise((resolve) => setTimeout(resolve, 150));
    return super.storeResult(record);
  }
}

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()?.();
});

async function until(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

it("the worker that lost the lease and stores the SUCCESS is handed the job back before the write lands: acknowledged, no third run", async () => {
  const file = tempDbPath();
  cleanups.push(() => removeDb(file));
  // a lease that never runs out by itself: the test ends it by hand
  const env = { CHICORY_BROKER_URL: `sqlite:${file}`, CHICORY_BROKER_SQLITE_CLAIM_MIN_IDLE_MS: "60000" };
  const backend = new SlowWrites();
  const firstRunEnds = deferred();
  const secondRunEnds = deferred();
  const runs: string[] = [];
  const appFor = () => {
    const app = new Chicory({ backend, config: { env } });
    const task = app.task({ name: "stalls" }, async () => {
      const n = runs.length + 1;
      runs.push(`run ${n}`);
      await (n === 1 ? firstRunEnds.promise : secondRunEnds.promise);
      return `run ${n}`;
    });
    cleanups.push(() => app.disconnect());
    return { app, task };
  };
  const a = appFor();
  const b = appFor();
  const start = async (app: Chicory) => {
    const worker = new Worker(app, { concurrency: 1, logger: silentLogger });
    await worker.start();
    cleanups.push(() => worker.stop(1));
  };
  await start(a.app);
  const queuedAt = Date.now();
  const result = await a.task.delay();
  await until(() => runs.length === 1, "the first run");
  const db = new Database(file);
  cleanups.push(() => void db.close());
  const expireLeases = () => db.prepare("UPDATE chicory_jobs SET available_at = 0, locked_until = 0").run();
  expireLeases(); // the first worker stalled past its lease
  await start(b.app);
  await until(() => runs.length === 2, "the second worker's run");
  expireLeases(); // the second one stalls too
  // the first run ends as a run that lost its lease does, a while after the job was queued
  await new Promise((resolve) => setTimeout(resolve, queuedAt + OWN_SUCCESS_AFTER_MS + 50 - Date.now()));
  firstRunEnds.resolve();
  await until(async () => (await a.app.broker.getQueueSize("default")) === 0, "the job acknowledged");
  await until(async () => (await a.app.broker.getPendingCount("default")) === 0, "nothing held");
  expect(runs).toEqual(["run 1", "run 2"]);
  expect(await backend.getResult(result.taskId)).toMatchObject({ state: "SUCCESS", result: "run 1" });
  secondRunEnds.resolve();
});

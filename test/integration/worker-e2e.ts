/**
 * Worker end-to-end suite, run unchanged for every broker/backend pair
 * (`test/integration/<pair>.e2e.test.ts`). Each test gets a fresh, isolated app from the
 * target (its own key prefix / file / table prefix) and cleans it up.
 */
import { afterEach, describe, expect, it } from "vitest";
import { describeLocation } from "../../src/core/location.js";
import {
  AsyncResult,
  type Chicory,
  silentLogger,
  type TaskContext,
  TaskFailedError,
  TaskIdConflictError,
  TimeoutError,
  Worker,
  type WorkerInit,
} from "../../src/index.js";
import { taskMessage } from "../contract/contract-helpers.js";
import { deferred } from "../helpers/deferred.js";

/** How a broker/backend pair plugs into {@link runWorkerE2E}. */
export interface WorkerE2ETarget {
  /** Shown in the describe block. */
  name: string;
  /**
   * A fresh app on isolated storage. `options.claimMinIdleMs` asks for a short lease where the
   * broker has one.
   */
  createApp(): Promise<Chicory> | Chicory;
  /** Removes what the app created (called after the app and its workers stopped). */
  destroy?(app: Chicory): Promise<void>;
}

async function eventually<T>(fn: () => Promise<T> | T, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Registers the worker end-to-end suite for a broker/backend pair. */
export function runWorkerE2E(target: WorkerE2ETarget): void {
  describe(`worker end to end: ${target.name}`, () => {
    const cleanups: Array<() => Promise<void>> = [];
    afterEach(async () => {
      while (cleanups.length) await cleanups.pop()?.();
    });

    async function fresh(): Promise<Chicory> {
      const app = await target.createApp();
      cleanups.push(async () => {
        await app.disconnect().catch(() => undefined);
        await target.destroy?.(app);
      });
      return app;
    }

    async function worker(app: Chicory, options: WorkerInit = {}): Promise<Worker> {
      const w = new Worker(app, {
        logger: silentLogger,
        concurrency: 8,
        heartbeatInterval: 0.2,
        heartbeatTtl: 5,
        ...options,
      });
      await w.start();
      cleanups.push(() => w.stop(2));
      return w;
    }

    it("runs 200 tasks across two workers, each exactly once", async () => {
      const app = await fresh();
      const runs = new Map<number, number>();
      const square = app.task(async function square(n: number) {
        runs.set(n, (runs.get(n) ?? 0) + 1);
        return n * n;
      });
      await worker(app, { concurrency: 4 });
      await worker(app, { concurrency: 4 });
      const results = await Promise.all(Array.from({ length: 200 }, (_, i) => square.delay(i)));
      const values = await Promise.all(results.map((r) => r.get({ timeout: 20 })));
      expect(values).toEqual(Array.from({ length: 200 }, (_, i) => i * i));
      // a zero timeout reads a finished task's value as it is now
      expect(await results[7]?.get({ timeout: 0 })).toBe(49);
      expect([...runs.values()].every((n) => n === 1)).toBe(true);
      // acknowledged just after the results were stored
      await eventually(async () => (await app.broker.getPendingCount("default")) === 0);
    });

    it("retries on the task's own queue and reports the remote error when retries run out", async () => {
      const app = await fresh();
      const seen: number[] = [];
      const flaky = app.task(
        {
          name: "flaky",
          queue: "e2e-mail",
          context: true,
          retryPolicy: { maxRetries: 2, retryDelay: "50ms", jitter: false },
        },
        async (ctx: TaskContext, failTimes: number) => {
          seen.push(ctx.retries);
          if (ctx.retries < failTimes) throw new RangeError(`attempt ${ctx.retries}`);
          return ctx.retries;
        },
      );
      await worker(app, { queue: "e2e-mail" });
      expect(await (await flaky.delay(2)).get({ timeout: 20 })).toBe(2);
      const failed = await flaky.delay(5);
      const error = await failed.get({ timeout: 20 }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(TaskFailedError);
      expect(error).toMatchObject({ errorType: "RangeError", remoteMessage: "attempt 2" });
      expect(seen).toEqual([0, 1, 2, 0, 1, 2]);
    });

    it("dead-letters exhausted retries and replays them from the DLQ", async () => {
      const app = await fresh();
      let fail = true;
      const t = app.task({ name: "dlq_then_ok", retryPolicy: { maxRetries: 0 } }, async () => {
        if (fail) throw new Error("broken for now");
        return "fixed";
      });
      await worker(app, { useDeadLetterQueue: true });
      const r = await t.delay();
      await expect(r.get({ timeout: 20 })).rejects.toBeInstanceOf(TaskFailedError);
      expect(await r.state()).toBe("DEAD_LETTERED");
      // The record is stored before the message moves to the DLQ, or in the same call (Redis):
      // a crash in between redelivers it.
      await eventually(async () => (await app.broker.getDlqCount("default")) === 1);
      const [entry] = await app.broker.getDlqMessages("default");
      expect(entry?.originalMessage?.id).toBe(r.taskId);
      fail = false;
      expect(await app.broker.replayFromDlq(entry?.messageId ?? "", "default")).toBe(true);
      await eventually(async () => (await r.state()) === "SUCCESS");
      expect(await r.get({ timeout: 5 })).toBe("fixed");
      expect(await app.broker.getDlqCount("default")).toBe(0);
    });

    it("clears a dead letter's stored failure when it is replayed, so get() waits for the new run", async () => {
      const app = await fresh();
      let fail = true;
      const t = app.task({ name: "dlq_replay_state", retryPolicy: { maxRetries: 0 } }, async () => {
        if (fail) throw new Error("broken for now");
        return "fixed";
      });
      const first = await worker(app, { useDeadLetterQueue: true });
      const r = await t.delay();
      await expect(r.get({ timeout: 20 })).rejects.toBeInstanceOf(TaskFailedError);
      await eventually(async () => (await app.broker.getDlqCount("default")) === 1);
      await first.stop(2);
      await app.connect();
      expect(await r.state()).toBe("DEAD_LETTERED");
      const [entry] = await app.broker.getDlqMessages("default");
      fail = false;
      expect(await app.broker.replayFromDlq(entry?.messageId ?? "", "default")).toBe(true);
      // No worker runs: the old failure is gone, the task waits in its queue.
      expect(await r.state()).toBe("PENDING");
      await expect(r.get({ timeout: 0 })).rejects.toBeInstanceOf(TimeoutError);
      await worker(app, { useDeadLetterQueue: true });
      expect(await r.get({ timeout: 20 })).toBe("fixed");
      expect(await app.broker.getDlqCount("default")).toBe(0);
    });

    it("a replay by an app that did not connect closes only a backend it opened itself", async () => {
      const app = await fresh();
      const t = app.task({ name: "dlq_replay_open", retryPolicy: { maxRetries: 0 } }, async () => {
        throw new Error("broken");
      });
      const first = await worker(app, { useDeadLetterQueue: true });
      const [a, b] = [await t.delay(), await t.delay()];
      await eventually(async () => (await app.broker.getDlqCount("default")) === 2);
      await first.stop(2);
      await app.disconnect();
      const backend = app.backend;
      if (!backend) throw new Error("this suite needs a backend");
      const entries = await (async () => {
        await app.broker.connect();
        return app.broker.getDlqMessages("default");
      })();
      const entryOf = (id: string) => entries.find((e) => e.originalMessage?.id === id)?.messageId ?? "";
      // opened by its caller: left open (and its waits go on)
      await backend.connect();
      expect(await app.broker.replayFromDlq(entryOf(a.taskId), "default")).toBe(true);
      expect(backend.isOpen).not.toBe(false);
      expect(await a.state()).toBe("PENDING");
      const waited = await a.get({ timeout: 0.5 }).catch((e: unknown) => e);
      expect(waited).toBeInstanceOf(TimeoutError);
      expect((waited as Error).message).toContain("no result after 0.5 s");
      // opened by the replay: closed after it
      await backend.disconnect();
      expect(await app.broker.replayFromDlq(entryOf(b.taskId), "default")).toBe(true);
      expect(backend.isOpen).not.toBe(true);
    });

    it("a get() that times out on a queue the broker counts no consumer of says so; with a worker on it, it does not", async () => {
      const app = await fresh();
      let release: () => void = () => undefined;
      const held = new Promise<void>((resolve) => {
        release = resolve;
      });
      let started: () => void = () => undefined;
      const running = new Promise<void>((resolve) => {
        started = resolve;
      });
      const t = app.task({ name: "nobody_home", queue: "nobody" }, async () => {
        started();
        await held;
      });
      const unconsumed = await t.delay();
      const lonely = await unconsumed.get({ timeout: 0.3 }).catch((e: unknown) => e);
      expect(lonely).toBeInstanceOf(TimeoutError);
      // naming where the broker is, to compare with the worker's banner
      expect((lonely as Error).message).toBe(
        `task ${unconsumed.taskId}: no result after 0.3 s (the broker at ${describeLocation(app.broker)} counts no consumer of queue "nobody": is a worker running for it, on this broker?)`,
      );
      const w = await worker(app, { queue: "nobody" });
      await running; // the worker took it: the queue has a consumer now
      const busy = await unconsumed.get({ timeout: 0.3 }).catch((e: unknown) => e);
      expect((busy as Error).message).toBe(`task ${unconsumed.taskId}: no result after 0.3 s`);
      release();
      expect(await unconsumed.get({ timeout: 10 })).toBeNull();
      await w.stop(2);
    });

    it("a caller-chosen id enqueued again after its run finished: get() and state() follow the new run", async () => {
      const app = await fresh();
      let fail = true;
      const t = app.task({ name: "reused_id", retryPolicy: { maxRetries: 0 } }, async () => {
        if (fail) throw new Error("first run failed");
        return "second run ok";
      });
      const first = await worker(app);
      const r = await t.applyAsync([], { taskId: "invoice-42" });
      await expect(r.get({ timeout: 20 })).rejects.toBeInstanceOf(TaskFailedError);
      await first.stop(2);
      await app.connect();
      fail = false;
      const again = await t.applyAsync([], { taskId: "invoice-42" });
      // No worker runs: the first run's failure is gone, the new run waits in its queue.
      expect(await again.state()).toBe("PENDING");
      await expect(again.get({ timeout: 0 })).rejects.toBeInstanceOf(TimeoutError);
      await worker(app);
      expect(await again.get({ timeout: 20 })).toBe("second run ok");
    });

    it("a get() refuses the result another task stored under the same caller-chosen id", async () => {
      const app = await fresh();
      const gate = deferred();
      const slow = app.task({ name: "slow_one", queue: "shared_id_a" }, async () => {
        await gate.promise;
        return 1;
      });
      const quick = app.task({ name: "quick_other", queue: "shared_id_b" }, async () => "two");
      await worker(app, { queue: ["shared_id_a", "shared_id_b"] });
      try {
        const first = await slow.applyAsync([], { taskId: "shared-7" });
        const second = await quick.applyAsync([], { taskId: "shared-7" });
        expect(await second.get({ timeout: 20 })).toBe("two");
        // (typed number: without the check, it would have resolved to "two")
        const refused = await first.get({ timeout: 20 }).catch((error: unknown) => error);
        expect(refused).toBeInstanceOf(TaskIdConflictError);
        expect(refused).toMatchObject({ taskId: "shared-7", expectedTask: "slow_one", foundTask: "quick_other" });
      } finally {
        gate.resolve();
      }
    });

    it("stores the result as it was when the handler returned: a later change to it is not stored", async () => {
      const app = await fresh();
      let runs = 0;
      const t = app.task(async function shared_state() {
        runs++;
        const value: Record<string, unknown> = { count: 1 };
        // changed (made circular) right after the return, before the worker stores it
        setImmediate(() => {
          value.count = 2;
          value.self = value;
        });
        return value;
      });
      await worker(app);
      expect(await (await t.delay()).get({ timeout: 10 })).toEqual({ count: 1 });
      expect(runs).toBe(1);
    });

    it("an AsyncResult built from an id opens its backend on first use, as delay() does", async () => {
      const app = await fresh();
      const t = app.task(async function answer() {
        return 42;
      });
      const w = await worker(app);
      const { taskId } = await t.delay();
      await eventually(async () => (await new AsyncResult(taskId, app.backend).state()) === "SUCCESS");
      await w.stop(2);
      await app.disconnect();
      // a process that only reads results: nothing connected yet
      const later = new AsyncResult<number>(taskId, app.backend);
      expect(await later.get({ timeout: 5 })).toBe(42);
      expect(await later.state()).toBe("SUCCESS");
      // several first calls at once (a web server just started) wait for the one connect
      await app.disconnect();
      const many = Array.from({ length: 5 }, () => new AsyncResult<number>(taskId, app.backend));
      expect(await Promise.all([...many.map((r) => r.get({ timeout: 5 })), ...many.map((r) => r.state())])).toEqual([
        ...many.map(() => 42),
        ...many.map(() => "SUCCESS"),
      ]);
    });

    it("a caller-chosen id of 255 characters runs and stores its result; a longer one is refused at dispatch", async () => {
      const app = await fresh();
      const t = app.task(async function long_id() {
        return "ok";
      });
      await worker(app);
      await expect(t.applyAsync([], { taskId: "x".repeat(256) })).rejects.toThrow(/1-255 characters/);
      const r = await t.applyAsync([], { taskId: "y".repeat(255) });
      expect(await r.get({ timeout: 10 })).toBe("ok");
    });

    it("runs a delayed task no earlier than its countdown", async () => {
      const app = await fresh();
      const t = app.task(async function delayed() {
        return Date.now();
      });
      await worker(app);
      const sent = Date.now();
      const ranAt = await (await t.applyAsync([], { countdown: "300ms" })).get({ timeout: 20 });
      expect(ranAt - sent).toBeGreaterThanOrEqual(290);
    });

    it("dead-letters undecodable messages and keeps serving", async () => {
      const app = await fresh();
      const ok = app.task(async function stillOk() {
        return "ok";
      });
      await worker(app, { useDeadLetterQueue: true });
      await app.broker.publish("default", { id: "garbage-1", body: "\u0000not json{" });
      expect(await (await ok.delay()).get({ timeout: 20 })).toBe("ok");
      await eventually(async () => (await app.broker.getDlqCount("default")) === 1);
      expect((await app.broker.getDlqMessages("default"))[0]?.error).toMatch(/decode_error/);
    });

    it("a message over the worker's size limit (a producer with a higher one) fails under its task id", async () => {
      const app = await fresh();
      const stillOk = app.task(async function afterBig() {
        return "ok";
      });
      await worker(app, { useDeadLetterQueue: true });
      const limit = app.codec.maxMessageBytes;
      const message = { v: 1, id: "too-big-1", name: "big_task", args: ["x".repeat(limit)], retries: 0 };
      const body = JSON.stringify({ ...message, eta: null, priority: null, firstFailureAt: null, lastError: null });
      await app.broker.publish("default", { id: message.id, body });
      // before, nothing was stored: get() waited for its whole timeout (for ever without one)
      const error = await new AsyncResult("too-big-1", app.backend).get({ timeout: 20 }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(TaskFailedError);
      expect(error).toMatchObject({ errorType: "MessageRejected", message: expect.stringMatching(/too_large/) });
      expect(await new AsyncResult("too-big-1", app.backend).state()).toBe("DEAD_LETTERED");
      expect(await app.broker.getDlqCount("default")).toBe(1);
      expect(await (await stillOk.delay()).get({ timeout: 20 })).toBe("ok");
      // another producer's JSON object, as large, with an "id": dead-lettered without a record
      const foreign = JSON.stringify({ id: "order-9", event: "shipped", payload: "x".repeat(limit) });
      await app.broker.publish("default", { id: "order-9", body: foreign });
      await eventually(async () => (await app.broker.getDlqCount("default")) === 2);
      expect(await new AsyncResult("order-9", app.backend).state()).toBe("PENDING");
    });

    it("a message of a newer version (or a refused shape) that names its id fails under that id", async () => {
      const app = await fresh();
      await worker(app, { useDeadLetterQueue: false });
      const newer = { v: 2, id: "newer-1", name: "some_task", args: [1], retries: 0, deadline: null };
      await app.broker.publish("default", { id: newer.id, body: JSON.stringify(newer) });
      const badArgs = { v: 1, id: "bad-args-1", name: "some_task", args: { x: 1 }, retries: 0 };
      const body = JSON.stringify({ ...badArgs, eta: null, priority: null, firstFailureAt: null, lastError: null });
      await app.broker.publish("default", { id: badArgs.id, body });
      // before, nothing was stored: get() waited for its whole timeout (for ever without one)
      // another producer's JSON object that has an "id" but says nothing of being a task message
      const foreign = { id: "order-2", event: "shipped" };
      await app.broker.publish("default", { id: foreign.id, body: JSON.stringify(foreign) });
      for (const id of ["newer-1", "bad-args-1"]) {
        const error = await new AsyncResult(id, app.backend).get({ timeout: 20 }).catch((e: unknown) => e);
        expect(error).toBeInstanceOf(TaskFailedError);
        expect(error).toMatchObject({ errorType: "MessageRejected", message: expect.stringMatching(/schema_error/) });
      }
      // once it is taken and settled: rejected without a record under its id
      await eventually(
        async () =>
          (await app.broker.getQueueSize("default")) === 0 && (await app.broker.getPendingCount("default")) === 0,
      );
      expect(await new AsyncResult("order-2", app.backend).state()).toBe("PENDING");
    });

    it("a caller-chosen id the result backend cannot store is refused at delay(); a worker rejects such a message", async (ctx) => {
      const app = await fresh();
      const id = `${"\\".repeat(130)}x`; // 131 characters, 261 as PostgreSQL stores them
      if (app.backend?.taskIdProblem?.(id) === undefined) ctx.skip(); // a backend that stores it as it is
      const t = app.task(async function storableId() {
        return "ok";
      });
      await expect(t.applyAsync([], { taskId: id })).rejects.toThrow(
        /^taskId: the \w+ result backend stores it as 261 characters/,
      );
      await worker(app, { useDeadLetterQueue: true });
      const body = app.codec.encode(taskMessage({ id, name: "storableId", args: [] }));
      await app.broker.publish("default", { id, body });
      // before, its outcome could not be stored: the worker retried that for ever
      await eventually(async () => (await app.broker.getDlqCount("default")) === 1);
      expect((await app.broker.getDlqMessages("default"))[0]?.error).toMatch(
        /task id: the \w+ result backend stores it/,
      );
      expect(await (await t.delay()).get({ timeout: 20 })).toBe("ok");
    });

    it("a result over the default maxResultBytes (4 MiB) fails its task, not retried, instead of being stored", async () => {
      const app = await fresh();
      let runs = 0;
      const huge = app.task({ name: "huge_result", retryPolicy: { maxRetries: 2, retryDelay: 0 } }, async () => {
        runs++;
        return "x".repeat(app.config.maxResultBytes);
      });
      const stillOk = app.task(async function afterHuge() {
        return "ok";
      });
      await worker(app);
      // before, a result larger than a server takes (MariaDB's 16 MiB max_allowed_packet) was
      // retried, run again on each redelivery and finally dropped as poison, with no result
      const error = await (await huge.delay()).get({ timeout: 20 }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(TaskFailedError);
      expect(error).toMatchObject({
        errorType: "ValidationError",
        message: expect.stringMatching(/its result is 4194306 bytes of JSON, over the limit of 4194304 bytes/),
      });
      expect(runs).toBe(1);
      expect(await (await stillOk.delay()).get({ timeout: 20 })).toBe("ok");
    });

    it("at_most_once tasks run once and are acknowledged before they run", async () => {
      const app = await fresh();
      let pending = -1;
      const t = app.task({ name: "amo", deliveryMode: "at_most_once" }, async () => {
        pending = await app.broker.getPendingCount("default");
        return 1;
      });
      await worker(app);
      expect(await (await t.delay()).get({ timeout: 20 })).toBe(1);
      expect(pending).toBe(0);
    });

    it("retries a failed at_most_once task as a new message, with and without a delay", async () => {
      const app = await fresh();
      const runs = new Map<string, number>();
      const t = app.task(
        {
          name: "amo_flaky",
          deliveryMode: "at_most_once",
          retryPolicy: { maxRetries: 2, retryDelay: 0, jitter: false },
        },
        async (label: string) => {
          const n = (runs.get(label) ?? 0) + 1;
          runs.set(label, n);
          if (n < 3) throw new Error(`flaky run ${n}`);
          return `${label} ok`;
        },
      );
      const slow = app.task(
        {
          name: "amo_flaky_delayed",
          deliveryMode: "at_most_once",
          retryPolicy: { maxRetries: 1, retryDelay: "30ms", jitter: false },
        },
        async () => {
          runs.set("delayed", (runs.get("delayed") ?? 0) + 1);
          if (runs.get("delayed") === 1) throw new Error("flaky once");
          return "delayed ok";
        },
      );
      await worker(app);
      // A caller-chosen task id: the first message is a unique publish too.
      const [now, later] = await Promise.all([t.applyAsync(["now"], { taskId: `amo-${Date.now()}` }), slow.delay()]);
      expect(await now.get({ timeout: 20 })).toBe("now ok");
      expect(await later.get({ timeout: 20 })).toBe("delayed ok");
      expect(Object.fromEntries(runs)).toEqual({ now: 3, delayed: 2 });
      expect(await app.broker.getPendingCount("default")).toBe(0);
    });

    it("dead-letters a failed at_most_once task although it was acknowledged before running", async () => {
      const app = await fresh();
      const t = app.task({ name: "amo_fails", deliveryMode: "at_most_once" }, async () => {
        throw new Error("lost cause");
      });
      await worker(app, { useDeadLetterQueue: true });
      const r = await t.delay();
      await expect(r.get({ timeout: 20 })).rejects.toBeInstanceOf(TaskFailedError);
      await eventually(async () => (await app.broker.getDlqCount("default")) === 1);
      const [entry] = await app.broker.getDlqMessages("default");
      expect(entry?.error).toContain("lost cause");
      expect(entry?.originalMessage?.id).toBe(r.taskId);
    });

    it("holds no more messages than its concurrency", async () => {
      const app = await fresh();
      let release!: () => void;
      const gate = new Promise<void>((r) => {
        release = r;
      });
      let running = 0;
      const t = app.task(async function gated() {
        running++;
        await gate;
      });
      const results = await Promise.all(Array.from({ length: 12 }, () => t.delay()));
      await worker(app, { concurrency: 3 });
      await eventually(() => running === 3);
      expect(await app.broker.getPendingCount("default")).toBeLessThanOrEqual(3);
      release();
      await Promise.all(results.map((r) => r.get({ timeout: 20 })));
    });

    it("a run that stop() gave back reads PENDING again, not STARTED, and runs on the next worker", async () => {
      const app = await fresh();
      let runs = 0;
      const t = app.task({ name: "given_back", context: true }, async (ctx: TaskContext) => {
        runs++;
        if (runs > 1) return "second run";
        await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve));
        return "aborted";
      });
      const w = await worker(app);
      const r = await t.delay();
      await eventually(async () => (await r.state()) === "STARTED"); // marked after 100 ms of running
      await w.stop(0.05);
      await app.connect();
      expect(await r.state()).toBe("PENDING");
      await worker(app);
      expect(await r.get({ timeout: 10 })).toBe("second run");
    });

    it("drains on stop(), publishes heartbeats and a final stopped heartbeat", async () => {
      const app = await fresh();
      let release!: () => void;
      const gate = new Promise<void>((r) => {
        release = r;
      });
      const t = app.task(async function drained() {
        await gate;
        return "drained";
      });
      const w = await worker(app);
      const backend = app.backend;
      if (!backend) throw new Error("the e2e suite needs a backend");
      await eventually(async () => (await backend.getActiveWorkers()).some((s) => s.workerId === w.workerId));
      const r = await t.delay();
      await eventually(() => w.getStats().activeTasks === 1);
      const stopping = w.stop(10);
      release();
      await stopping;
      await app.connect();
      expect(await new AsyncResult(r.taskId, backend).state()).toBe("SUCCESS");
      expect((await backend.getHeartbeat(w.workerId))?.isRunning).toBe(false);
    });
  });
}

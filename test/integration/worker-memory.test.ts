import { runInNewContext } from "node:vm";
import type { StandardSchemaV1 } from "@standard-schema/spec";
import { afterEach, describe, expect, it, vi } from "vitest";
import { z } from "zod";
import { processWarningLogger } from "../../src/core/warn-once.js";
import {
  type ApplyOptions,
  AsyncResult,
  BackendNotConfiguredError,
  Chicory,
  type ChicoryOptions,
  ConfigurationError,
  type Logger,
  MaxRetriesExceededError,
  MemoryBackend,
  MemoryBroker,
  MessageCodec,
  MessageTooLargeError,
  RetryError,
  silentLogger,
  TaskAbortedError,
  type TaskContext,
  TaskFailedError,
  TimeoutError,
  ValidationError,
  Worker,
  type WorkerInit,
} from "../../src/index.js";
import { encodeTask, taskMessage } from "../contract/contract-helpers.js";
import { capturingLogger } from "../helpers/capturing-logger.js";
import { deferred } from "../helpers/deferred.js";

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()?.();
});

function makeApp(options: Omit<ChicoryOptions, "broker" | "backend"> & { claimMinIdleMs?: number } = {}) {
  const broker = new MemoryBroker({ claimMinIdleMs: options.claimMinIdleMs ?? 30_000 });
  const backend = new MemoryBackend();
  const { claimMinIdleMs: _, ...appOptions } = options;
  const app = new Chicory({ ...appOptions, broker, backend, config: { env: {}, ...options.config } });
  cleanups.push(() => app.disconnect());
  return { app, broker, backend };
}

async function startWorker(app: Chicory, options: WorkerInit = {}) {
  const worker = new Worker(app, { logger: silentLogger, concurrency: 4, ...options });
  await worker.start();
  cleanups.push(() => worker.stop(1));
  return worker;
}

async function eventually<T>(fn: () => Promise<T> | T, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const value = await fn();
      if (value) return value;
    } catch (error) {
      if (Date.now() > deadline) throw error;
    }
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A logger that keeps the text of its warnings (`warn(message)` or `warn(fields, message)`). */
function warningLogger(): { logger: Logger; warnings: string[] } {
  const warnings: string[] = [];
  const logger: Logger = {
    ...silentLogger,
    warn: (fields: unknown, message?: string) => void warnings.push(message ?? String(fields)),
    child: () => logger,
  };
  return { logger, warnings };
}

/**
 * Runs a context task that adds listeners to `ctx.signal` (`listen`) and times out, beside a
 * job that waits for it to end: the listeners' errors are logged (`count` lines awaited), the
 * job beside ends, and later jobs run. Returns the timed-out job and the logged lines.
 */
async function timeOutWithListeners(count: number, listen: (signal: AbortSignal) => void) {
  const { app } = makeApp();
  const gate = deferred();
  const throwing = app.task({ name: "throws_on_abort", timeout: "50ms", context: true }, async (ctx: TaskContext) => {
    listen(ctx.signal);
    await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve));
  });
  const beside = app.task({ name: "runs_beside" }, async () => {
    await gate.promise;
    return "done";
  });
  const { logger, lines } = capturingLogger();
  await startWorker(app, { logger });
  const running = await beside.delay();
  const failed = await throwing.delay();
  await expect(failed.get({ timeout: 5 })).rejects.toMatchObject({ errorType: "TaskTimeoutError" });
  const thrown = () => lines.filter((line) => line.message.includes("ctx.signal threw"));
  await eventually(() => thrown().length === count);
  gate.resolve();
  expect(await running.get({ timeout: 5 })).toBe("done");
  expect(await (await beside.delay()).get({ timeout: 5 })).toBe("done");
  return { failed, thrown: thrown() };
}

describe("Worker on the memory broker", () => {
  it("runs tasks end to end: delay, get, state", async () => {
    const { app } = makeApp();
    const add = app.task(async function add(a: number, b: number) {
      return a + b;
    });
    await startWorker(app);
    const r = await add.delay(2, 3);
    expect(await r.get({ timeout: 5 })).toBe(5);
    expect(await r.state()).toBe("SUCCESS");
    expect(await r.ready()).toBe(true);
    expect(await r.failed()).toBe(false);
    await r.forget();
    expect(await r.state()).toBe("PENDING");
  });

  it("logs each success at debug level, when the logger takes debug lines", async () => {
    const { app } = makeApp();
    const add = app.task(async function add(a: number, b: number) {
      return a + b;
    });
    const { logger, lines } = capturingLogger();
    await startWorker(app, { logger });
    const r = await add.delay(2, 3);
    expect(await r.get({ timeout: 5 })).toBe(5);
    await eventually(() => lines.some((line) => line.message === "task succeeded"));
    const line = lines.find((l) => l.message === "task succeeded");
    expect(line?.level).toBe("debug");
    expect(line?.fields).toMatchObject({ taskId: r.taskId, task: "add", queue: "default", ms: expect.any(Number) });
  });

  it("reports remote errors with type, message and stack", async () => {
    const { app } = makeApp();
    const boom = app.task(async function boom() {
      throw Object.assign(new TypeError("bad thing"), { code: "ERR_BAD_THING" });
    });
    await startWorker(app);
    const r = await boom.delay();
    const error = await r.get({ timeout: 5 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TaskFailedError);
    expect(error).toMatchObject({
      errorType: "TypeError",
      remoteMessage: "bad thing",
      remoteCode: "ERR_BAD_THING",
      taskId: r.taskId,
    });
    expect((error as TaskFailedError).remoteStack).toContain("bad thing");
    expect(await r.failed()).toBe(true);
  });

  it("a thrown value that is not an Error fails the task as NonError with its text", async () => {
    const { app } = makeApp();
    const declined = app.task(async function declined() {
      throw "card declined";
    });
    await startWorker(app);
    const r = await declined.delay();
    const error = await r.get({ timeout: 5 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TaskFailedError);
    expect(error).toMatchObject({ errorType: "NonError", remoteMessage: "card declined", remoteStack: undefined });
    // ctx.fail() with such a value stores it the same way
    const failed = app.task({ name: "failed_with_text", context: true }, async (ctx: TaskContext) => {
      ctx.fail("card declined");
    });
    const f = await failed.delay();
    const viaFail = await f.get({ timeout: 5 }).catch((e: unknown) => e);
    expect(viaFail).toMatchObject({ errorType: "NonError", remoteMessage: "card declined", remoteStack: undefined });
  });

  it("ctx.fail() stores an error-shaped object, an Error of another realm and a revoked Proxy as throwing them would, and never retries them", async () => {
    const { app } = makeApp();
    let runs = 0;
    const values: Record<string, () => unknown> = {
      shaped: () => ({ name: "HttpError", message: "402 payment required" }),
      realm: () => runInNewContext("new TypeError('from another realm')"),
      revoked: () => {
        const { proxy, revoke } = Proxy.revocable({}, {});
        revoke();
        return proxy;
      },
      getter: () => ({
        get message(): string {
          throw new Error("unreadable");
        },
      }),
    };
    const failing = app.task(
      { name: "fails_for_good", context: true, retryPolicy: { maxRetries: 3, retryDelay: 0, jitter: false } },
      async (ctx: TaskContext, which: string) => {
        runs++;
        ctx.fail(values[which]?.());
      },
    );
    await startWorker(app);
    const outcome = async (which: string) => (await failing.delay(which)).get({ timeout: 5 }).catch((e: unknown) => e);
    expect(await outcome("shaped")).toMatchObject({ errorType: "HttpError", remoteMessage: "402 payment required" });
    const realm = await outcome("realm");
    expect(realm).toMatchObject({ errorType: "TypeError", remoteMessage: "from another realm" });
    expect((realm as TaskFailedError).remoteStack).toContain("from another realm");
    expect(await outcome("revoked")).toMatchObject({
      errorType: "NonError",
      remoteMessage: expect.stringMatching(/cannot be read/),
      remoteStack: undefined,
    });
    expect(await outcome("getter")).toMatchObject({
      errorType: "NonError",
      remoteMessage: "[object Object]",
      remoteStack: undefined,
    });
    expect(runs).toBe(4); // once each
  });

  it("logs a failure and a retry with the error's type and message, and its stack at DEBUG", async () => {
    const { app } = makeApp();
    const lines: Array<{ level: string; message: string; fields: Record<string, unknown> }> = [];
    const record = (level: string) => (fields: unknown, message?: unknown) =>
      void lines.push({ level, message: String(message), fields: fields as Record<string, unknown> });
    const logger = { ...silentLogger, debug: record("debug"), info: record("info"), warn: record("warn") };
    logger.child = () => logger;
    let calls = 0;
    const flaky = app.task({ name: "flaky", retryPolicy: { maxRetries: 1, retryDelay: 0 } }, async () => {
      calls++;
      throw new TypeError(`attempt ${calls}`);
    });
    await startWorker(app, { logger });
    const r = await flaky.delay();
    await expect(r.get({ timeout: 5 })).rejects.toBeInstanceOf(TaskFailedError);
    const retry = lines.find((l) => l.message === "task will retry");
    // where and which retry, as an operator needs them
    expect(retry?.fields).toMatchObject({
      taskId: r.taskId,
      queue: "default",
      retry: 1,
      maxRetries: 1,
      errorType: "TypeError",
      error: "attempt 1",
    });
    await eventually(() => lines.some((l) => l.message === "task failed"));
    const failed = lines.find((l) => l.message === "task failed");
    expect(failed?.fields).toMatchObject({
      taskId: r.taskId,
      retries: 1,
      deadLettered: false, // (no DLQ: acknowledged, its record FAILURE)
      errorType: "TypeError",
      error: "attempt 2",
    });
    const stacks = lines.filter((l) => l.level === "debug" && l.message === "error stack");
    expect(stacks.map((l) => String(l.fields.stack).split("\n")[0])).toEqual([
      "TypeError: attempt 1",
      "TypeError: attempt 2",
    ]);
  });

  it("get() times out with TimeoutError; without a backend accessors throw", async () => {
    const { app } = makeApp();
    const never = app.task(async function never() {
      return 1;
    });
    const r = await never.delay();
    await expect(r.get({ timeout: "50ms" })).rejects.toBeInstanceOf(TimeoutError);
    await expect(r.get({ timeout: 0 })).rejects.toBeInstanceOf(TimeoutError); // not run: no worker
    const none = new AsyncResult("x", null);
    await expect(none.get()).rejects.toBeInstanceOf(BackendNotConfiguredError);
    await expect(none.state()).rejects.toBeInstanceOf(BackendNotConfiguredError);
  });

  it("at_least_once acks only after the outcome is stored", async () => {
    const { app, broker, backend } = makeApp({ deliveryMode: "at_least_once" });
    const seen: number[] = [];
    const store = backend.storeResult.bind(backend);
    vi.spyOn(backend, "storeResult").mockImplementation(async (record) => {
      if (record.state === "SUCCESS") seen.push(await broker.getPendingCount("default"));
      return store(record);
    });
    const t = app.task(async function alo() {
      seen.push(await broker.getPendingCount("default"));
      return 1;
    });
    await startWorker(app);
    await (await t.delay()).get({ timeout: 5 });
    expect(seen).toEqual([1, 1]);
    await eventually(async () => (await broker.getPendingCount("default")) === 0);
  });

  it("at_most_once acks before running", async () => {
    const { app, broker } = makeApp({ deliveryMode: "at_most_once" });
    let pendingWhileRunning = -1;
    const t = app.task(async function amo() {
      pendingWhileRunning = await broker.getPendingCount("default");
      return 1;
    });
    await startWorker(app);
    await (await t.delay()).get({ timeout: 5 });
    expect(pendingWhileRunning).toBe(0);
  });

  it("a per-task delivery mode wins over the app default", async () => {
    const { app, broker } = makeApp({ deliveryMode: "at_most_once" });
    let pending = -1;
    const t = app.task({ name: "per_task", deliveryMode: "at_least_once" }, async () => {
      pending = await broker.getPendingCount("default");
    });
    await startWorker(app);
    await (await t.delay()).get({ timeout: 5 });
    expect(pending).toBe(1);
  });

  it("retries on the queue the task came from, with context", async () => {
    const { app } = makeApp();
    const attempts: Array<{ retries: number; isLast: boolean }> = [];
    const flaky = app.task(
      {
        name: "flaky",
        queue: "mail",
        context: true,
        retryPolicy: { maxRetries: 3, retryDelay: "10ms", jitter: false },
      },
      async (ctx: TaskContext, x: number) => {
        attempts.push({ retries: ctx.retries, isLast: ctx.isLastRetry });
        if (ctx.retries < 2) throw new Error("transient");
        return x * 2;
      },
    );
    await startWorker(app, { queue: "mail" });
    const r = await flaky.delay(21);
    expect(await r.get({ timeout: 5 })).toBe(42);
    expect(attempts.map((a) => a.retries)).toEqual([0, 1, 2]);
  });

  it("ctx.retry({ countdown }) schedules another attempt; MaxRetriesExceeded ends in FAILURE", async () => {
    const { app } = makeApp();
    let runs = 0;
    const t = app.task(
      { name: "asks_retry", context: true, retryPolicy: { maxRetries: 1, retryDelay: 0, jitter: false } },
      async (ctx: TaskContext) => {
        runs++;
        ctx.retry({ countdown: 0.01 });
      },
    );
    await startWorker(app);
    const error = await (await t.delay()).get({ timeout: 5 }).catch((e: unknown) => e);
    expect(runs).toBe(2);
    expect(error).toMatchObject({ errorType: MaxRetriesExceededError.name });
  });

  it("ctx.retry({ error }) with no retries left: the stored failure names that last error", async () => {
    const { app } = makeApp();
    class GatewayDown extends Error {
      override name = "GatewayDown";
    }
    let runs = 0;
    const t = app.task(
      { name: "charges", context: true, retryPolicy: { maxRetries: 1, retryDelay: 0, jitter: false } },
      async (ctx: TaskContext) => {
        runs++;
        ctx.retry({ countdown: 0, error: new GatewayDown(`gateway 502 on attempt ${runs}`) });
      },
    );
    await startWorker(app);
    const error = await (await t.delay()).get({ timeout: 5 }).catch((e: unknown) => e);
    expect(runs).toBe(2);
    expect(error).toMatchObject({ errorType: MaxRetriesExceededError.name });
    expect((error as Error).message).toContain("last error: GatewayDown: gateway 502 on attempt 2");
  });

  it("a TaskAbortedError a task throws of its own is a failure as any other (retried by its policy, then stored), not a shutdown's abort", async () => {
    const { app } = makeApp();
    let runs = 0;
    const t = app.task({ name: "self_abort", retryPolicy: { maxRetries: 1, retryDelay: 0 } }, async () => {
      runs++;
      throw new TaskAbortedError("cancelled by a business rule");
    });
    await startWorker(app);
    // before: taken for the worker's own abort, released uncounted and run again without end
    const error = await (await t.delay()).get({ timeout: 5 }).catch((e: unknown) => e);
    expect(error).toMatchObject({ errorType: "TaskAbortedError" });
    expect((error as Error).message).toContain("cancelled by a business rule");
    expect(runs).toBe(2);
  });

  it("a result whose then cannot be read (a revoked Proxy) fails the task as a ValidationError, not retried", async () => {
    const { app } = makeApp();
    let runs = 0;
    const t = app.task({ name: "revoked_result", retryPolicy: { maxRetries: 2, retryDelay: 0 } }, () => {
      runs++;
      const { proxy, revoke } = Proxy.revocable({}, {});
      revoke();
      return proxy;
    });
    await startWorker(app);
    const error = await (await t.delay()).get({ timeout: 5 }).catch((e: unknown) => e);
    // before: a TypeError, retried twice
    expect(error).toMatchObject({ errorType: "ValidationError" });
    expect((error as Error).message).toContain('task "revoked_result": its result could not be read as JSON');
    expect(runs).toBe(1);
  });

  it("a RetryError thrown by hand keeps to maxRetries and to retryOn/ignoreOn", async () => {
    const { app } = makeApp();
    class Transient extends Error {
      override name = "Transient";
    }
    class Fatal extends Error {
      override name = "Fatal";
    }
    const runs = { budget: 0, ignored: 0 };
    const budget = app.task({ name: "hand_retry", retryPolicy: { maxRetries: 2, retryDelay: 0 } }, async () => {
      runs.budget++;
      throw new RetryError({ retries: 0, maxRetries: 2, countdown: 0, reason: new Transient("flaky") });
    });
    const ignored = app.task(
      { name: "hand_retry_ignored", retryPolicy: { maxRetries: 5, retryDelay: 0, ignoreOn: ["Fatal"] } },
      async () => {
        runs.ignored++;
        throw new RetryError({ retries: 0, maxRetries: 5, countdown: 0, reason: new Fatal("bad input") });
      },
    );
    await startWorker(app);
    const spent = await (await budget.delay()).get({ timeout: 5 }).catch((e: unknown) => e);
    expect(spent).toMatchObject({ errorType: MaxRetriesExceededError.name });
    expect((spent as Error).message).toContain("last error: Transient: flaky");
    expect(runs.budget).toBe(3);
    const fatal = await (await ignored.delay()).get({ timeout: 5 }).catch((e: unknown) => e);
    expect(fatal).toMatchObject({ errorType: "Fatal" });
    expect((fatal as Error).message).toContain("bad input");
    expect(runs.ignored).toBe(1);
  });

  it("ctx.retry with a countdown that is not a duration fails the task, naming the value", async () => {
    const { app } = makeApp();
    const countdowns = [Number.NaN, Number.POSITIVE_INFINITY, -1, 1e12, "soon", "11000d"];
    let runs = 0;
    const t = app.task(
      { name: "bad_countdown", context: true, retryPolicy: { maxRetries: 3, retryDelay: 0 } },
      async (ctx: TaskContext, i: number) => {
        runs++;
        ctx.retry({ countdown: countdowns[i] as number });
      },
    );
    await startWorker(app);
    for (const [i, countdown] of countdowns.entries()) {
      const error = await (await t.delay(i)).get({ timeout: 5 }).catch((e: unknown) => e);
      expect(error).toMatchObject({ errorType: "ValidationError" });
      expect((error as Error).message).toContain(`countdown must be a duration from 0 to`);
      expect((error as Error).message).toContain(String(countdown));
    }
    expect(runs).toBe(countdowns.length); // failed for good: not retried
  });

  it("ctx.retry takes a countdown with a unit, as every duration does (SPEC §1)", async () => {
    const { app } = makeApp();
    const t = app.task(
      { name: "unit_countdown", context: true, retryPolicy: { maxRetries: 1, retryDelay: 60 } },
      async (ctx: TaskContext) => {
        if (ctx.retries === 0) ctx.retry({ countdown: "20ms" });
        return ctx.retries;
      },
    );
    await startWorker(app);
    // the policy's 60 s would time the get() out: the countdown given is used
    expect(await (await t.delay()).get({ timeout: 5 })).toBe(1);
  });

  it("worker.stop() takes a duration with a unit, and refuses a timeout that is not one (it would not be bounded)", async () => {
    const { app } = makeApp();
    const worker = await startWorker(app);
    await expect(worker.stop(Number.NaN)).rejects.toThrow(
      /worker.stop\(timeout\): expected a non-negative number of seconds, got NaN/,
    );
    await expect(worker.stop(-1)).rejects.toBeInstanceOf(ConfigurationError);
    await expect(worker.stop("soon")).rejects.toThrow(/is not a duration/);
    expect(worker.isRunning).toBe(true);
    await worker.stop("1s");
    expect(worker.isRunning).toBe(false);
  });

  it("a task that throws something unreadable fails cleanly and the worker keeps going", async () => {
    const { app } = makeApp();
    const throws: Array<() => unknown> = [
      () => Object.assign(new Error("stackless"), { stack: null }),
      () => Object.assign(new Error("named by a number"), { name: 42 }),
      () =>
        new Proxy(
          {},
          {
            get() {
              throw new Error("trap");
            },
          },
        ),
      () => {
        // `instanceof` itself throws on a revoked Proxy
        const { proxy, revoke } = Proxy.revocable(new Error("inner"), {});
        revoke();
        return proxy;
      },
    ];
    const runs = throws.map(() => 0);
    const t = app.task({ name: "throws_oddly", retryPolicy: { maxRetries: 1, retryDelay: 0 } }, async (i: number) => {
      runs[i] = (runs[i] ?? 0) + 1;
      throw (throws[i] as () => unknown)();
    });
    const ok = app.task({ name: "fine" }, async () => "fine");
    await startWorker(app);
    for (const i of throws.keys()) {
      const r = await t.delay(i);
      await expect(r.get({ timeout: 5 })).rejects.toBeInstanceOf(TaskFailedError);
      expect(await r.state()).toBe("FAILURE");
    }
    expect(runs).toEqual(throws.map(() => 2)); // the first run and its one retry, as the policy says
    expect(await (await ok.delay()).get({ timeout: 5 })).toBe("fine");
  });

  it("dead-letters exhausted retries when the DLQ is on", async () => {
    const { app, broker } = makeApp();
    const t = app.task({ name: "always_fails", retryPolicy: { maxRetries: 1, retryDelay: 0 } }, async () => {
      throw new Error("nope");
    });
    await startWorker(app, { useDeadLetterQueue: true });
    const r = await t.delay();
    await expect(r.get({ timeout: 5 })).rejects.toBeInstanceOf(TaskFailedError);
    expect(await r.state()).toBe("DEAD_LETTERED");
    const dlq = await broker.getDlqMessages("default");
    expect(dlq).toHaveLength(1);
    expect(dlq[0]?.originalMessage).toMatchObject({ id: r.taskId, name: "always_fails", retries: 1 });
    expect(dlq[0]?.error).toContain("nope");
  });

  it("a retry whose next message would not fit the size limit ends as a final failure", async () => {
    const limit = 2048;
    const { app, broker } = makeApp({ config: { maxMessageBytes: limit } });
    let runs = 0;
    const t = app.task({ name: "near_limit", retryPolicy: { maxRetries: 5, retryDelay: 0 } }, async (_pad: string) => {
      runs++;
      throw new Error("transient");
    });
    // A first message 10 bytes under the limit: its retry adds an eta and a firstFailureAt.
    const base = app.codec.encode(taskMessage({ id: crypto.randomUUID(), name: "near_limit", args: [""] })).length;
    const r = await t.delay("x".repeat(limit - base - 10));
    await startWorker(app, { useDeadLetterQueue: true });
    await expect(r.get({ timeout: 5 })).rejects.toMatchObject({ errorType: "MessageTooLarge" });
    expect(runs).toBe(1);
    expect(await r.state()).toBe("DEAD_LETTERED");
    const [dead] = await broker.getDlqMessages("default");
    expect(dead?.error).toMatch(/cannot retry.*over the limit of 2048 bytes.*transient/);
  });

  it("validation: inputs rejects at delay(), the worker receives coerced values, failures are never retried", async () => {
    const { app, broker } = makeApp({ validationMode: "strict" });
    const received: unknown[] = [];
    const t = app.task(
      {
        name: "typed",
        args: z.tuple([z.string().email(), z.coerce.date()]),
        result: z.object({ ok: z.literal(true) }),
        retryPolicy: { maxRetries: 5, retryDelay: 0 },
      },
      async (email, when) => {
        received.push(email, when instanceof Date);
        return { ok: email !== "bb@cd.io" } as { ok: true };
      },
    );
    await expect(t.delay("not-an-email", "2026-01-01")).rejects.toBeInstanceOf(ValidationError);
    expect(await broker.getQueueSize("default")).toBe(0);
    await startWorker(app, { useDeadLetterQueue: true });
    expect(await (await t.delay("ab@cd.io", "2026-01-01")).get({ timeout: 5 })).toEqual({ ok: true });
    expect(received).toEqual(["ab@cd.io", true]);
    const bad = await t.delay("bb@cd.io", "2026-01-01");
    await expect(bad.get({ timeout: 5 })).rejects.toMatchObject({ errorType: "ValidationError" });
    expect(await broker.getDlqCount("default")).toBe(1);
  });

  it("a result schema sees what the handler returned: z.void() accepts undefined, stored as null", async () => {
    const { app } = makeApp({ validationMode: "outputs" });
    const quiet = app.task({ name: "returns_nothing", result: z.void() }, async () => {});
    const maybe = app.task({ name: "returns_maybe", result: z.number().optional() }, async () => undefined);
    await startWorker(app);
    const r1 = await quiet.delay();
    expect(await r1.get({ timeout: 5 })).toBeNull();
    expect(await r1.state()).toBe("SUCCESS");
    expect(await (await maybe.delay()).get({ timeout: 5 })).toBeNull();
  });

  it("a schema that throws (instead of reporting an issue) fails validation: a ValidationError at delay(), not retried in the worker", async () => {
    const { app, broker } = makeApp({ validationMode: "strict" });
    const throwing = z.number().transform((n) => {
      if (n < 0) throw new RangeError("negative");
      return n;
    });
    let runs = 0;
    const t = app.task(
      { name: "throwing_schemas", args: z.tuple([throwing]), result: throwing, retryPolicy: { maxRetries: 3 } },
      async (n: number) => {
        runs++;
        return n - 10;
      },
    );
    await expect(t.delay(-1)).rejects.toThrow(/arguments failed validation: the schema threw RangeError: negative/);
    expect(await broker.getQueueSize("default")).toBe(0);
    await startWorker(app, { useDeadLetterQueue: true });
    const r = await t.delay(5); // the result (-5) makes the result schema throw
    await expect(r.get({ timeout: 5 })).rejects.toMatchObject({
      errorType: "ValidationError",
      message: expect.stringContaining("result failed validation: the schema threw RangeError: negative"),
    });
    expect(runs).toBe(1); // not retried
    expect(await broker.getDlqCount("default")).toBe(1);
  });

  it("ignoreResult: a returned value that is not JSON is no failure (nothing is stored)", async () => {
    const { app } = makeApp();
    const t = app.task({ name: "returns_row", ignoreResult: true }, async () => ({ id: 10n, at: new Date(0) }));
    await startWorker(app);
    const r = await t.delay();
    expect(await r.get({ timeout: 5 })).toBeUndefined();
    expect(await r.state()).toBe("SUCCESS");
  });

  it("a result over maxResultBytes fails its task once, counted in UTF-8 bytes of JSON; others are stored", async () => {
    const { app, backend } = makeApp({ config: { maxResultBytes: 1024 } });
    let runs = 0;
    const echo = app.task(
      { name: "echo_result", retryPolicy: { maxRetries: 3, retryDelay: 0 } },
      async (value: string | string[]) => {
        runs++;
        return value;
      },
    );
    await startWorker(app);
    // past the length up to which no count is needed (6 × 170 + 2 ≤ 1024): counted, fits;
    // 255 surrogate pairs are 1,020 bytes of UTF-8, 170 lone surrogates 1,020 bytes escaped
    const fits = [
      "x".repeat(1022),
      "x".repeat(171),
      "é".repeat(510),
      "😀".repeat(255),
      "\ud800".repeat(170),
      ["a".repeat(1000)],
    ];
    // 1,200 bytes of UTF-8 in 600 characters; 200 control characters, each 6 bytes escaped
    const over = [
      "x".repeat(1023),
      "é".repeat(600),
      "\u0001".repeat(200),
      "😀".repeat(256),
      "\ud800".repeat(171),
      ["a".repeat(1021)],
    ];
    const stored = await Promise.all(fits.map(async (v) => (await echo.delay(v)).get({ timeout: 5 })));
    expect(stored).toEqual(fits);
    for (const value of over) {
      const r = await echo.delay(value);
      const error = await r.get({ timeout: 5 }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(TaskFailedError);
      expect(error).toMatchObject({
        errorType: "ValidationError",
        message: expect.stringMatching(
          /its result is \d+ bytes of JSON, over the limit of 1024 bytes \(maxResultBytes/,
        ),
      });
      // the record holds the failure, not the value
      const record = await backend.getResult(r.taskId);
      expect(record?.state).toBe("FAILURE");
      expect(record?.result ?? null).toBeNull();
    }
    // not retried: a result too large stays too large
    expect(runs).toBe(fits.length + over.length);
  });

  it("a size refusal by the broker's server names the task, as the local limit's does", async () => {
    const { app, broker } = makeApp();
    const t = app.task(async function sentTooBig() {});
    // as RabbitMQ's max_message_size or Redis's proto-max-bulk-len refuse one
    vi.spyOn(broker, "publish").mockRejectedValue(new MessageTooLargeError(300, 200, { source: "the server's limit" }));
    const refused = await t.delay().catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(MessageTooLargeError);
    expect(refused).toMatchObject({ size: 300, limit: 200, source: "the server's limit", taskName: "sentTooBig" });
    expect((refused as Error).message).toBe(
      'task "sentTooBig": message is 300 bytes, over the limit of 200 bytes (the server\'s limit)',
    );
    const chosen = await t.applyAsync([], { taskId: "too-big-id" }).catch((e: unknown) => e);
    expect(chosen).toMatchObject({ taskName: "sentTooBig" });
  });

  it("rejects non-JSON arguments naming the argument, and oversized messages at dispatch", async () => {
    const { app } = makeApp({ config: { maxMessageBytes: 2048 } });
    const t = app.task(async function takesAnything(_x: unknown, _y?: unknown) {});
    await expect(t.delay(1, () => 1)).rejects.toThrow(/argument 2: a function/);
    await expect(t.delay(1, 10n)).rejects.toThrow(/argument 2: BigInt/);
    await expect(t.delay(new Date())).rejects.toThrow(/argument 1: a Date/);
    await expect(t.delay(new Error("x"))).rejects.toThrow(/argument 1: an Error is not plain JSON/);
    await expect(t.delay(new Uint8Array(1))).rejects.toThrow(/argument 1: a Uint8Array is not plain JSON/);
    await expect(t.delay(new URL("http://x"))).rejects.toThrow(/argument 1: a URL is not plain JSON/);
    // an array's own toJSON would replace its items in the message
    const replaced = Object.assign([1, 2], { toJSON: () => ({ replaced: true }) });
    await expect(t.delay({ list: replaced })).rejects.toThrow(/argument 1\.list\.toJSON: a function is not JSON/);
    await expect(t.delay("x".repeat(4096))).rejects.toBeInstanceOf(MessageTooLargeError);
    await expect(t.delay("x".repeat(4096))).rejects.toThrow(
      /^task "takesAnything": message is \d+ bytes, over the limit of 2048 bytes \(CHICORY_MAX_MESSAGE_BYTES\)$/,
    );
  });

  it("undefined: optional properties and trailing arguments are left out, as JSON.stringify does; elsewhere an error", async () => {
    const { app } = makeApp();
    const seen: unknown[] = [];
    const echo = app.task(async function echo(options: { a: number; b?: string | undefined }, extra?: number) {
      seen.push(options, extra, arguments.length);
      return { a: options.a, note: options.b, extra };
    });
    await startWorker(app);
    const r = await echo.delay({ a: 1, b: process.env.CHICORY_TEST_UNSET_VARIABLE }, undefined);
    // the result's undefined properties are left out too, not a failure after the task ran
    expect(await r.get({ timeout: 5 })).toEqual({ a: 1 });
    expect(seen).toEqual([{ a: 1 }, undefined, 1]);
    const any = app.task(async function anyArgs(..._xs: unknown[]) {});
    await expect(any.delay(1, undefined, 3)).rejects.toThrow(/argument 2: undefined is not JSON.*\(pass null\)/);
    await expect(any.delay([1, undefined])).rejects.toThrow(/argument 1\[1\]: undefined is not JSON/);
  });

  it("reports bad dispatch input through the returned promise, never by throwing", async () => {
    const { app, broker } = makeApp();
    const t = app.task(async function opts(_x: number) {});
    let pending: Promise<unknown>[] = [];
    expect(() => {
      pending = [
        t.applyAsync(5 as unknown as [number]),
        t.applyAsync([1], { priority: 300 }),
        t.applyAsync([1], { queue: "bad queue" }),
        t.applyAsync([1], { countdown: 1, eta: new Date() }),
        t.applyAsync([1], { taskId: "" }),
        t.applyAsync([1], { countdown: -1 }),
        t.applyAsync([1], { countdown: 1e12 }), // past ten years (an ISO date past year 9999 or none)
        t.applyAsync([1], { eta: new Date(Date.now() + 11 * 366 * 24 * 3600 * 1000) }),
        t.applyAsync([1], { countdwn: 5 } as unknown as ApplyOptions), // a typo would run it at once
        t.applyAsync([1], null as unknown as ApplyOptions), // before: a TypeError
        // before: taken for "left out" (a null taskId even published a generated id as unique)
        t.applyAsync([1], { taskId: null } as unknown as ApplyOptions),
        t.applyAsync([1], { queue: null } as unknown as ApplyOptions),
        t.applyAsync([1], { priority: null } as unknown as ApplyOptions),
        t.applyAsync([1], { priority: "3" } as unknown as ApplyOptions),
      ];
    }).not.toThrow();
    const errors = await Promise.all(
      pending.map((p) =>
        p.then(
          () => null,
          (e: unknown) => e,
        ),
      ),
    );
    // every bad call argument is a ValidationError, whatever the option
    expect(errors.map((e) => (e as Error).constructor.name)).toEqual([
      "ValidationError",
      "ValidationError",
      "ValidationError",
      "ValidationError",
      "ValidationError",
      "ValidationError",
      "ValidationError",
      "ValidationError",
      "ValidationError",
      "ValidationError",
      "ValidationError",
      "ValidationError",
      "ValidationError",
      "ValidationError",
    ]);
    expect(String(errors[9])).toMatch(/applyAsync: options must be an object, got null/);
    expect(String(errors[10])).toMatch(/taskId must be a well-formed string/);
    expect(String(errors[11])).toMatch(/queue name null is invalid/);
    expect(String(errors[12])).toMatch(/priority: expected an integer from 0 to 255, got null$/);
    expect(String(errors[13])).toMatch(/priority: expected an integer from 0 to 255, got "3"$/);
    expect(String(errors[8])).toMatch(
      /applyAsync: unknown option "countdwn" \(options: countdown, eta, queue, priority, taskId\)/,
    );
    expect(String(errors[5])).toMatch(/countdown: expected a non-negative number of seconds, got -1/);
    expect(String(errors[6])).toMatch(/applyAsync: countdown: at most ten years, got 1000000000000$/);
    expect(String(errors[7])).toMatch(/applyAsync: eta: at most ten years ahead, got \d{4}-/);
    expect(await broker.getQueueSize("default")).toBe(0);
  });

  it("a worker whose app registers no task says so at start (the tasks' module not imported where it is built)", async () => {
    const { app } = makeApp();
    const { logger, warnings } = warningLogger();
    const worker = new Worker(app, { logger });
    await worker.start();
    cleanups.push(() => worker.stop(1));
    expect(warnings).toEqual([
      expect.stringMatching(/^this worker's app registers no task: every message it gets is rejected/),
    ]);
  });

  it("moves poison, undecodable, oversized, unsigned and unknown-task messages to the DLQ and keeps going", async () => {
    const { app, broker } = makeApp({ config: { signingKey: "key", maxMessageBytes: 4096 } });
    const ok = app.task(async function okTask() {
      return "fine";
    });
    await startWorker(app, { useDeadLetterQueue: true });
    const unsigned = new MessageCodec().encode({
      v: 1,
      id: "u1",
      name: "okTask",
      args: [],
      retries: 0,
      eta: null,
      priority: null,
      firstFailureAt: null,
      lastError: null,
    });
    const unknown = app.codec.encode({
      v: 1,
      id: "n1",
      name: "no_such_task",
      args: [],
      retries: 0,
      eta: null,
      priority: null,
      firstFailureAt: null,
      lastError: null,
    });
    for (const [id, body] of [
      ["p1", "\x80\x04\x95cos\nsystem\n"],
      ["p2", "{not json"],
      ["p3", `{"v":1,"pad":"${"x".repeat(5000)}"}`],
      ["u1", unsigned],
      ["n1", unknown],
    ] as const) {
      await broker.publish("default", { id, body });
    }
    expect(await (await ok.delay()).get({ timeout: 5 })).toBe("fine");
    await eventually(async () => (await broker.getDlqCount("default")) === 5);
    const errors = (await broker.getDlqMessages("default")).map((m) => m.error).join("\n");
    expect(errors).toMatch(/decode_error/);
    expect(errors).toMatch(/too_large/);
    expect(errors).toMatch(/unsigned/);
    expect(errors).toMatch(/TaskNotFoundError/);
    expect(await new AsyncResult("n1", app.backend).state()).toBe("DEAD_LETTERED");
    // the record says what this worker does register (a worker missing its tasks' module shows)
    await expect(new AsyncResult("n1", app.backend).get({ timeout: 1 })).rejects.toMatchObject({
      remoteMessage: expect.stringMatching(/is not registered by this worker \(it registers \d+: .*ok/),
    });
  });

  it("dead-letters a message delivered more than maxDeliveries times", async () => {
    const { app, broker } = makeApp({ claimMinIdleMs: 100 });
    const t = app.task(async function poison() {
      return 1;
    });
    await app.connect();
    const r = await t.delay();
    for (let i = 0; i < 2; i++) {
      const consumer = broker.consumer({ queues: ["default"], consumerId: `crash-${i}` });
      const got = await eventually(async () => {
        const d = await consumer.fetch(1, AbortSignal.timeout(500));
        return d.length ? d : null;
      });
      expect(got).toHaveLength(1);
      await consumer.close();
    }
    await startWorker(app, { useDeadLetterQueue: true, maxDeliveries: 2 });
    await expect(r.get({ timeout: 5 })).rejects.toMatchObject({ errorType: "PoisonMessage" });
    expect(await broker.getDlqCount("default")).toBe(1);
  });

  it("times out attempts, aborting ctx.signal", async () => {
    const { app } = makeApp();
    let aborted = false;
    const slow = app.task({ name: "slow", timeout: "50ms", context: true }, async (ctx: TaskContext) => {
      await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve));
      aborted = true;
    });
    await startWorker(app);
    await expect((await slow.delay()).get({ timeout: 5 })).rejects.toMatchObject({ errorType: "TaskTimeoutError" });
    expect(aborted).toBe(true);
  });

  it("a ctx.signal listener that throws is logged with its task, and the worker and its other jobs go on", async () => {
    const { failed, thrown } = await timeOutWithListeners(4, (signal) => {
      signal.addEventListener("abort", () => {
        throw new Error("listener function");
      });
      signal.addEventListener("abort", {
        handleEvent() {
          throw new Error("listener object");
        },
      });
      signal.addEventListener("abort", async () => {
        throw new Error("async listener");
      });
      signal.onabort = () => {
        throw new Error("onabort handler");
      };
    });
    expect(thrown.map((line) => line.fields.error).sort()).toEqual([
      "async listener",
      "listener function",
      "listener object",
      "onabort handler",
    ]);
    expect(thrown.every((line) => line.level === "error" && line.fields.taskId === failed.taskId)).toBe(true);
  });

  it("a handler that ignores its timeout keeps its slot until it returns: never more than concurrency at once", async () => {
    const { app } = makeApp();
    const release = deferred();
    let running = 0;
    let most = 0;
    const deaf = app.task({ name: "deaf_to_timeout", timeout: "50ms" }, async (n: number) => {
      running++;
      most = Math.max(most, running);
      if (n === 0) await release.promise; // ignores its timeout
      running--;
      return n;
    });
    const { logger, warnings } = warningLogger();
    const worker = await startWorker(app, { concurrency: 1, logger });
    const first = await deaf.delay(0);
    await expect(first.get({ timeout: 5 })).rejects.toMatchObject({ errorType: "TaskTimeoutError" });
    const second = await deaf.delay(1);
    await eventually(() => warnings.some((w) => w.includes("its slot stays taken until it returns")));
    expect(await second.state()).toBe("PENDING"); // waits for the slot
    expect(worker.getStats().activeTasks).toBe(1);
    release.resolve();
    expect(await second.get({ timeout: 5 })).toBe(1);
    expect(most).toBe(1);
  });

  it("never holds more messages than it can start (bounded prefetch)", async () => {
    const { app, broker } = makeApp();
    const gate = deferred();
    let running = 0;
    let maxRunning = 0;
    const t = app.task(async function gated() {
      running++;
      maxRunning = Math.max(maxRunning, running);
      await gate.promise;
      running--;
    });
    const results = await Promise.all(Array.from({ length: 10 }, () => t.delay()));
    const worker = await startWorker(app, { concurrency: 3 });
    await eventually(() => running === 3);
    expect(await broker.getPendingCount("default")).toBe(3);
    expect(await broker.getQueueSize("default")).toBe(7);
    expect(worker.getStats().activeTasks).toBe(3);
    gate.resolve();
    await Promise.all(results.map((r) => r.get({ timeout: 5 })));
    expect(maxRunning).toBe(3);
    expect(worker.getStats().tasksProcessed).toBe(10);
  });

  it("frees a slot when the handler returns: the next job runs while the result is being stored", async () => {
    const { app, broker, backend } = makeApp({ deliveryMode: "at_least_once" });
    const storeGate = deferred();
    const handlerGate = deferred();
    const store = backend.storeResult.bind(backend);
    let storesWaiting = 0;
    vi.spyOn(backend, "storeResult").mockImplementation(async (record) => {
      if (record.state === "SUCCESS" && record.result === "first") {
        storesWaiting++;
        await storeGate.promise;
      }
      return store(record);
    });
    let runs = 0;
    let running = 0;
    const t = app.task(async function pipelined() {
      runs++;
      if (runs === 1) return "first";
      running++;
      await handlerGate.promise;
      running--;
      return "later";
    });
    const results = [await t.delay()];
    const worker = await startWorker(app, { concurrency: 2 });
    await eventually(() => storesWaiting === 1);
    results.push(...(await Promise.all(Array.from({ length: 3 }, () => t.delay()))));
    // The first job's result is still being stored, yet both slots run the next jobs.
    await eventually(() => running === 2);
    expect(worker.getStats().activeTasks).toBe(2);
    expect(await broker.getPendingCount("default")).toBe(3);
    storeGate.resolve();
    handlerGate.resolve();
    expect(await Promise.all(results.map((r) => r.get({ timeout: 5 })))).toEqual(["first", "later", "later", "later"]);
    await eventually(async () => (await broker.getPendingCount("default")) === 0);
  });

  it("holds at most 2 × concurrency unacknowledged messages (running + settling); stop() waits for the settles", async () => {
    const { app, broker, backend } = makeApp({ deliveryMode: "at_least_once" });
    const storeGate = deferred();
    const store = backend.storeResult.bind(backend);
    let storesWaiting = 0;
    vi.spyOn(backend, "storeResult").mockImplementation(async (record) => {
      if (record.state === "SUCCESS") {
        storesWaiting++;
        await storeGate.promise;
      }
      return store(record);
    });
    let runs = 0;
    const t = app.task(async function quick() {
      runs++;
      return runs;
    });
    const results = await Promise.all(Array.from({ length: 10 }, () => t.delay()));
    const worker = await startWorker(app, { concurrency: 2 });
    await eventually(() => storesWaiting === 4);
    // Four outcomes (2 × concurrency) wait to be stored: the worker fetches nothing more.
    await new Promise((r) => setImmediate(r));
    expect(runs).toBe(4);
    expect(await broker.getPendingCount("default")).toBe(4);
    expect(await broker.getQueueSize("default")).toBe(6);
    const stopping = worker.stop(5);
    storeGate.resolve();
    await stopping;
    expect(await broker.getPendingCount("default")).toBe(0);
    const states = await Promise.all(results.map((r) => r.state()));
    expect(states.filter((state) => state === "SUCCESS")).toHaveLength(runs);
    expect(await broker.getQueueSize("default")).toBe(10 - runs);
  });

  it("writes STARTED for a task still running after 100 ms, never for a quick one", async () => {
    const { app, backend } = makeApp();
    const setState = vi.spyOn(backend, "setState");
    const gate = deferred();
    const slow = app.task(async function slow() {
      await gate.promise;
      return "slow";
    });
    const quick = app.task(async function quick() {
      return "quick";
    });
    await startWorker(app);
    const q = await quick.delay();
    expect(await q.get({ timeout: 5 })).toBe("quick");
    const s = await slow.delay();
    await eventually(async () => (await s.state()) === "STARTED");
    gate.resolve();
    expect(await s.get({ timeout: 5 })).toBe("slow");
    const startedFor = setState.mock.calls.filter(([, state]) => state === "STARTED").map(([id]) => id);
    expect(startedFor).toEqual([s.taskId]);
  });

  it("stores a run's outcome after its own STARTED write still in flight: a slow STARTED does not replace RETRY", async () => {
    const { app, backend } = makeApp();
    const startedAsked = deferred();
    const startedWritten = deferred();
    const retryAsked = deferred();
    const threw = deferred();
    const setState = backend.setState.bind(backend);
    vi.spyOn(backend, "setState").mockImplementation(async (taskId, state, extra) => {
      if (state === "RETRY") retryAsked.resolve();
      if (state !== "STARTED") return setState(taskId, state, extra);
      // a pooled connection that answers late: until the run's outcome is asked for on another
      // (before), or at most 300 ms after the run ended (the outcome waits for it)
      startedAsked.resolve();
      await threw.promise;
      await Promise.race([retryAsked.promise, new Promise((resolve) => setTimeout(resolve, 300))]);
      await setState(taskId, state, extra);
      startedWritten.resolve();
    });
    const t = app.task(
      { name: "retries_later", retryPolicy: { maxRetries: 1, retryDelay: 60 } },
      async function retriesLater() {
        await startedAsked.promise; // ran past 100 ms: STARTED asked for
        threw.resolve();
        throw new Error("try again later");
      },
    );
    await startWorker(app);
    const r = await t.delay();
    await startedWritten.promise;
    // before, the late STARTED replaced the RETRY, and the job read STARTED for its retry delay
    await eventually(async () => (await r.state()) === "RETRY");
  });

  it("stop() drains running tasks within the timeout", async () => {
    const { app } = makeApp();
    const gate = deferred();
    const started = deferred();
    const t = app.task(async function drains() {
      started.resolve();
      await gate.promise;
      return "done";
    });
    const worker = await startWorker(app);
    const r = await t.delay();
    await started.promise;
    const stopping = worker.stop(5);
    gate.resolve();
    await stopping;
    expect(worker.isRunning).toBe(false);
    expect(await r.get({ timeout: 5 })).toBe("done");
  });

  it("stop() during start()'s startup hooks waits for the start, then stops it: nothing left running", async () => {
    const { app, broker } = makeApp();
    const shutdownHookRan = deferred();
    const hookStarted = deferred();
    const order: string[] = [];
    app.onWorkerStartup(async () => {
      hookStarted.resolve();
      // A slow startup: it ends when a shutdown hook runs meanwhile (it must not), else after
      // 300 ms.
      await Promise.race([shutdownHookRan.promise, new Promise((resolve) => setTimeout(resolve, 300))]);
      order.push("startup hook");
    });
    app.onWorkerShutdown(() => {
      order.push("shutdown hook");
      shutdownHookRan.resolve();
    });
    const worker = new Worker(app, { logger: silentLogger, concurrency: 2 });
    const starting = worker.start();
    await hookStarted.promise; // connected: from here a stop() waits for the start
    const stopping = worker.stop(1);
    await Promise.all([starting, stopping]);
    expect(worker.isRunning).toBe(false);
    expect(order).toEqual(["startup hook", "shutdown hook"]);
    // Stopped for good: the broker sees no consumer of the queue, nothing is fetched.
    expect(await broker.getConsumerCount("default")).toBe(0);
  });

  it("stop() while start() still connects cancels the start: it rejects, no hook runs, nothing is left running", async () => {
    const { app, broker } = makeApp();
    const hooks: string[] = [];
    app.onWorkerStartup(() => void hooks.push("startup"));
    app.onWorkerShutdown(() => void hooks.push("shutdown"));
    const worker = new Worker(app, { logger: silentLogger });
    const starting = worker.start().catch((e: unknown) => e);
    await worker.stop(1);
    expect(String(await starting)).toContain("worker start cancelled");
    expect(hooks).toEqual([]);
    expect(worker.isRunning).toBe(false);
    expect(await broker.getConsumerCount("default")).toBe(0);
    // and it starts again
    await worker.start();
    expect(worker.isRunning).toBe(true);
    await worker.stop(1);
  });

  it("stop() cancelling one worker's start does not disconnect the app under another worker starting with it", async () => {
    const { app, broker } = makeApp();
    const connectBroker = broker.connect.bind(broker);
    const connectHeld = deferred<void>();
    broker.connect = async () => {
      await connectHeld.promise; // a broker that takes its time to connect
      await connectBroker();
    };
    const echo = app.task(async function echo(x: number) {
      return x;
    });
    const first = new Worker(app, { logger: silentLogger });
    const second = new Worker(app, { logger: silentLogger });
    const firstStarting = first.start().catch((e: unknown) => e);
    const secondStarting = second.start();
    await first.stop(1);
    expect(String(await firstStarting)).toContain("worker start cancelled");
    connectHeld.resolve();
    await secondStarting;
    cleanups.push(() => second.stop(1));
    // before, the cancelled start disconnected the app under the second worker
    expect((await broker.healthcheck()).connected).toBe(true);
    expect(await (await echo.delay(7)).get({ timeout: 5 })).toBe(7);
    expect(second.isRunning).toBe(true);
  });

  /** An app with counting hooks, a worker running, and a second one held in its start. */
  async function runningAndStarting(secondLogger: Logger = silentLogger) {
    const { app, broker } = makeApp();
    const events: string[] = [];
    app.onWorkerStartup(() => void events.push("up"));
    app.onWorkerShutdown(async () => {
      await new Promise((resolve) => setTimeout(resolve, 10)); // closing a pool takes a moment
      events.push("down");
    });
    const echo = app.task(async function echo(x: number) {
      return x;
    });
    const first = new Worker(app, { logger: silentLogger });
    await first.start();
    const checkHeld = deferred<void>();
    const checkEntered = deferred<void>();
    Object.assign(broker, {
      // (the memory broker has none: the second worker's start checks its access slowly)
      checkAccess: async () => {
        checkEntered.resolve();
        await checkHeld.promise;
      },
    });
    const second = new Worker(app, { logger: secondLogger });
    const secondStarting = second.start().catch((e: unknown) => e);
    await checkEntered.promise;
    return { app, broker, events, echo, first, second, secondStarting, checkHeld };
  }

  it("the last running worker stopping while another starts leaves the shutdown hooks and the app to that one", async () => {
    const { broker, events, echo, first, second, secondStarting, checkHeld } = await runningAndStarting();
    await first.stop(1);
    // before, the shutdown hooks ran here (closing what the second worker then ran with)
    expect(events).toEqual(["up"]);
    checkHeld.resolve();
    expect(await secondStarting).toBeUndefined();
    expect(events).toEqual(["up"]); // the startup hooks' work is still there: not run again
    expect(await (await echo.delay(5)).get({ timeout: 5 })).toBe(5);
    await second.stop(1);
    expect(events).toEqual(["up", "down"]);
    expect((await broker.healthcheck()).connected).toBe(false);
  });

  it("a start cancelled after the last running worker stopped runs the shutdown hooks it was left, then disconnects", async () => {
    const { broker, events, first, second, secondStarting, checkHeld } = await runningAndStarting();
    await first.stop(1);
    expect(events).toEqual(["up"]);
    await second.stop(1); // still checking its access: cancels the start
    expect(events).toEqual(["up", "down"]); // that stop() waited for them
    expect(String(await secondStarting)).toContain("worker start cancelled");
    checkHeld.resolve();
    // (the disconnect after a cancel goes on in the background: a connect may hang)
    await vi.waitFor(async () => expect((await broker.healthcheck()).connected).toBe(false));
  });

  it("a worker started again while a cancelled start runs its shutdown hooks keeps its connections", async () => {
    const { app, broker, events, echo, first, second, secondStarting } = await runningAndStarting();
    const hookHeld = deferred<void>();
    const hookEntered = deferred<void>();
    app.onWorkerShutdown(async () => {
      hookEntered.resolve();
      await hookHeld.promise; // closing a pool takes a moment
    });
    Object.assign(broker, { checkAccess: undefined }); // (the next starts check at once)
    await first.stop(1);
    const cancelling = second.stop(1);
    await hookEntered.promise;
    const restarting = first.start(); // counted as starting while the hooks run
    hookHeld.resolve();
    await Promise.all([cancelling, restarting]);
    expect(String(await secondStarting)).toContain("worker start cancelled");
    cleanups.push(() => first.stop(1));
    // before, the cancelled start's disconnect, after its hooks, closed the app under it
    expect((await broker.healthcheck()).connected).toBe(true);
    expect(await (await echo.delay(5)).get({ timeout: 5 })).toBe(5);
    expect(events).toEqual(["up", "down", "up"]);
  });

  it("the same worker started again while its cancelled start runs the shutdown hooks: the pending stop() leaves it running, its logs routed", async () => {
    const { logger, lines } = capturingLogger();
    const { app, broker, echo, first, second, secondStarting } = await runningAndStarting(logger);
    const hookHeld = deferred<void>();
    const hookEntered = deferred<void>();
    app.onWorkerShutdown(async () => {
      hookEntered.resolve();
      await hookHeld.promise;
    });
    Object.assign(broker, { checkAccess: undefined });
    await first.stop(1);
    const cancelling = second.stop(1);
    await hookEntered.promise;
    await second.start();
    cleanups.push(() => second.stop(1));
    hookHeld.resolve();
    await cancelling;
    expect(String(await secondStarting)).toContain("worker start cancelled");
    // before, that stop() went on to stop the new start too, and the old start's cleanup
    // removed the new start's log routing
    expect(second.isRunning).toBe(true);
    expect(await (await echo.delay(6)).get({ timeout: 5 })).toBe(6);
    processWarningLogger("CHICORY_TEST_ROUTED").warn("an adapter's line");
    expect(lines.some((line) => line.message === "an adapter's line")).toBe(true);
  });

  it("a stop() past its deadline while the cancelled start's shutdown hooks run: the disconnect still comes after them", async () => {
    const { app, broker, first, second, secondStarting } = await runningAndStarting();
    const hookHeld = deferred<void>();
    const seen: boolean[] = [];
    app.onWorkerShutdown(async () => {
      await hookHeld.promise; // past the stop()'s deadline
      seen.push((await broker.healthcheck()).connected);
    });
    await first.stop(1);
    await second.stop(0); // gives up on the start (its hooks) at its deadline
    expect(seen).toEqual([]);
    hookHeld.resolve();
    expect(String(await secondStarting)).toContain("worker start cancelled");
    expect(seen).toEqual([true]); // before, the stop() disconnected the app under the hook
    await vi.waitFor(async () => expect((await broker.healthcheck()).connected).toBe(false));
  });

  it("two workers whose starts stop() abandons (a startup hook that never ends) leave the app disconnected", async () => {
    const { app, broker } = makeApp();
    const hookEntered = deferred<void>();
    app.onWorkerStartup(() => {
      hookEntered.resolve();
      return new Promise<void>(() => {});
    });
    const workers = [new Worker(app, { logger: silentLogger }), new Worker(app, { logger: silentLogger })];
    for (const worker of workers) void worker.start().catch(() => undefined);
    await hookEntered.promise;
    await Promise.all(workers.map((worker) => worker.stop(0)));
    // before, each counted the other as starting and neither disconnected
    expect((await broker.healthcheck()).connected).toBe(false);
  });

  it("two starts failing on the same connect: the second to leave disconnects the app", async () => {
    const { app, broker, backend } = makeApp();
    backend.connect = async () => {
      throw new Error("backend refuses");
    };
    const starts = [new Worker(app, { logger: silentLogger }), new Worker(app, { logger: silentLogger })].map((w) =>
      w.start().catch((e: unknown) => e),
    );
    for (const failure of await Promise.all(starts)) expect(String(failure)).toContain("backend refuses");
    // before, each counted the other as still starting and neither disconnected
    expect((await broker.healthcheck()).connected).toBe(false);
  });

  it("stop() past its timeout aborts ctx.signal and releases the message for redelivery", async () => {
    const { app, broker } = makeApp();
    const started = deferred();
    let signalled = false;
    let runs = 0;
    const t = app.task({ name: "stuck", context: true }, async (ctx: TaskContext) => {
      runs++;
      if (runs > 1) return "second run";
      started.resolve();
      await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve));
      signalled = true;
      await new Promise(() => {});
    });
    const worker = await startWorker(app);
    const r = await t.delay();
    await started.promise;
    await worker.stop(0.05);
    expect(signalled).toBe(true);
    expect(await broker.getQueueSize("default")).toBe(1);
    await startWorker(app);
    expect(await r.get({ timeout: 5 })).toBe("second run");
  });

  it("an at_most_once run that stop() aborted ends FAILURE (TaskAbortedError) and counts as a failed task", async () => {
    const { app, broker } = makeApp();
    const started = deferred();
    const t = app.task({ name: "once_only", deliveryMode: "at_most_once", context: true }, async (ctx: TaskContext) => {
      started.resolve();
      await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve));
    });
    const worker = await startWorker(app);
    const r = await t.delay();
    await started.promise;
    await worker.stop(0.05);
    expect(worker.getStats()).toMatchObject({ tasksProcessed: 1, tasksFailed: 1 });
    expect(await broker.getQueueSize("default")).toBe(0);
    await app.connect();
    await expect(r.get({ timeout: 5 })).rejects.toMatchObject({ errorType: "TaskAbortedError" });
  });

  it("stop(timeout) resolves within timeout + 5 s though a task ignores its abort and a shutdown hook does not end; hooks keep their order; a restart meanwhile keeps its connections", async () => {
    const { app } = makeApp();
    const started = deferred();
    const hookMayEnd = deferred();
    let hookRan = false;
    let secondStarted = false;
    app.onWorkerShutdown(async () => {
      if (hookRan) return;
      hookRan = true;
      await hookMayEnd.promise;
    });
    app.onWorkerShutdown(() => {
      secondStarted = true; // only after the first one ended: never here
    });
    let deafRuns = 0;
    const t = app.task({ name: "deaf" }, async () => {
      if (deafRuns++ > 0) return; // its redelivery, after the restart below
      started.resolve();
      await new Promise(() => {}); // ignores ctx.signal (and keeps its slot)
    });
    const { logger: warnLogger, warnings } = warningLogger();
    const infos: string[] = [];
    const logger: Logger = {
      ...warnLogger,
      info: (_fields: unknown, message?: string) => void infos.push(message ?? ""),
    };
    logger.child = () => logger;
    const quick = app.task(async function quick() {
      return "ran";
    });
    const worker = new Worker(app, { logger, concurrency: 2 });
    await worker.start();
    cleanups.push(() => worker.stop(1));
    await t.delay();
    await started.promise;
    const stopping = worker.stop(0.2);
    const bound = new Promise<"bound">((resolve) => setTimeout(() => resolve("bound"), 200 + 5000 + 500).unref());
    expect(await Promise.race([stopping.then(() => "stopped" as const), bound])).toBe("stopped");
    expect(hookRan).toBe(true);
    expect(secondStarted).toBe(false); // the hooks keep their order past the deadline
    expect(worker.isRunning).toBe(false);
    expect(warnings.some((w) => w.startsWith("shutdown deadline: the shutdown hooks"))).toBe(true);
    // the run the stop aborted is named (at info: routine), with what becomes of its message
    expect(infos).toContain("task aborted by the stop: its message is given back to its queue, to run again");
    expect(warnings.filter((w) => w.startsWith("task aborted"))).toEqual([]);
    // the handler that ignores its abort is said to be left running (as the README says)
    await eventually(() => warnings.some((w) => w.startsWith("the stop left a handler running in the background")));
    // Started again while that shutdown's tail still runs: its late disconnect, once the hook
    // ends, must not take the restarted worker's connections.
    await worker.start();
    hookMayEnd.resolve();
    await eventually(() => secondStarted);
    await new Promise((resolve) => setImmediate(resolve));
    expect((await app.broker.healthcheck()).connected).toBe(true); // still connected
    expect(await (await quick.delay()).get({ timeout: 5 })).toBe("ran");
    expect(worker.isRunning).toBe(true);
  }, 15_000);

  it("stop() during a start whose startup hook does not end resolves by timeout + 5 s; that start never runs the worker", async () => {
    const { app } = makeApp();
    const hookMayEnd = deferred();
    const hookStarted = deferred();
    app.onWorkerStartup(() => {
      hookStarted.resolve();
      return hookMayEnd.promise;
    });
    const { logger, warnings } = warningLogger();
    const worker = new Worker(app, { logger });
    const starting = worker.start().catch((e: unknown) => e);
    await hookStarted.promise;
    const bound = new Promise<"bound">((resolve) => setTimeout(() => resolve("bound"), 100 + 5000 + 500).unref());
    expect(await Promise.race([worker.stop(0.1).then(() => "stopped" as const), bound])).toBe("stopped");
    expect(warnings.some((w) => w.includes("start still running at the deadline"))).toBe(true);
    hookMayEnd.resolve();
    expect(String(await starting)).toContain("worker start abandoned");
    expect(worker.isRunning).toBe(false);
  }, 15_000);

  it("a task whose attempt a forced stop aborts before its handler starts never starts", async () => {
    const { app, broker } = makeApp();
    const validating = deferred();
    const proceed = deferred();
    const aborted = deferred();
    let calls = 0;
    // The producer's check passes at once; the worker's waits until the stop has aborted.
    const slowArgs: StandardSchemaV1<[], []> = {
      "~standard": {
        version: 1 as const,
        vendor: "test",
        validate: (value: unknown) => {
          if (++calls === 1) return { value: value as [] };
          validating.resolve();
          return proceed.promise.then(() => ({ value: value as [] }));
        },
      },
    };
    let handlerRuns = 0;
    const gated = app.task({ name: "gated", args: slowArgs }, async () => {
      handlerRuns++;
      return "ran";
    });
    const watcher = app.task({ name: "watcher", context: true }, async (ctx: TaskContext) => {
      await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve));
      aborted.resolve();
    });
    const worker = await startWorker(app);
    await watcher.delay();
    await gated.delay();
    await validating.promise;
    const stopping = worker.stop(0.05);
    await aborted.promise;
    proceed.resolve();
    await stopping;
    expect(handlerRuns).toBe(0);
    // Both given back for another worker (nothing stored as a failure).
    expect(await broker.getQueueSize("default")).toBe(2);
  });

  it("stores heartbeats, lists active workers, sends a final heartbeat on stop", async () => {
    const { app, backend } = makeApp();
    const worker = await startWorker(app, { heartbeatInterval: 0.05, heartbeatTtl: 5 });
    const hb = await eventually(() => backend.getHeartbeat(worker.workerId));
    expect(hb).toMatchObject({ workerId: worker.workerId, isRunning: true, concurrency: 4, queue: "default" });
    expect(worker.workerId).toMatch(/^.+-\d+-[0-9a-f]{8}$/);
    expect((await backend.getActiveWorkers()).map((w) => w.workerId)).toContain(worker.workerId);
    const health = await worker.healthcheck();
    expect(health.broker.connected).toBe(true);
    expect(health.backend.connected).toBe(true);
    await worker.stop(1);
    expect((await backend.getHeartbeat(worker.workerId))?.isRunning).toBe(false);
  });

  it("a stopping worker with tasks to drain says at once in a heartbeat that it is not running", async () => {
    const { app, backend } = makeApp();
    const started = deferred<void>();
    const finish = deferred<void>();
    const slow = app.task({ name: "slow" }, async () => {
      started.resolve();
      await finish.promise;
      return 1;
    });
    const worker = await startWorker(app, { heartbeatInterval: 0.05, heartbeatTtl: 5 });
    const result = await slow.delay();
    await started.promise;
    const stopping = worker.stop(10);
    // said at once, not at the final heartbeat (before, the record said running until then, or
    // was gone once the drain outlasted its TTL)
    const first = await eventually(async () => {
      const hb = await backend.getHeartbeat(worker.workerId);
      return hb?.isRunning === false ? hb : undefined;
    });
    expect(first).toMatchObject({ activeTasks: 1 });
    finish.resolve();
    await stopping;
    expect(await result.get({ timeout: 5 })).toBe(1);
    expect(await backend.getHeartbeat(worker.workerId)).toMatchObject({ isRunning: false, activeTasks: 0 });
  });

  it("start() twice warns; lifecycle hooks run once; a failing startup hook stops the worker", async () => {
    const { app } = makeApp();
    const events: string[] = [];
    app.onWorkerStartup(() => void events.push("up"));
    app.onWorkerShutdown(() => void events.push("down"));
    const { logger, warnings } = warningLogger();
    const worker = new Worker(app, { logger });
    const first = worker.start();
    await worker.start(); // while the first is in progress: resolves once the worker runs
    expect(worker.isRunning).toBe(true);
    await first;
    await worker.start();
    expect(warnings.filter((w) => w.includes("already"))).toHaveLength(2);
    await worker.stop(1);
    expect(events).toEqual(["up", "down"]);

    const other = makeApp();
    other.app.onWorkerStartup(() => {
      throw new Error("db down");
    });
    await expect(new Worker(other.app, { logger: silentLogger }).start()).rejects.toThrow(
      "worker startup hook failed: db down",
    );
  });

  it("lifecycle hooks run once per process, whatever the number of workers of the app: the last to stop runs the shutdown hooks", async () => {
    const { app } = makeApp();
    const events: string[] = [];
    app.onWorkerStartup(async () => {
      events.push("up");
      await new Promise((resolve) => setTimeout(resolve, 20)); // the second worker starts meanwhile
    });
    app.onWorkerShutdown(() => void events.push("down"));
    const mail = new Worker(app, { logger: silentLogger, queue: "mail", concurrency: 2 });
    const main = new Worker(app, { logger: silentLogger, queue: "default", concurrency: 8 });
    await Promise.all([mail.start(), main.start()]);
    expect(events).toEqual(["up"]);
    await mail.stop(1);
    expect(events).toEqual(["up"]); // the pool the hooks opened still serves the other worker
    await main.stop(1);
    expect(events).toEqual(["up", "down"]);
    await mail.start(); // a new run of the process's workers: the hooks run again
    await mail.stop(1);
    expect(events).toEqual(["up", "down", "up", "down"]);
  });

  it("run() blocks until stop() and removes its signal handlers", async () => {
    const { app } = makeApp();
    const before = process.listenerCount("SIGTERM");
    const worker = new Worker(app, { logger: silentLogger });
    const running = worker.run();
    await eventually(() => worker.isRunning);
    expect(process.listenerCount("SIGTERM")).toBe(before + 1);
    await worker.stop(1);
    await running;
    expect(process.listenerCount("SIGTERM")).toBe(before);
  });

  it("idempotent enqueue with a caller-chosen task id", async () => {
    const { app, broker } = makeApp();
    const t = app.task(async function once() {
      return 1;
    });
    const a = await t.applyAsync([], { taskId: "order-42" });
    const b = await t.applyAsync([], { taskId: "order-42" });
    expect(a.taskId).toBe("order-42");
    expect(b.taskId).toBe("order-42");
    expect(await broker.getQueueSize("default")).toBe(1);
  });

  it("tells the backend about new task ids only (a caller-chosen id may name an existing job)", async () => {
    const { app, backend } = makeApp();
    const expected: string[] = [];
    Object.assign(backend, { expectResult: (taskId: string) => expected.push(taskId) });
    const t = app.task(async function announced() {
      return 1;
    });
    const fresh = await t.delay();
    await t.applyAsync([], { taskId: "order-43" });
    expect(expected).toEqual([fresh.taskId]);
  });

  it("countdown delays a task; registration rejects bad names and duplicates", async () => {
    const { app, broker } = makeApp();
    const t = app.task(async function later() {
      return "later";
    });
    await startWorker(app);
    const start = Date.now();
    const r = await t.applyAsync([], { countdown: "200ms" });
    expect(await r.get({ timeout: 5 })).toBe("later");
    expect(Date.now() - start).toBeGreaterThanOrEqual(190);
    expect(() => app.task(async function later() {})).toThrow(/already registered/);
    expect(() => app.task({ name: "bad name" }, async () => {})).toThrow(/task name "bad name" is invalid/);
    expect(() => app.task(async () => {})).toThrow(/anonymous/);
    async function bindable(this: unknown) {}
    expect(() => app.task(bindable.bind(null))).toThrow(
      /"bound bindable" is no valid task name .*: give one as options.name/,
    );
    expect(() => app.getTask("nope")).toThrow(/not registered/);
    await expect(t.applyAsync([], { queue: "a b" })).rejects.toThrow(/queue name/);
    expect(await broker.getQueueSize("default")).toBe(0);
  });

  it("registration refuses task options of the wrong kind, naming the option", () => {
    const { app } = makeApp();
    const handler = async () => {};
    // Each as a caller without TypeScript (or with a cast) could pass it.
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [
        { validationMode: "input" },
        /task t1 validationMode: expected one of none, inputs, outputs, strict, got "input"/,
      ],
      [{ deliveryMode: "at-most-once" }, /task t2 deliveryMode: expected one of at_least_once, at_most_once/],
      [{ ignoreResult: "no" }, /task t3 ignoreResult: expected true or false, got "no"/],
      [{ context: 1 }, /task t4 context: expected true or false, got 1/],
      [{ args: {} }, /task t5 args: expected a Standard Schema/],
      [{ result: z.string }, /task t6 result: expected a Standard Schema .*got a function/],
      [{ timeout: 0 }, /task t7 timeout: must be more than 0/],
      [{ retries: 3 }, /task t8: unknown option "retries" \(options: name, retryPolicy, /],
      [{ isolate: "thread" }, /task t9: unknown option "isolate": not supported/],
    ];
    cases.forEach(([options, error], i) => {
      expect(() => app.task({ name: `t${i + 1}`, ...options } as never, handler)).toThrow(error);
    });
    // accepted: any letter case, as the app-level options
    expect(app.task({ name: "t10", validationMode: "STRICT" as never }, handler).validationMode).toBe("strict");
  });
});

describe("at_most_once failures with the DLQ on", () => {
  it("writes the already-acknowledged message to the DLQ", async () => {
    const { app, broker } = makeApp({ deliveryMode: "at_most_once" });
    const t = app.task(async function amoFails() {
      throw new Error("lost cause");
    });
    await startWorker(app, { useDeadLetterQueue: true });
    const r = await t.delay();
    await expect(r.get({ timeout: 5 })).rejects.toBeInstanceOf(TaskFailedError);
    await eventually(async () => (await broker.getDlqCount("default")) === 1);
    expect((await broker.getDlqMessages("default"))[0]?.error).toContain("lost cause");
    expect(await broker.getPendingCount("default")).toBe(0);
  });
});

describe("lines of adapters built without a logger", () => {
  it("go to a running worker's logger, naming the adapter, and no longer once it stops", async () => {
    const { app } = makeApp();
    const { logger, lines } = capturingLogger();
    const adapterLog = processWarningLogger("CHICORY_TEST_ADAPTER").child({ queue: "q" });
    const worker = new Worker(app, { logger, concurrency: 1 });
    await worker.start();
    adapterLog.warn({ err: "boom" }, "adapter trouble");
    adapterLog.info("adapter news");
    expect(lines).toContainEqual({
      level: "warn",
      message: "adapter trouble",
      fields: expect.objectContaining({ component: "CHICORY_TEST_ADAPTER", queue: "q", err: "boom" }),
    });
    expect(lines.some((line) => line.level === "info" && line.message === "adapter news")).toBe(true);
    await worker.stop(1);
    adapterLog.warn("adapter trouble after stop");
    expect(lines.some((line) => line.message.startsWith("adapter trouble after"))).toBe(false);
  });
});

/** A Proxy revoked at once: even `instanceof` on it throws. */
function revokedProxy(): object {
  const { proxy, revoke } = Proxy.revocable({}, {});
  revoke();
  return proxy;
}

/** Publishes a message of task `name` (no arguments) as is, past the producer's validation. */
async function publishRaw(app: Chicory, broker: MemoryBroker, name: string): Promise<AsyncResult<unknown>> {
  const task = encodeTask(app.codec, { name, args: [] });
  await app.connect();
  await broker.publish("default", { id: task.id, body: task.body });
  return new AsyncResult(task.id, app.backend);
}

describe("Worker on the memory broker: hostile values from user code", () => {
  it("a ctx.signal listener throwing an unreadable value, or an Error whose message getter throws, is logged; the job beside it ends", async () => {
    const hostileError = Object.defineProperty(new Error("x"), "message", {
      enumerable: true,
      get() {
        throw new Error("message getter threw");
      },
    });
    const { thrown } = await timeOutWithListeners(3, (signal) => {
      signal.addEventListener("abort", () => {
        throw revokedProxy();
      });
      signal.addEventListener("abort", () => {
        throw hostileError;
      });
      signal.addEventListener("abort", async () => Promise.reject(revokedProxy()));
    });
    expect(thrown.every((line) => line.level === "error")).toBe(true);
  });

  it("a logger that throws breaks neither a failure's settling nor stop()", async () => {
    const { app, broker } = makeApp();
    const fails = app.task({ name: "fails_with_bad_logger", retryPolicy: { maxRetries: 0 } }, async () => {
      throw new Error("task failure");
    });
    const written: string[] = [];
    const broken: Logger = {
      ...silentLogger,
      // throws for a line with fields (as a serializer reading a hostile value would), writes a bare one
      warn: (fields: unknown, message?: string) => {
        if (typeof fields !== "string") throw new Error("logger.warn threw");
        written.push(fields);
        void message;
      },
      info: () => {
        throw new Error("logger.info threw");
      },
      child: () => broken,
    };
    const worker = new Worker(app, { logger: broken, concurrency: 2 });
    await worker.start();
    await expect((await fails.delay()).get({ timeout: 5 })).rejects.toMatchObject({ errorType: "Error" });
    expect(written).toContain("task failed (the line's fields could not be logged: logger.warn threw)");
    await worker.stop(1);
    expect(worker.isRunning).toBe(false);
    expect(await broker.getPendingCount("default")).toBe(0);
  });

  it("hooks that throw unreadable values: start() names the startup hook's failure; stop() runs the next shutdown hook and disconnects", async () => {
    const { app } = makeApp();
    app.onWorkerStartup(() => {
      throw revokedProxy();
    });
    const worker = new Worker(app, { logger: silentLogger });
    await expect(worker.start()).rejects.toThrow(/worker startup hook failed: .*cannot be read/);

    const other = makeApp();
    const ran: string[] = [];
    other.app.onWorkerShutdown(() => {
      throw revokedProxy();
    });
    other.app.onWorkerShutdown(() => void ran.push("second hook"));
    const { logger, lines } = capturingLogger();
    const stopping = new Worker(other.app, { logger });
    const disconnect = vi.spyOn(other.app, "disconnect");
    await stopping.start();
    await stopping.stop(1);
    expect(ran).toEqual(["second hook"]);
    expect(lines.some((line) => line.message === "worker shutdown hook failed")).toBe(true);
    expect(disconnect).toHaveBeenCalled();
  });

  it("a schema that misbehaves (throws an unreadable value, answers with no result, malformed issues, or a thenable) fails validation, not retried", async () => {
    const { app, broker } = makeApp();
    const answers: Array<() => unknown> = [
      () => {
        throw revokedProxy();
      },
      () => null,
      () => ({ issues: 5 }),
      () => ({ issues: [null] }),
      () => ({ issues: [{ message: Symbol("m"), path: "not an array" }] }),
      () => ({}), // neither a value nor issues
      // biome-ignore lint/suspicious/noThenProperty: a thenable answer is the case under test
      () => ({ then: (resolve: (r: unknown) => void) => resolve({ issues: [{ message: "a thenable's" }] }) }),
    ];
    for (const [i, answer] of answers.entries()) {
      let calls = 0;
      const schema: StandardSchemaV1<unknown[], unknown[]> = {
        "~standard": {
          version: 1,
          vendor: "hostile",
          validate: () => {
            calls++;
            return answer() as StandardSchemaV1.Result<unknown[]>;
          },
        },
      };
      app.task(
        { name: `hostile_schema_${i}`, args: schema, retryPolicy: { maxRetries: 3, retryDelay: 0 } },
        async () => "ran",
      );
      const published = await publishRaw(app, broker, `hostile_schema_${i}`);
      const worker = await startWorker(app);
      await expect(published.get({ timeout: 5 })).rejects.toMatchObject({ errorType: "ValidationError" });
      expect(calls).toBe(1); // not retried
      await worker.stop(1);
    }
  });

  it("a schema whose validation never settles ends with the task's timeout, and frees its slot", async () => {
    const { app, broker } = makeApp();
    const never: StandardSchemaV1<unknown[], unknown[]> = {
      "~standard": { version: 1, vendor: "hostile", validate: () => new Promise(() => {}) },
    };
    app.task({ name: "never_validated", args: never, timeout: "100ms" }, async () => "ran");
    const other = app.task(async function plain() {
      return "plain";
    });
    await startWorker(app, { concurrency: 1 });
    const first = await publishRaw(app, broker, "never_validated");
    await expect(first.get({ timeout: 5 })).rejects.toMatchObject({ errorType: "TaskTimeoutError" });
    expect(await (await other.delay()).get({ timeout: 5 })).toBe("plain");
  });

  it("a result that cannot be read as JSON (a throwing Proxy trap, a getter whose value changes) fails as a ValidationError naming the result", async () => {
    const { app } = makeApp();
    const trap = app.task(
      { name: "proxy_result" },
      async () =>
        new Proxy(
          { a: 1 },
          {
            get(_target, key) {
              if (key === "then") return undefined; // (read as the handler's promise resolves)
              throw new Error("proxy get boom");
            },
          },
        ),
    );
    let reads = 0;
    const flips = app.task({ name: "flipping_result" }, async () => ({
      get n(): unknown {
        return reads++ === 0 ? 1 : 10n; // JSON when checked, a BigInt when copied
      },
    }));
    await startWorker(app);
    for (const t of [trap, flips]) {
      const error = await (await t.delay()).get({ timeout: 5 }).catch((e: unknown) => e);
      expect(error).toMatchObject({
        errorType: "ValidationError",
        message: expect.stringContaining("result"),
      });
    }
  });

  it("ctx.retry(null) or with a misspelt key fails the task with a ValidationError naming it, not retried", async () => {
    const { app } = makeApp();
    let runs = 0;
    const retryWith = (options: unknown) =>
      app.task(
        {
          name: `retry_${runs}_${String(options)}`.replace(/\W/g, "_"),
          context: true,
          retryPolicy: { maxRetries: 3, retryDelay: 0 },
        },
        async (ctx: TaskContext) => {
          runs++;
          ctx.retry(options as undefined);
        },
      );
    const withNull = retryWith(null);
    const misspelt = retryWith({ delay: 60 }); // (was: retried on the policy's delay, the 60 dropped)
    await startWorker(app);
    await expect((await withNull.delay()).get({ timeout: 5 })).rejects.toMatchObject({
      errorType: "ValidationError",
      message: expect.stringContaining("ctx.retry: options must be an object"),
    });
    await expect((await misspelt.delay()).get({ timeout: 5 })).rejects.toMatchObject({
      errorType: "ValidationError",
      message: expect.stringContaining('ctx.retry: unknown option "delay" (options: countdown, error)'),
    });
    expect(runs).toBe(2);
  });

  it("ctx.retry(error) from JavaScript (an error with own keys such as code and errno) retries with it as the cause", async () => {
    const { app } = makeApp();
    let runs = 0;
    const t = app.task(
      { name: "retry_error", context: true, retryPolicy: { maxRetries: 1, retryDelay: 0 } },
      async (ctx: TaskContext) => {
        if (++runs === 1)
          ctx.retry(Object.assign(new Error("socket hang up"), { code: "ECONNRESET", errno: -104 }) as never);
        return "second run";
      },
    );
    await startWorker(app);
    expect(await (await t.delay()).get({ timeout: 5 })).toBe("second run");
    expect(runs).toBe(2);
  });

  it("JavaScript callers' mistakes at registration and at get() fail at once naming them; app.tasks cannot be changed", async () => {
    const { app } = makeApp();
    const loose = app as unknown as {
      task(...args: unknown[]): unknown;
      onWorkerStartup(hook: unknown): void;
      onWorkerShutdown(hook: unknown): void;
    };
    const fn = async function named() {};
    expect(() => loose.task(fn, { queue: "q" })).toThrow(/the options go first: app.task\(options, fn\)/);
    expect(() => loose.task("named", fn)).toThrow(
      /options must be an object, got string \(for a name: app.task\(\{ name: "named" \}, fn\)\)/,
    );
    expect(() => loose.task(null, fn)).toThrow(/options must be an object, got null/);
    expect(() => loose.task({ name: "" }, fn)).toThrow(/task name "" is invalid/);
    expect(() => loose.task({ name: 5 }, fn)).toThrow(/task name number is invalid/);
    // null (options read from JSON) is as left out: the function's name
    expect((loose.task({ name: null }, async function from_json() {}) as { name: string }).name).toBe("from_json");
    expect(() => loose.onWorkerStartup(42)).toThrow(/onWorkerStartup\(\): a hook must be a function, got number/);
    expect(() => loose.onWorkerShutdown(null)).toThrow(/onWorkerShutdown\(\): a hook must be a function, got null/);
    expect(app.tasks.size).toBe(1); // (from_json)
    const t = app.task(fn);
    // app.tasks is a view: a cast to Map cannot unregister a task or add one
    const asMap = app.tasks as unknown as Partial<Map<string, unknown>>;
    expect(asMap.delete).toBeUndefined();
    expect(asMap.set).toBeUndefined();
    expect([...app.tasks.keys()]).toEqual(["from_json", "named"]);
    expect(app.tasks.get("named")).toBe(t);
    expect([...app.tasks].map(([name]) => name)).toEqual(["from_json", "named"]);
    const r = (await t.delay()) as unknown as { get(options?: unknown): Promise<unknown> };
    // each would have waited for ever (nothing runs the task here)
    await expect(r.get(5)).rejects.toThrow(
      /get: options must be an object .* got number \(for a timeout: get\(\{ timeout: 5 \}\)\)/,
    );
    await expect(r.get("5")).rejects.toThrow(ConfigurationError);
    await expect(r.get(null)).rejects.toThrow(/got null/);
    await expect(r.get({ timout: 1 })).rejects.toThrow(
      /get: unknown option "timout" \(options: timeout, pollInterval, signal\)/,
    );
  });
});

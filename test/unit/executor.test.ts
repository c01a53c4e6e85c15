import { describe, expect, it } from "vitest";
import type { TaskRecord } from "../../src/backends/backend.js";
import { BrokerConnectionError, Chicory, MemoryBackend, MemoryBroker, silentLogger } from "../../src/index.js";
import { executeActions } from "../../src/worker/executor.js";
import type { Attempt } from "../../src/worker/runner.js";
import { settle } from "../../src/worker/settle.js";
import { taskMessage } from "../contract/contract-helpers.js";
import { type FakeOptions, fakeDelivery } from "../helpers/fake-delivery.js";

/** A memory backend whose server "refuses" SUCCESS records for their size (see FakeOptions). */
class RefusingBackend extends MemoryBackend {
  successWrites = 0;
  constructor(readonly mode: "always" | "afterTransient") {
    super();
  }
  override async storeResult(record: TaskRecord): Promise<void> {
    if (record.state !== "SUCCESS") return super.storeResult(record);
    this.successWrites++;
    if (this.mode === "afterTransient" && this.successWrites === 1) {
      throw Object.assign(new Error("write ECONNRESET"), { code: "ECONNRESET" });
    }
    throw new Error("storeResult failed on mysql://h/db: Got a packet bigger than 'max_allowed_packet' bytes", {
      cause: Object.assign(new Error("Got a packet bigger than 'max_allowed_packet' bytes"), {
        code: "ER_NET_PACKET_TOO_LARGE",
        errno: 1153,
      }),
    });
  }
}

const message = taskMessage({ id: "task-1", name: "t", args: [] });

/** The settle mode of a plain at_least_once delivery: no DLQ, records stored apart from the ack. */
const AT_LEAST_ONCE_MODE = {
  deliveryMode: "at_least_once",
  useDeadLetterQueue: false,
  alreadyAcked: false,
  acksCarryRecords: false,
} as const;

/** A logger keeping the messages of its warn and error lines. */
function warningsAndErrors() {
  const logs: string[] = [];
  const logger = {
    ...silentLogger,
    warn: (_: unknown, msg?: string) => void logs.push(msg ?? ""),
    error: (_: unknown, msg?: string) => void logs.push(msg ?? ""),
  };
  return { logs, logger };
}

async function run(
  outcome: Attempt["outcome"],
  acksCarryRecords: boolean,
  useDeadLetterQueue = false,
  deliveryWritesRecords = true,
  options: FakeOptions & { readonly alreadyAcked?: boolean; readonly stopped?: boolean } = {},
) {
  const backend = options.backendRefuses ? new RefusingBackend(options.backendRefuses) : new MemoryBackend();
  const broker = new MemoryBroker();
  const app = new Chicory({ broker, backend, config: { env: {} } });
  await app.connect();
  const fake = fakeDelivery(deliveryWritesRecords, options);
  const alreadyAcked = options.alreadyAcked === true;
  const attempt: Attempt = { outcome, message, task: null, alreadyAcked };
  const settleMode = {
    deliveryMode: alreadyAcked ? ("at_most_once" as const) : ("at_least_once" as const),
    useDeadLetterQueue,
    alreadyAcked,
    acksCarryRecords,
  };
  const actions = settle(outcome, settleMode);
  const stop = new AbortController();
  if (options.stopped) stop.abort(); // a failing step is given up at once (no backoff)
  const { logs, logger } = warningsAndErrors();
  await executeActions(actions, { delivery: fake.delivery, attempt, app, logger, stopSignal: stop.signal, settleMode });
  const stored = await backend.getResult("task-1");
  await app.disconnect();
  return { ...fake, stored, logs, broker, backend };
}

/**
 * Settles `outcome` of task-1 (at_least_once, not acknowledged) on a memory app whose backend
 * `prepare` sets up first (a refusing `storeResult`, a stored record); `stopped`: a failing step
 * is given up at once. Returns the delivery's calls, the log messages and the stored record.
 */
async function settleOn(
  outcome: Attempt["outcome"],
  mode: { readonly carry: boolean; readonly dlq: boolean },
  prepare: (backend: MemoryBackend) => Promise<void> | void,
  options: { readonly fake?: FakeOptions; readonly stopped?: boolean } = {},
) {
  const backend = new MemoryBackend();
  const app = new Chicory({ broker: new MemoryBroker(), backend, config: { env: {} } });
  await app.connect();
  await prepare(backend);
  const fake = fakeDelivery(mode.carry, options.fake);
  const logs: string[] = [];
  const logger = { ...silentLogger, error: (_: unknown, msg?: string) => void logs.push(msg ?? "") };
  const stop = new AbortController();
  if (options.stopped) stop.abort();
  const settleMode = {
    deliveryMode: "at_least_once",
    useDeadLetterQueue: mode.dlq,
    alreadyAcked: false,
    acksCarryRecords: mode.carry,
  } as const;
  await executeActions(settle(outcome, settleMode), {
    delivery: fake.delivery,
    attempt: { outcome, message, task: null, alreadyAcked: false },
    app,
    logger,
    stopSignal: stop.signal,
  });
  const stored = await backend.getResult("task-1");
  await app.disconnect();
  return { calls: fake.calls, logs, stored };
}

describe("settle + executeActions: a terminal store and its ack or DLQ move", () => {
  it("become one ackWithRecord call when the broker writes the backend's records", async () => {
    const { calls, records, stored } = await run({ kind: "success", value: 42 }, true);
    expect(calls).toEqual(["ackWithRecord"]);
    expect(records).toEqual([expect.objectContaining({ taskId: "task-1", state: "SUCCESS", result: 42 })]);
    expect(stored).toBeNull(); // written by the broker's call, not through the backend
  });

  it("stay two steps (store, then ack) otherwise", async () => {
    const { calls, stored } = await run({ kind: "success", value: 42 }, false);
    expect(calls).toEqual(["ack"]);
    expect(stored).toMatchObject({ state: "SUCCESS", result: 42 });
  });

  it("a DEAD_LETTERED record and the DLQ move become one deadLetterWithRecord call", async () => {
    const error = { type: "Error", message: "boom" };
    const { calls, records, stored } = await run({ kind: "failure", error }, true, true);
    expect(calls).toEqual(["deadLetterWithRecord"]);
    expect(records).toEqual([expect.objectContaining({ taskId: "task-1", state: "DEAD_LETTERED", error })]);
    expect(stored).toBeNull(); // written by the broker's call, not through the backend
  });

  it("an acknowledged message's dead letter and its DEAD_LETTERED record become one writeDeadLetterWithRecord call", async () => {
    const error = { type: "Error", message: "boom" };
    const { calls, records, stored, broker } = await run({ kind: "failure", error }, true, true, true, {
      alreadyAcked: true,
    });
    expect(calls).toEqual(["writeDeadLetterWithRecord"]);
    expect(records).toEqual([expect.objectContaining({ taskId: "task-1", state: "DEAD_LETTERED", error })]);
    expect(stored).toBeNull(); // written by the broker's call, not through the backend
    expect(await broker.getDlqCount("q")).toBe(0); // nor through the broker's own writeDeadLetter
  });

  it("an acknowledged message whose one-call dead letter fails ends FAILURE (not in the DLQ, surely)", async () => {
    const error = { type: "Error", message: "boom" };
    const { calls, records, stored, logs } = await run({ kind: "failure", error }, true, true, true, {
      alreadyAcked: true,
      recordsRefused: true,
    });
    expect(calls).toEqual(["writeDeadLetterWithRecord"]); // tried once: it adds a message
    expect(records).toEqual([]);
    expect(stored).toMatchObject({ state: "FAILURE", error });
    expect(logs).toContain("settling step failed; not tried again (the message may have been added all the same)");
  });

  it("an acknowledged message's dead letter without the one call: written, then its record", async () => {
    const error = { type: "Error", message: "boom" };
    const { calls, stored, broker } = await run({ kind: "failure", error }, true, true, false, { alreadyAcked: true });
    expect(calls).toEqual([]);
    expect(stored).toMatchObject({ state: "DEAD_LETTERED", error });
    expect(await broker.getDlqCount("q")).toBe(1);
  });

  it("a DLQ move stays two steps (store, then move) otherwise", async () => {
    const error = { type: "Error", message: "boom" };
    const { calls, stored } = await run({ kind: "failure", error }, false, true);
    expect(calls).toEqual(["deadLetter"]);
    expect(stored).toMatchObject({ state: "DEAD_LETTERED" });
  });

  it("a delivery without the one-call settles stores through the backend, then acks or moves", async () => {
    const { calls, stored } = await run({ kind: "success", value: 42 }, true, false, false);
    expect(calls).toEqual(["ack"]);
    expect(stored).toMatchObject({ state: "SUCCESS", result: 42 });
    const error = { type: "Error", message: "boom" };
    const dead = await run({ kind: "failure", error }, true, true, false);
    expect(dead.calls).toEqual(["deadLetter"]);
    expect(dead.stored).toMatchObject({ state: "DEAD_LETTERED" });
  });
});

describe("executeActions: a result the backend's server refuses for its size", () => {
  it("ends the task FAILURE with a ValidationError at once, acknowledged, not retried nor released", async () => {
    const { calls, records, logs } = await run({ kind: "success", value: "big" }, true, false, true, {
      resultTooLarge: true,
    });
    const [stored] = records;
    expect(calls).toEqual(["ackWithRecord", "ackWithRecord"]);
    expect(stored?.state).toBe("FAILURE");
    expect(stored?.error?.type).toBe("ValidationError");
    expect(stored?.error?.message).toMatch(
      /^task "t": the result backend refused to store its result \(ERR Protocol error: invalid bulk length\): .*maxResultBytes \(CHICORY_MAX_RESULT_BYTES\)/,
    );
    expect(logs).toEqual(["task failed"]);
  });

  it("with the DLQ on, moves the message to the DLQ with its DEAD_LETTERED record", async () => {
    const { calls, records } = await run({ kind: "success", value: "big" }, true, true, true, { resultTooLarge: true });
    const [stored] = records;
    expect(calls).toEqual(["ackWithRecord", "deadLetterWithRecord"]);
    expect(stored?.state).toBe("DEAD_LETTERED");
    expect(stored?.error?.type).toBe("ValidationError");
  });

  it("stored by the backend, then acknowledged: the same, and a refusal after a dropped connection too", async () => {
    for (const backendRefuses of ["always", "afterTransient"] as const) {
      const { calls, stored, backend } = await run({ kind: "success", value: "big" }, false, false, false, {
        backendRefuses,
      });
      expect(calls).toEqual(["ack"]);
      expect(stored?.state).toBe("FAILURE");
      expect(stored?.error?.message).toMatch(
        /refused to store its result \(Got a packet bigger than 'max_allowed_packet' bytes\)/,
      );
      expect((backend as RefusingBackend).successWrites).toBe(backendRefuses === "always" ? 1 : 2);
    }
  });

  it("at_most_once (acknowledged before the run): FAILURE, or DEAD_LETTERED with the dead letter written", async () => {
    const plain = await run({ kind: "success", value: "big" }, true, false, true, {
      alreadyAcked: true,
      backendRefuses: "always",
    });
    expect(plain.calls).toEqual([]);
    expect(plain.stored?.state).toBe("FAILURE");
    const dlq = await run({ kind: "success", value: "big" }, false, true, false, {
      alreadyAcked: true,
      backendRefuses: "always",
    });
    expect(dlq.calls).toEqual([]);
    expect(dlq.stored?.state).toBe("DEAD_LETTERED");
    expect(dlq.stored?.error?.type).toBe("ValidationError");
  });

  it("another failure of the record's write is retried, then the message released, as before", async () => {
    const { calls, stored, records } = await run({ kind: "success", value: 1 }, true, false, true, {
      recordsRefused: true,
      stopped: true,
    });
    expect(calls).toEqual(["ackWithRecord", "release(counted)"]);
    expect(stored).toBeNull();
    expect(records).toEqual([]);
  });
});

describe("executeActions: leases, failed steps, publishes", () => {
  const error = { type: "Error", message: "boom" };

  it("writes no record once the delivery's lease is lost; the (broker-fenced) settle still runs", async () => {
    for (const [outcome, dlq, settleCall] of [
      [{ kind: "success", value: 42 }, false, "ack"],
      [{ kind: "failure", error }, false, "ack"],
      [{ kind: "failure", error }, true, "deadLetter"],
      [{ kind: "retry", error, delayMs: 10 }, false, "retry"],
    ] as const) {
      const { calls, stored, logs } = await run(outcome, false, dlq, false, { holdsLease: false });
      expect(calls).toEqual([settleCall]);
      expect(stored).toBeNull();
      expect(logs).toEqual([expect.stringContaining("lease lost before the outcome was stored")]);
    }
  });

  it("the broker lost the message and a final record is there: not stored again; warned of, unless a failed try of this step stored it", async () => {
    // `lostReply`: the backend stores the record, then its reply is lost (the step tried again)
    for (const [storedBefore, lostReply, level] of [
      ["SUCCESS", false, "warn"], // on a first try: another run's (the job ran twice)
      ["FAILURE", false, "warn"],
      [null, true, "info"], // this run's own, stored by the try whose reply was lost
    ] as const) {
      const backend = new MemoryBackend();
      const app = new Chicory({ broker: new MemoryBroker(), backend, config: { env: {} } });
      await app.connect();
      if (storedBefore !== null) {
        await backend.storeResult({ taskId: "task-1", state: storedBefore, updatedAt: new Date().toISOString() });
      }
      if (lostReply) {
        const store = backend.storeResult.bind(backend);
        let tries = 0;
        backend.storeResult = async (record) => {
          await store(record);
          if (tries++ === 0) throw new Error("the connection closed before the backend answered");
        };
      }
      const fake = fakeDelivery(false, { leaseState: "ownerless" });
      const lines: Array<[string, string]> = [];
      const logger = {
        ...silentLogger,
        info: (_: unknown, msg?: string) => void lines.push(["info", msg ?? ""]),
        warn: (_: unknown, msg?: string) => void lines.push(["warn", msg ?? ""]),
      };
      const outcome = { kind: "success", value: 1 } as const;
      const settleMode = AT_LEAST_ONCE_MODE;
      await executeActions(settle(outcome, settleMode), {
        delivery: fake.delivery,
        attempt: { outcome, message, task: null, alreadyAcked: false },
        app,
        logger,
        stopSignal: new AbortController().signal,
      });
      // the last line: on the try that found the final record
      expect(lines.at(-1)).toEqual([
        level,
        expect.stringMatching(
          /^the broker no longer holds this job's message and the task('s)? (already has a )?final record/,
        ),
      ]);
      expect((await backend.getResult("task-1"))?.state).toBe(storedBefore ?? "SUCCESS");
      expect(fake.calls).toEqual(["ack"]);
      await app.disconnect();
    }
  });

  it("a message done earlier in this worker: its SUCCESS stored unless one is there, then a plain ack", async () => {
    for (const carry of [false, true]) {
      const stored = await run({ kind: "done", value: 42 }, carry, false, carry);
      expect(stored.calls).toEqual(["ack"]);
      expect(stored.stored).toMatchObject({ state: "SUCCESS", result: 42 });
    }
    const at = new Date().toISOString();
    // a FAILURE of a run that could not settle the message: this message's job succeeded
    const replaced = await settleOn({ kind: "done", value: 42 }, { carry: false, dlq: true }, (backend) =>
      backend.storeResult({ taskId: "task-1", state: "FAILURE", error, updatedAt: at }),
    );
    expect(replaced.calls).toEqual(["ack"]);
    expect(replaced.stored).toMatchObject({ state: "SUCCESS", result: 42 });
    // its own SUCCESS, stored before the lease ran out (or another run's): kept
    const kept = await settleOn({ kind: "done", value: 42 }, { carry: false, dlq: false }, (backend) =>
      backend.storeResult({ taskId: "task-1", state: "SUCCESS", result: "there", updatedAt: at }),
    );
    expect(kept.calls).toEqual(["ack"]);
    expect(kept.stored).toMatchObject({ state: "SUCCESS", result: "there" });
  });

  it("stores and settles as usual while the lease is held", async () => {
    const { calls, stored } = await run({ kind: "failure", error }, false, true, false, { holdsLease: true });
    expect(calls).toEqual(["deadLetter"]);
    expect(stored).toMatchObject({ state: "DEAD_LETTERED" });
  });

  it("does not ask for the lease when the broker fences the record itself (one-call ack)", async () => {
    const { calls, stored } = await run({ kind: "success", value: 1 }, true, false, true, { holdsLease: false });
    expect(calls).toEqual(["ackWithRecord"]);
    expect(stored).toBeNull();
  });

  it("releases counting the delivery when a step keeps failing (maxDeliveries then applies)", async () => {
    const { calls, logs } = await run({ kind: "success", value: 1 }, false, false, false, {
      failing: true,
      stopped: true,
    });
    expect(calls).toEqual(["ack", "release(counted)"]);
    expect(logs).toContain("settling step failed; giving up");
  });

  it("an at_least_once retry goes on, not stopped, when its RETRY record cannot be stored (a full Redis)", async () => {
    const backend = new MemoryBackend();
    const broker = new MemoryBroker();
    const app = new Chicory({ broker, backend, config: { env: {} } });
    await app.connect();
    backend.storeResult = async () => {
      throw new Error("OOM command not allowed when used memory > 'maxmemory'.");
    };
    const outcome = { kind: "retry", error, delayMs: 1000 } as const;
    const fake = fakeDelivery(false);
    const logs: string[] = [];
    const logger = { ...silentLogger, warn: (_: unknown, msg?: string) => void logs.push(msg ?? "") };
    await executeActions(
      settle(outcome, { deliveryMode: "at_least_once", useDeadLetterQueue: false, alreadyAcked: false }),
      {
        delivery: fake.delivery,
        attempt: { outcome, message, task: null, alreadyAcked: false },
        app,
        logger,
        stopSignal: new AbortController().signal,
      },
    );
    await app.disconnect();
    expect(fake.calls).toEqual(["retry"]); // not a release: the job is not run again at once
    expect(logs).toEqual([expect.stringContaining("could not store the RETRY state; the retry goes on")]);
  });

  it("settles a rejected message without its record when the record cannot be stored, rather than release it for good", async () => {
    // Before, a poison message (rejected after maxDeliveries) whose record the backend refused
    // was released, delivered again, rejected again: a loop without end.
    const rejected = { kind: "rejected", error, taskId: "task-1" } as const;
    for (const [carry, dlq, expected] of [
      [true, true, ["deadLetterWithRecord", "deadLetter"]],
      [true, false, ["ackWithRecord", "ack"]],
      [false, true, ["deadLetter"]],
      [false, false, ["ack"]],
    ] as const) {
      const refuse = (backend: MemoryBackend) => {
        backend.storeResult = async () => {
          throw new Error("record refused");
        };
      };
      const { calls, logs } = await settleOn(rejected, { carry, dlq }, refuse, {
        fake: { recordsRefused: true },
        stopped: true, // the failing record is given up at once (no backoff)
      });
      expect(calls).toEqual(expected);
      expect(logs).toContain(
        "could not store the rejected message's record; settling it without one (its state stays as it was)",
      );
    }
  });

  it("settles a rejected message whose task has a final record already without a new record (a SUCCESS stays)", async () => {
    // A finished run's copy delivered again (its worker stopped between the record and the ack),
    // then rejected (poison, a worker without its task): before, FAILURE or DEAD_LETTERED
    // replaced the SUCCESS a get() may have returned.
    const rejected = { kind: "rejected", error, taskId: "task-1" } as const;
    for (const [carry, dlq, expected] of [
      [true, true, ["deadLetter"]],
      [true, false, ["ack"]],
      [false, true, ["deadLetter"]],
      [false, false, ["ack"]],
    ] as const) {
      const success = { taskId: "task-1", state: "SUCCESS", result: 42, updatedAt: new Date().toISOString() } as const;
      const { calls, stored } = await settleOn(rejected, { carry, dlq }, (backend) => backend.storeResult(success));
      expect(stored).toMatchObject({ state: "SUCCESS", result: 42 });
      expect(calls).toEqual(expected);
    }
  });

  it("still releases a task's own outcome whose record cannot be stored (counted: maxDeliveries bounds it)", async () => {
    const { calls } = await run({ kind: "failure", error }, true, true, true, { recordsRefused: true, stopped: true });
    expect(calls).toEqual(["deadLetterWithRecord", "release(counted)"]);
  });

  it("releases without counting the delivery when a backend apart from the broker keeps failing to store the record", async () => {
    // Before, counted: a backend outage longer than the backoff made every job poison after
    // maxDeliveries, then acknowledged without a record (its state PENDING for good).
    for (const outcome of [
      { kind: "success", value: 1 },
      { kind: "failure", error },
    ] as const) {
      const down = (backend: MemoryBackend) => {
        backend.storeResult = async () => {
          throw Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), { code: "ECONNREFUSED" });
        };
      };
      const { calls } = await settleOn(outcome, { carry: false, dlq: false }, down, { stopped: true });
      expect(calls).toEqual(["release"]);
    }
  });

  it("a DLQ move refused for a full DLQ leaves a FAILURE record, not the DEAD_LETTERED one stored before it", async () => {
    const { calls, stored, logs } = await run({ kind: "failure", error }, false, true, false, { dlqFull: true });
    expect(calls).toEqual(["deadLetter"]); // not released: it comes back after its lease
    expect(stored).toMatchObject({ state: "FAILURE", error });
    expect(logs).toContain("the DLQ is full: the message stays in its queue and comes back after its lease");
  });

  it("a shutdown's release (aborted attempt) does not count the delivery", async () => {
    const { calls } = await run({ kind: "aborted", error }, false);
    expect(calls).toEqual(["release"]);
  });

  it("a release that fails at a stop is said as what it is (the message comes back after its lease), not 'giving up'", async () => {
    const { calls, logs } = await run({ kind: "aborted", error }, false, false, true, { failing: true, stopped: true });
    expect(calls).toEqual(["release"]);
    // before: "settling step failed; giving up", at error level, which reads as a lost job
    expect(logs).toEqual([expect.stringMatching(/^could not give the message back .*once its lease expires$/)]);
  });

  it("publishes an at_most_once retry once, even when the publish fails", async () => {
    const outcome = { kind: "retry", error, delayMs: 0 } as const;
    const backend = new MemoryBackend();
    const broker = new MemoryBroker();
    const app = new Chicory({ broker, backend, config: { env: {} } });
    await app.connect();
    let publishes = 0;
    let unique: boolean | undefined;
    broker.publish = async (_queue, published) => {
      publishes++;
      unique = published.unique;
      throw new Error("publish timed out (it may still be applied)");
    };
    const fake = fakeDelivery(false);
    const logs: string[] = [];
    const logger = { ...silentLogger, error: (_: unknown, msg?: string) => void logs.push(msg ?? "") };
    const actions = settle(outcome, { deliveryMode: "at_most_once", useDeadLetterQueue: false, alreadyAcked: true });
    await executeActions(actions, {
      delivery: fake.delivery,
      attempt: { outcome, message, task: null, alreadyAcked: true },
      app,
      logger,
      stopSignal: new AbortController().signal,
    });
    await app.disconnect();
    expect(publishes).toBe(1);
    expect(unique).toBe(true); // a copy the client sends again is not added twice
    expect(fake.calls).toEqual([]); // acknowledged before the run: nothing to release
    expect(logs).toEqual([expect.stringContaining("not tried again")]);
  });

  it("publishes an at_most_once retry or dead letter even when its record cannot be stored", async () => {
    for (const [outcome, useDeadLetterQueue, expected] of [
      [{ kind: "retry", error, delayMs: 0 }, false, "publish"],
      [{ kind: "failure", error }, true, "writeDeadLetter"],
    ] as const) {
      const backend = new MemoryBackend();
      const broker = new MemoryBroker();
      const app = new Chicory({ broker, backend, config: { env: {} } });
      await app.connect();
      backend.storeResult = async () => {
        throw new Error("backend down");
      };
      const published: Array<{ step: string; priority?: number | null | undefined }> = [];
      broker.publish = async (_queue, m) => {
        published.push({ step: "publish", priority: m.priority });
        return { published: true };
      };
      broker.writeDeadLetter = async () => void published.push({ step: "writeDeadLetter" });
      const prioritized = { ...message, priority: 7 };
      const stop = new AbortController();
      stop.abort(); // the failing record is given up at once (no backoff)
      await executeActions(settle(outcome, { deliveryMode: "at_most_once", useDeadLetterQueue, alreadyAcked: true }), {
        delivery: fakeDelivery(false).delivery,
        attempt: { outcome, message: prioritized, task: null, alreadyAcked: true },
        app,
        logger: silentLogger,
        stopSignal: stop.signal,
      });
      await app.disconnect();
      expect(published.map((p) => p.step)).toEqual([expected]);
      if (expected === "publish") expect(published[0]?.priority).toBe(7); // the retry keeps its priority
    }
  });
});

describe("executeActions: a failed step tried again", () => {
  /** A memory backend whose first write of each task's record fails (a connection lost). */
  class FlakyBackend extends MemoryBackend {
    readonly #failed = new Set<string>();
    override async storeResult(record: TaskRecord): Promise<void> {
      if (!this.#failed.has(record.taskId)) {
        this.#failed.add(record.taskId);
        throw Object.assign(new Error("write ECONNRESET"), { code: "ECONNRESET" });
      }
      return super.storeResult(record);
    }
  }

  it("is warned of once per worker for jobs failing together (the others at debug, counted in the next warning)", async () => {
    const backend = new FlakyBackend();
    const app = new Chicory({ broker: new MemoryBroker(), backend, config: { env: {} } });
    await app.connect();
    const lines: Array<{ level: string; msg: string; fields: Record<string, unknown> }> = [];
    const record = (level: string) => (fields: unknown, msg?: string) =>
      void lines.push({ level, msg: msg ?? "", fields: fields as Record<string, unknown> });
    const logger = { ...silentLogger, debug: record("debug"), warn: record("warn"), error: record("error") };
    const settleMode = AT_LEAST_ONCE_MODE;
    const outcome = { kind: "success", value: 1 } as const;
    const ids = ["job-1", "job-2", "job-3"];
    await Promise.all(
      ids.map((id) =>
        executeActions(settle(outcome, settleMode), {
          delivery: fakeDelivery(false).delivery,
          attempt: { outcome, message: taskMessage({ id, name: "t", args: [] }), task: null, alreadyAcked: false },
          app,
          logger,
          stopSignal: new AbortController().signal,
          settleMode,
        }),
      ),
    );
    for (const id of ids) expect((await backend.getResult(id))?.state).toBe("SUCCESS");
    const failed = lines.filter((l) => l.msg === "settling step failed");
    expect(failed.map((l) => l.level)).toEqual(["warn", "debug", "debug"]);
    expect(failed.map((l) => l.fields.taskId).sort()).toEqual(ids);
    await app.disconnect();
  });
});

describe("an acknowledged message's retry that the broker's server refused", () => {
  const refused = () =>
    new BrokerConnectionError("redis broker publish failed: OOM command not allowed", { isRefused: true });
  const unknown = () =>
    new BrokerConnectionError("redis broker publish: no answer within 10 s; its outcome is unknown");

  /** Settles an at_most_once run's retry with publishes failing with `errors` in turn, then succeeding. */
  async function retryWith(errors: readonly Error[], stopped = false) {
    let publishes = 0;
    class Failing extends MemoryBroker {
      override async publish(...args: Parameters<MemoryBroker["publish"]>) {
        const error = errors[publishes++];
        if (error) throw error;
        return super.publish(...args);
      }
    }
    const broker = new Failing();
    const backend = new MemoryBackend();
    const app = new Chicory({ broker, backend, config: { env: {} } });
    await app.connect();
    const fake = fakeDelivery(true, {});
    const outcome = { kind: "retry", error: { type: "Error", message: "boom" }, delayMs: 0 } as const;
    const attempt: Attempt = { outcome, message, task: null, alreadyAcked: true };
    const settleMode = {
      deliveryMode: "at_most_once",
      useDeadLetterQueue: false,
      alreadyAcked: true,
      acksCarryRecords: false,
    } as const;
    const stop = new AbortController();
    if (stopped) stop.abort();
    const { logs, logger } = warningsAndErrors();
    const actions = settle(outcome, settleMode);
    await executeActions(actions, {
      delivery: fake.delivery,
      attempt,
      app,
      logger,
      stopSignal: stop.signal,
      settleMode,
    });
    const stored = await backend.getResult("task-1");
    const queued = await broker.getQueueSize(fake.delivery.queue);
    await app.disconnect();
    return { publishes, stored, queued, logs };
  }

  it("is tried again while refused, and enqueued once accepted", async () => {
    const r = await retryWith([refused(), refused()]);
    expect(r.publishes).toBe(3);
    expect(r.queued).toBe(1);
    expect(r.stored).toMatchObject({ state: "RETRY" });
  });

  it("is not tried again after a try whose outcome is unknown (it may be enqueued), and no FAILURE is stored", async () => {
    const r = await retryWith([refused(), unknown()]);
    expect(r.publishes).toBe(2);
    expect(r.stored).toMatchObject({ state: "RETRY" });
    expect(r.logs).toContain("settling step failed; not tried again (the message may have been added all the same)");
  });

  it("refused still when the worker is forced to stop: the job ends FAILURE with its handler's error", async () => {
    const r = await retryWith([refused()], true);
    expect(r.publishes).toBe(1);
    expect(r.stored).toMatchObject({ state: "FAILURE", error: { type: "Error", message: "boom" } });
    expect(r.logs).toContain(
      "the broker refused this acknowledged message's retry (nothing was enqueued): the job ends FAILURE",
    );
  });
});

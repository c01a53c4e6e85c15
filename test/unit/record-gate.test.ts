import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { TaskRecord } from "../../src/backends/backend.js";
import { BackendConnectionError, Chicory, MemoryBackend, MemoryBroker, silentLogger } from "../../src/index.js";
import { executeActions } from "../../src/worker/executor.js";
import { RecordGate } from "../../src/worker/record-gate.js";
import type { Attempt } from "../../src/worker/runner.js";
import { settle } from "../../src/worker/settle.js";
import { taskMessage } from "../contract/contract-helpers.js";
import { capturingLogger } from "../helpers/capturing-logger.js";
import { fakeDelivery } from "../helpers/fake-delivery.js";

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

/** A logger that keeps its messages. */
function keptLogs() {
  const { logger, lines } = capturingLogger();
  return { logger, messages: () => lines.map((line) => line.message) };
}

/** A backend outage as the gate sees it: `answers` is what the probe says. */
function probedBackend() {
  const state = { answers: false, probes: 0 };
  const probe = async () => {
    state.probes++;
    return state.answers;
  };
  return { state, probe };
}

describe("RecordGate", () => {
  it("is open while no record write fails", () => {
    const gate = new RecordGate(async () => false, silentLogger);
    expect(gate.closed).toBe(false);
    expect(gate.backendDown).toBe(false);
  });

  it("closes while a write fails and the backend does not answer; opens once it answers, and wakes the waiting writes", async () => {
    const { state, probe } = probedBackend();
    const { messages, logger } = keptLogs();
    const gate = new RecordGate(probe, logger);
    const write = gate.begin();
    expect(gate.closed).toBe(true); // before the first probe's answer too
    await vi.advanceTimersByTimeAsync(0);
    expect(gate.backendDown).toBe(true);
    expect(messages()).toEqual([expect.stringContaining("fetching paused")]);
    const stop = new AbortController();
    let opened = false;
    void gate.whenOpen(stop.signal).then(() => {
      opened = true;
    });
    let woken = false;
    void gate.pause(60_000, stop.signal).then(() => {
      woken = true;
    });
    await vi.advanceTimersByTimeAsync(5000);
    expect([opened, woken]).toEqual([false, false]);
    expect(state.probes).toBe(6); // one at once, then one a second
    state.answers = true;
    await vi.advanceTimersByTimeAsync(1000);
    expect([opened, woken, gate.closed, gate.backendDown]).toEqual([true, true, false, false]);
    expect(messages().at(-1)).toContain("fetching resumes");
    gate.end(write, "stored");
    const probes = state.probes;
    await vi.advanceTimersByTimeAsync(10_000);
    expect(state.probes).toBe(probes); // no probe while no write fails
  });

  it("stays open when the backend answers while a write fails (the record's own failure)", async () => {
    const { state, probe } = probedBackend();
    state.answers = true;
    const gate = new RecordGate(probe, silentLogger);
    const write = gate.begin();
    await vi.advanceTimersByTimeAsync(0);
    expect([gate.closed, gate.backendDown]).toEqual([false, false]);
    let woken = false;
    void gate.pause(8000, new AbortController().signal).then(() => {
      woken = true;
    });
    await vi.advanceTimersByTimeAsync(5000);
    expect(woken).toBe(false); // its own backoff: not woken by each answer
    await vi.advanceTimersByTimeAsync(3000);
    expect(woken).toBe(true);
    gate.end(write, "givenUp");
  });

  it("counts a probe without an answer in 5 s as down, and sends no other probe until it answers", async () => {
    let probes = 0;
    let answer: ((answers: boolean) => void) | undefined;
    const gate = new RecordGate(
      () =>
        new Promise<boolean>((resolve) => {
          probes++;
          answer = resolve;
        }),
      silentLogger,
    );
    const write = gate.begin();
    await vi.advanceTimersByTimeAsync(4900);
    expect([gate.closed, gate.backendDown]).toEqual([true, false]);
    await vi.advanceTimersByTimeAsync(100);
    expect([gate.closed, gate.backendDown]).toEqual([true, true]);
    await vi.advanceTimersByTimeAsync(20_000);
    expect(probes).toBe(1);
    answer?.(true);
    await vi.advanceTimersByTimeAsync(0);
    expect([gate.closed, gate.backendDown]).toEqual([false, false]);
    await vi.advanceTimersByTimeAsync(1000);
    expect(probes).toBe(2);
    gate.end(write, "stored");
  });

  it("sends a new probe when one stays unanswered 35 s (stuck on a dead connection) and the backend is back", async () => {
    let probes = 0;
    const gate = new RecordGate(
      () => (++probes === 1 ? new Promise<boolean>(() => undefined) : Promise.resolve(true)),
      silentLogger,
    );
    const write = gate.begin();
    await vi.advanceTimersByTimeAsync(5000);
    expect(gate.backendDown).toBe(true);
    await vi.advanceTimersByTimeAsync(30_000 + 1000);
    expect(probes).toBe(2);
    expect(gate.closed).toBe(false);
    gate.end(write, "stored");
  });

  it("logs the resumption when the writes held are stored before a probe saw the backend back; not on a stop", async () => {
    for (const [how, expected] of [
      ["stored", ["fetching paused", "fetching resumes, the records held are stored"]],
      ["stopped", ["fetching paused"]],
    ] as const) {
      const { messages, logger } = keptLogs();
      const gate = new RecordGate(async () => false, logger);
      const write = gate.begin();
      await vi.advanceTimersByTimeAsync(0);
      gate.end(write, how);
      expect(messages()).toEqual(expected.map((text) => expect.stringContaining(text)));
      expect(gate.closed).toBe(false);
    }
  });

  it("stays closed, probing, when the last write is given up while the backend does not answer (a rejected message's record)", async () => {
    const { messages, logger } = keptLogs();
    const { state, probe } = probedBackend();
    const gate = new RecordGate(probe, logger);
    const write = gate.begin();
    await vi.advanceTimersByTimeAsync(0);
    gate.end(write, "givenUp");
    await vi.advanceTimersByTimeAsync(10_000);
    expect([gate.closed, gate.failing, messages().length]).toEqual([true, 0, 1]);
    const again = gate.begin(); // another record fails meanwhile: the probing already runs
    gate.end(again, "givenUp");
    state.answers = true;
    await vi.advanceTimersByTimeAsync(1000);
    expect(gate.closed).toBe(false);
    expect(messages().at(-1)).toContain("fetching resumes");
    const probed = state.probes;
    await vi.advanceTimersByTimeAsync(10_000);
    expect(state.probes).toBe(probed); // no write waits: probing ended
  });

  it("calls onClose when a write fails while the gate is open (the worker ends a fetch under way), once per closing", async () => {
    let closings = 0;
    const gate = new RecordGate(async () => false, silentLogger, { onClose: () => void closings++ });
    const first = gate.begin();
    const second = gate.begin();
    expect(closings).toBe(1);
    await vi.advanceTimersByTimeAsync(0);
    gate.end(first, "stored");
    gate.end(second, "stored");
    gate.end(gate.begin(), "stored");
    expect(closings).toBe(2);
  });

  it("calls onPause when a probe finds the backend not answering, not before nor for a backend that answers", async () => {
    let answers = true;
    let pauses = 0;
    const gate = new RecordGate(async () => answers, silentLogger, { onPause: () => void pauses++ });
    const first = gate.begin();
    await vi.advanceTimersByTimeAsync(5000);
    expect(pauses).toBe(0); // the record's own failure: nothing given back
    gate.end(first, "givenUp");
    answers = false;
    const write = gate.begin();
    expect(pauses).toBe(0); // not before the first probe's answer
    await vi.advanceTimersByTimeAsync(0);
    expect(pauses).toBe(1);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(pauses).toBe(1); // once per outage
    gate.end(write, "stopped");
  });

  it("stop(): no more probes, the gate opens, and writes begun before count no more", async () => {
    const { state, probe } = probedBackend();
    const gate = new RecordGate(probe, silentLogger);
    const old = gate.begin();
    await vi.advanceTimersByTimeAsync(3000);
    gate.stop();
    const after = state.probes;
    await vi.advanceTimersByTimeAsync(10_000);
    expect([state.probes, gate.closed, gate.failing]).toEqual([after, false, 0]);
    const write = gate.begin(); // a start again
    gate.end(old, "stopped"); // the old write ends late: ignored
    expect([gate.closed, gate.failing]).toEqual([true, 1]);
    gate.end(write, "stored");
    expect(gate.failing).toBe(0);
  });

  it("refused writes: the first stored wakes the others, but fetching resumes (and is said to) only once none is refused", async () => {
    const { messages, logger } = keptLogs();
    const gate = new RecordGate(async () => true, logger);
    const first = gate.begin();
    const second = gate.begin();
    gate.tried(first, true, "OOM command not allowed");
    gate.tried(second, true, "OOM command not allowed");
    await vi.advanceTimersByTimeAsync(0); // the probe answers: PING works on a full Redis
    expect(gate.closed).toBe(true);
    const stop = new AbortController();
    let woken = false;
    void gate.pause(60_000, stop.signal).then(() => {
      woken = true;
    });
    gate.end(first, "stored"); // one record fitted
    await vi.advanceTimersByTimeAsync(0);
    expect(woken).toBe(true); // the other tries now
    gate.tried(second, true, "OOM command not allowed"); // refused again: memory at the limit
    expect(gate.closed).toBe(true);
    expect(messages().filter((m) => m.includes("takes writes again"))).toHaveLength(0);
    gate.end(second, "stored");
    expect(gate.closed).toBe(false);
    expect(messages().filter((m) => m.includes("refuses writes for now"))).toHaveLength(1);
    expect(messages().at(-1)).toContain("takes writes again: fetching resumes");
    stop.abort();
  });

  it("whenOpen ends when its signal aborts while the gate stays closed", async () => {
    const gate = new RecordGate(async () => false, silentLogger);
    const write = gate.begin();
    const stop = new AbortController();
    let ended = false;
    void gate.whenOpen(stop.signal).then(() => {
      ended = true;
    });
    await vi.advanceTimersByTimeAsync(2000);
    expect(ended).toBe(false);
    stop.abort();
    await vi.advanceTimersByTimeAsync(0);
    expect([ended, gate.closed]).toEqual([true, true]);
    gate.end(write, "stopped");
  });

  it("opens when the last failing write ends, and whenOpen / pause end on their signal", async () => {
    const { probe } = probedBackend();
    const gate = new RecordGate(probe, silentLogger);
    const first = gate.begin();
    const second = gate.begin();
    await vi.advanceTimersByTimeAsync(0);
    const stop = new AbortController();
    let paused = false;
    void gate.pause(60_000, stop.signal).then(() => {
      paused = true;
    });
    stop.abort();
    await vi.advanceTimersByTimeAsync(0);
    expect(paused).toBe(true);
    await expect(gate.whenOpen(stop.signal)).resolves.toBeUndefined();
    gate.end(first, "stored");
    expect(gate.closed).toBe(true);
    gate.end(second, "stored");
    expect([gate.closed, gate.failing]).toEqual([false, 0]);
  });
});

const message = taskMessage({ id: "task-1", name: "t", args: [] });
const refused = () => Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), { code: "ECONNREFUSED" });

/**
 * Settles `outcome` (at_least_once, the record stored apart from the ack) on a memory app whose
 * backend fails to store while `backend.down`, with a record gate probing `backend.answers`.
 */
async function settling(
  outcome: Attempt["outcome"],
  options: { readonly answers: boolean; readonly refuses?: boolean; readonly acked?: boolean },
) {
  const backend = new MemoryBackend();
  const app = new Chicory({ broker: new MemoryBroker(), backend, config: { env: {} } });
  await app.connect();
  const outage = { down: true, answers: options.answers, writes: 0 };
  const store = backend.storeResult.bind(backend);
  backend.storeResult = async (record: TaskRecord) => {
    outage.writes++;
    if (outage.down) {
      throw options.refuses === true
        ? new BackendConnectionError("OOM command not allowed when used memory > 'maxmemory'.", { isRefused: true })
        : refused();
    }
    await store(record);
  };
  const acked = options.acked === true;
  const { delivery, calls } = fakeDelivery(false);

  const { messages, logger } = keptLogs();
  const gate = new RecordGate(async () => outage.answers, logger);
  const stop = new AbortController();
  const settleMode = {
    deliveryMode: acked ? "at_most_once" : "at_least_once",
    useDeadLetterQueue: false,
    alreadyAcked: acked,
  } as const;
  let done = false;
  const settled = executeActions(settle(outcome, settleMode), {
    delivery,
    attempt: { outcome, message, task: null, alreadyAcked: acked },
    app,
    logger,
    stopSignal: stop.signal,
    recordGate: gate,
  }).then(() => {
    done = true;
  });
  return {
    outage,
    calls,
    messages,
    gate,
    stop,
    isDone: () => done,
    settled,
    stored: () => backend.getResult("task-1"),
    close: () => app.disconnect(),
  };
}

describe("executeActions with a record gate (a result backend apart from the broker)", () => {
  it("holds the job past the backoff while the backend does not answer, then stores its record and acks", async () => {
    const s = await settling({ kind: "success", value: 42 }, { answers: false });
    await vi.advanceTimersByTimeAsync(10 * 60_000);
    expect(s.isDone()).toBe(false);
    expect(s.calls).toEqual([]); // not given back: it would only run again
    expect([s.gate.closed, s.gate.backendDown, s.gate.failing]).toEqual([true, true, 1]);
    expect(s.outage.writes).toBeLessThan(60); // tried every 15 s past the schedule, not in a loop
    expect(s.messages()).toContain(
      "the result backend does not answer: the job's record waits for it (the job is held, not run again)",
    );
    s.outage.down = false;
    s.outage.answers = true;
    await vi.advanceTimersByTimeAsync(1000); // the next probe answers and wakes the write
    await s.settled;
    expect(s.calls).toEqual(["ack"]);
    expect(await s.stored()).toMatchObject({ state: "SUCCESS", result: 42 });
    expect([s.gate.closed, s.gate.failing]).toEqual([false, 0]);
    await s.close();
  });

  it("goes on with the whole schedule when its try in flight fails as the backend comes back (not given back)", async () => {
    const s = await settling({ kind: "success", value: 42 }, { answers: false });
    await vi.advanceTimersByTimeAsync(2 * 60_000); // held
    s.outage.answers = true; // the probe sees the backend back; the writes fail a little longer
    await vi.advanceTimersByTimeAsync(1000);
    expect(s.isDone()).toBe(false);
    s.outage.down = false;
    await vi.advanceTimersByTimeAsync(40_000);
    await s.settled;
    expect(s.calls).toEqual(["ack"]);
    expect(await s.stored()).toMatchObject({ state: "SUCCESS" });
    expect(s.messages()).not.toContain("settling step failed; giving up");
    await s.close();
  });

  it("gives the job back (uncounted) after the schedule when the backend answers but keeps refusing the record", async () => {
    const s = await settling({ kind: "success", value: 42 }, { answers: true });
    await vi.advanceTimersByTimeAsync(0);
    expect(s.gate.closed).toBe(false); // fetching goes on: the backend answers
    await vi.advanceTimersByTimeAsync(40_000);
    await s.settled;
    expect(s.calls).toEqual(["release"]);
    expect(s.messages()).toContain("settling step failed; giving up");
    expect(s.gate.failing).toBe(0);
    await s.close();
  });

  it("holds the job while the backend answers but refuses writes for now (out of memory), fetching paused; stores it once taken", async () => {
    const s = await settling({ kind: "success", value: 42 }, { answers: true, refuses: true });
    await vi.advanceTimersByTimeAsync(0);
    expect(s.gate.closed).toBe(true); // its PING answers, but no record can be stored
    await vi.advanceTimersByTimeAsync(10 * 60_000);
    expect(s.isDone()).toBe(false);
    expect(s.calls).toEqual([]); // not given back: it would only run again
    expect(s.gate.closed).toBe(true);
    expect(s.outage.writes).toBeLessThan(140); // every 5 s past the schedule
    expect(s.messages().filter((m) => m.includes("refuses writes for now: fetching paused"))).toHaveLength(1);
    expect(s.messages()).toContain(
      "the result backend refuses writes for now: the job's record waits for it (the job is held, not run again)",
    );
    expect(s.messages()).not.toContain("settling step failed; giving up");
    s.outage.down = false;
    await vi.advanceTimersByTimeAsync(5000);
    await s.settled;
    expect(s.calls).toEqual(["ack"]);
    expect(await s.stored()).toMatchObject({ state: "SUCCESS", result: 42 });
    expect(s.messages().at(-1)).toContain("takes writes again: fetching resumes");
    expect([s.gate.closed, s.gate.failing]).toEqual([false, 0]);
    await s.close();
  });

  it("holds an acknowledged (at_most_once) job's record while the backend refuses writes for now, then stores it", async () => {
    const s = await settling({ kind: "success", value: 7 }, { answers: true, refuses: true, acked: true });
    await vi.advanceTimersByTimeAsync(5 * 60_000);
    expect(s.isDone()).toBe(false);
    expect(s.messages()).toContain(
      "the result backend refuses writes for now: the job's record waits for it (its message was acknowledged before the run)",
    );
    s.outage.down = false;
    await vi.advanceTimersByTimeAsync(5000);
    await s.settled;
    expect(await s.stored()).toMatchObject({ state: "SUCCESS", result: 7 });
    await s.close();
  });

  it("does not pause fetching for a rejected message's record the backend refuses for now (not held)", async () => {
    const rejected = { kind: "rejected", error: { type: "PoisonMessage", message: "x" }, taskId: "task-1" } as const;
    const s = await settling(rejected, { answers: true, refuses: true });
    await vi.advanceTimersByTimeAsync(0);
    expect(s.gate.closed).toBe(false); // the probe answered; the refusal is this record's alone
    expect(s.messages().some((m) => m.includes("fetching paused"))).toBe(false);
    await vi.advanceTimersByTimeAsync(40_000);
    await s.settled;
    expect(s.calls).toEqual(["ack"]);
    await s.close();
  });

  it("a forced stop ends the hold: the job is given back, uncounted", async () => {
    const s = await settling({ kind: "success", value: 42 }, { answers: false });
    await vi.advanceTimersByTimeAsync(2 * 60_000);
    expect(s.isDone()).toBe(false);
    s.stop.abort();
    await vi.advanceTimersByTimeAsync(0);
    await s.settled;
    expect(s.calls).toEqual(["release"]);
    expect(s.gate.failing).toBe(0);
    await s.close();
  });

  it("does not hold a rejected message's record (best effort): settled without it after the schedule", async () => {
    const rejected = { kind: "rejected", error: { type: "PoisonMessage", message: "x" }, taskId: "task-1" } as const;
    const s = await settling(rejected, { answers: false });
    await vi.advanceTimersByTimeAsync(40_000);
    await s.settled;
    expect(s.calls).toEqual(["ack"]);
    expect(s.gate.failing).toBe(0);
    await s.close();
  });
});

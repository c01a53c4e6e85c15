/**
 * RELIABILITY R3, the crash-point matrix, on SQLite, Redis and RabbitMQ, for at-least-once and
 * at-most-once tasks. The product has no fault-injection hooks: the fixture app
 * (fixtures/crash-points-app.mjs) wraps the broker, its consumers and deliveries, and the result
 * backend from the outside, and a worker SIGKILLs ITS OWN process when a job reaches the crash
 * point named in the job's argument.
 *
 * Each cell (broker × delivery mode × crash point) runs N jobs through two live `chicory worker`
 * processes (concurrency 4); the hook fires on job #T1 and #T2 (CI: 60 jobs, #20 and #45; full
 * tier, CHICORY_RELIABILITY_FULL=1: 200 jobs, #50 and #150), once per job across all processes (an
 * O_EXCL marker file), so the job's rerun on another worker is not killed again. Every killed
 * worker is replaced at once; #T2 is published only after #T1's kill has been recovered from and
 * two workers are live again, so at each kill the other worker is healthy.
 *
 * Oracle: the execution ledger (start/end lines per attempt, with the attempt's retry counter),
 * the fixture's fetch ledger (which process got each delivery), the crash markers (pid, time,
 * and for after_result_before_ack the state the worker had stored before the ack), the backend,
 * and the broker's DLQ. A cell is settled when the broker holds nothing queued or unacknowledged
 * (RabbitMQ: `rabbitmqctl list_queues`) and every job has a final state or was last fetched by a
 * dead process (lost: only allowed under at-most-once).
 *
 * Expected target outcome per cell: see EXPECTED below. Besides the targets: at-least-once
 * loses nothing (every job SUCCESS, or in the DLQ for the failing task); at-most-once never runs
 * an attempt twice, and loses at most the jobs in flight in the killed worker.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Task } from "../../src/task.js";
import { skipUnless } from "../helpers/services.js";
import { hasRabbitmqctl } from "../integration/rabbitmq/rabbitmq-test-utils.js";
import { fetchStates, report } from "./harness/books.js";
import { type LedgerEntry, readLedger } from "./harness/ledger.js";
import type { ProcessHandle } from "./harness/processes.js";
import { rabbitWorkQuiet } from "./harness/rabbitmq.js";
import { type BrokerKind, openSandbox, type Sandbox } from "./harness/sandbox.js";
import { sleep, waitUntil } from "./harness/wait.js";

const FULL = process.env.CHICORY_RELIABILITY_FULL === "1";
const JOBS = FULL ? 200 : 60;
const TARGETS: readonly [number, number] = FULL ? [50, 150] : [20, 45];
const CONCURRENCY = 4;
const LEASE_MS = 1000;
const APP = "test/reliability/fixtures/crash-points-app.mjs";
const RETRY = "after_retry_publish_before_ack";
const DLQ = "during_dlq_move";

type Mode = "at_least_once" | "at_most_once";
type Kind = "ok" | "retry" | "fail";
type Variant = "before" | "between" | "after";

interface Cell {
  readonly point: string;
  readonly variant?: Variant;
  readonly kind: Kind;
}

const POINTS: readonly Cell[] = [
  { point: "after_fetch", kind: "ok" },
  { point: "before_execute", kind: "ok" },
  { point: "after_execute_before_result", kind: "ok" },
  { point: "after_result_before_ack", kind: "ok" },
  { point: RETRY, variant: "before", kind: "retry" },
  { point: RETRY, variant: "between", kind: "retry" },
  { point: RETRY, variant: "after", kind: "retry" },
  { point: DLQ, variant: "before", kind: "fail" },
  { point: DLQ, variant: "between", kind: "fail" },
  { point: DLQ, variant: "after", kind: "fail" },
];

const cellId = (cell: Cell): string => (cell.variant ? `${cell.point}:${cell.variant}` : cell.point);

/**
 * `between` exists only where the broker publishes the new copy and acks the old one in two
 * steps: RabbitMQ, at-least-once. Redis (retry.lua, dead-letter.lua) and SQLite (one
 * transaction) replace the message atomically; at-most-once has nothing left to ack.
 */
function cellsFor(broker: BrokerKind, mode: Mode): Cell[] {
  return POINTS.filter((c) => c.variant !== "between" || (broker === "rabbitmq" && mode === "at_least_once"));
}

/** What must happen to a target job. */
interface Expected {
  /** Attempts begun (ledger `start` lines) per retry counter. */
  readonly starts: Readonly<Record<number, number>>;
  /** Completed runs (ledger `end` lines). */
  readonly ends: number;
  /** Final outcome: a SUCCESS record, DLQ entries (how many), or lost (allowed under at-most-once only). */
  readonly final: "SUCCESS" | "DLQ" | "lost";
  readonly dlqEntries?: number;
  /** Retry counter of the final SUCCESS record. */
  readonly finalRetries?: number;
}

const EXPECTED: Record<Mode, Record<string, Expected>> = {
  at_least_once: {
    // never started by the killed worker: runs once, on the other one, after the lease
    after_fetch: { starts: { 0: 1 }, ends: 1, final: "SUCCESS" },
    before_execute: { starts: { 0: 1 }, ends: 1, final: "SUCCESS" },
    // the run completed, its result was not stored: runs twice
    after_execute_before_result: { starts: { 0: 2 }, ends: 2, final: "SUCCESS" },
    // SUCCESS stored, not acknowledged: a second run, the result stays SUCCESS
    after_result_before_ack: { starts: { 0: 2 }, ends: 2, final: "SUCCESS" },
    // the old copy is redelivered: attempt 0 runs again, then attempt 1 once
    [`${RETRY}:before`]: { starts: { 0: 2, 1: 1 }, ends: 1, final: "SUCCESS", finalRetries: 1 },
    // both copies exist: attempt 0 again (which retries again), and attempt 1 twice
    [`${RETRY}:between`]: { starts: { 0: 2, 1: 2 }, ends: 2, final: "SUCCESS", finalRetries: 1 },
    // replaced atomically before the kill: no extra attempt
    [`${RETRY}:after`]: { starts: { 0: 1, 1: 1 }, ends: 1, final: "SUCCESS", finalRetries: 1 },
    [`${DLQ}:before`]: { starts: { 0: 2 }, ends: 0, final: "DLQ", dlqEntries: 1 },
    [`${DLQ}:between`]: { starts: { 0: 2 }, ends: 0, final: "DLQ", dlqEntries: 2 },
    [`${DLQ}:after`]: { starts: { 0: 1 }, ends: 0, final: "DLQ", dlqEntries: 1 },
  },
  at_most_once: {
    // not acknowledged yet when killed: redelivered, runs once
    after_fetch: { starts: { 0: 1 }, ends: 1, final: "SUCCESS" },
    // acknowledged before the run: lost, never run twice
    before_execute: { starts: {}, ends: 0, final: "lost" },
    after_execute_before_result: { starts: { 0: 1 }, ends: 1, final: "lost" },
    // nothing follows the stored result
    after_result_before_ack: { starts: { 0: 1 }, ends: 1, final: "SUCCESS" },
    // the next attempt was never published
    [`${RETRY}:before`]: { starts: { 0: 1 }, ends: 0, final: "lost" },
    [`${RETRY}:after`]: { starts: { 0: 1, 1: 1 }, ends: 1, final: "SUCCESS", finalRetries: 1 },
    // stored DEAD_LETTERED, never written to the DLQ
    [`${DLQ}:before`]: { starts: { 0: 1 }, ends: 0, final: "lost", dlqEntries: 0 },
    [`${DLQ}:after`]: { starts: { 0: 1 }, ends: 0, final: "DLQ", dlqEntries: 1 },
  },
};

/** Attempts begun per job of a kind when nothing is killed. */
const NORMAL_STARTS: Record<Kind, number> = { ok: 1, retry: 2, fail: 1 };

/** The job argument (the fixture reads `crash`). */
interface Job {
  readonly i: number;
  readonly ms: number;
  readonly crash: string | null;
}

/** A crash marker, written by the fixture just before it killed itself. */
interface Marker {
  readonly point: string;
  readonly id: string;
  readonly pid: number;
  readonly t: number;
  readonly stateAtKill?: string | null;
}

interface FetchLine {
  readonly id: string;
  readonly pid: number;
  readonly t: number;
  readonly n: number;
}

const TERMINAL: ReadonlySet<string> = new Set(["SUCCESS", "FAILURE", "DEAD_LETTERED"]);

/** Two live workers; every worker that exits is replaced at once. */
class Fleet {
  readonly live = new Set<ProcessHandle>();
  readonly startErrors: string[] = [];
  #n = 0;
  #closed = false;

  constructor(
    readonly sb: Sandbox,
    readonly crashDir: string,
  ) {}

  spawn(): void {
    const name = `w${++this.#n}`;
    this.sb.processes
      .startWorker({
        name,
        app: APP,
        concurrency: CONCURRENCY,
        env: { ...this.sb.env, CHICORY_TEST_FAULTS: "1", CHICORY_TEST_CRASH_DIR: this.crashDir },
        extraArgs: ["--dlq"],
      })
      .then((handle) => {
        this.live.add(handle);
        void handle.exited.then(() => {
          this.live.delete(handle);
          if (!this.#closed) this.spawn();
        });
      })
      .catch((error: unknown) => {
        this.startErrors.push(String(error));
        if (!this.#closed) this.spawn();
      });
  }

  async ready(n = 2): Promise<void> {
    await waitUntil(() => this.live.size >= n || this.startErrors.length > 5, {
      timeoutMs: 30_000,
      what: `${n} live workers`,
    });
    if (this.live.size < n) throw new Error(`workers do not start:\n${this.startErrors.join("\n")}`);
  }

  close(): void {
    this.#closed = true;
  }
}

function readFetches(dir: string): Map<string, FetchLine[]> {
  const byId = new Map<string, FetchLine[]>();
  for (const name of readdirSync(dir)) {
    if (!name.startsWith("fetches-")) continue;
    for (const line of readFileSync(join(dir, name), "utf8").split("\n")) {
      if (!line) continue;
      let parsed: FetchLine;
      try {
        parsed = JSON.parse(line) as FetchLine;
      } catch {
        continue; // torn by the kill
      }
      const list = byId.get(parsed.id);
      if (list) list.push(parsed);
      else byId.set(parsed.id, [parsed]);
    }
  }
  for (const list of byId.values()) list.sort((a, b) => a.t - b.t);
  return byId;
}

function markerPath(crashDir: string, crash: string, id: string): string {
  return join(crashDir, `${crash.replace(/:/g, "-")}__${id}.json`);
}

function readMarker(crashDir: string, crash: string, id: string): Marker | null {
  const path = markerPath(crashDir, crash, id);
  if (!existsSync(path)) return null;
  try {
    return JSON.parse(readFileSync(path, "utf8")) as Marker;
  } catch {
    return null;
  }
}

/** DLQ entries per task id. */
async function dlqCounts(sb: Sandbox): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (const entry of await sb.app.broker.getDlqMessages("default", 100_000)) {
    const id = entry.originalMessage?.id;
    if (typeof id === "string") counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  return counts;
}

/** Nothing waiting and nothing leased / unacknowledged in the broker. */
async function brokerQuiet(sb: Sandbox): Promise<boolean> {
  const size = await sb.app.broker.getQueueSize("default");
  if (size !== 0) return false;
  if (sb.broker !== "rabbitmq") return (await sb.app.broker.getPendingCount("default")) === 0;
  return rabbitWorkQuiet(sb.prefix ?? "");
}

/**
 * Waits until the broker is quiet and every id has a final state or was last fetched by a dead
 * process (nothing can still run it); `ok` is false when the deadline passed first.
 * The broker is checked first: a worker writes its fetch line before it acknowledges, so once
 * the pending list is empty every delivery taken from it has its line, and a job reclaimed and
 * acknowledged (at_most_once) just before the check is seen as held by its live worker. (In
 * the other order, a reclaim between reading the fetch lines and the broker check went unseen.)
 */
async function settle(sb: Sandbox, ids: readonly string[], timeoutMs: number): Promise<{ ms: number; ok: boolean }> {
  const start = Date.now();
  const deadline = start + timeoutMs;
  for (;;) {
    if (await brokerQuiet(sb)) {
      const states = await fetchStates(sb.app, ids);
      const open = ids.filter((id) => !TERMINAL.has(states.get(id) ?? "UNKNOWN"));
      const fetches = readFetches(sb.ledgerDir);
      const dead = new Set(sb.processes.all.filter((h) => h.exit !== null).map((h) => h.pid));
      const held = open.filter((id) => {
        const last = fetches.get(id)?.at(-1);
        return last !== undefined && !dead.has(last.pid);
      });
      if (held.length === 0) return { ms: Date.now() - start, ok: true };
    }
    if (Date.now() > deadline) return { ms: Date.now() - start, ok: false };
    await sleep(100);
  }
}

function countBy(entries: readonly LedgerEntry[] | undefined): Record<number, number> {
  const out: Record<number, number> = {};
  for (const e of entries ?? []) out[e.r] = (out[e.r] ?? 0) + 1;
  return out;
}

/** One row of the summary matrix. */
interface Row {
  broker: BrokerKind;
  mode: Mode;
  cell: string;
  pass: boolean;
  summary: string;
}

const rows: Row[] = [];

async function runCell(
  fleet: Fleet,
  tasks: Record<string, Task<[Job], number>>,
  broker: BrokerKind,
  mode: Mode,
  cell: Cell,
): Promise<void> {
  const { sb, crashDir } = fleet;
  const crash = cellId(cell);
  const expected = EXPECTED[mode][crash];
  if (!expected) throw new Error(`no expectation for ${mode} ${crash}`);
  const taskName = `cp_${cell.kind}${mode === "at_most_once" ? "_amo" : ""}`;
  const task = tasks[taskName];
  if (!task) throw new Error(`no task ${taskName}`);
  const startedAt = Date.now();
  await fleet.ready(2);
  const ids = new Map<number, string>();
  const publish = async (from: number, to: number) => {
    for (let i = from; i <= to; i += 20) {
      const batch = Array.from({ length: Math.min(20, to - i + 1) }, (_, k) => i + k);
      await Promise.all(
        batch.map(async (k) => {
          const result = await task.delay({ i: k, ms: 5 + (k % 4) * 5, crash: TARGETS.includes(k) ? crash : null });
          ids.set(k, result.taskId);
        }),
      );
    }
  };
  const idOf = (k: number) => ids.get(k) ?? "";
  const phases: Array<{ settleMs: number; settled: boolean }> = [];
  // Phase 1: jobs 1..T2-1 (#T1 is killed), recovered from before #T2 is published.
  await publish(1, TARGETS[1] - 1);
  await waitUntil(() => existsSync(markerPath(crashDir, crash, idOf(TARGETS[0]))), {
    timeoutMs: 20_000,
    what: `the ${crash} hook on job #${TARGETS[0]}`,
  });
  const firstIds = [...ids.values()];
  const s1 = await settle(sb, firstIds, 30_000);
  phases.push({ settleMs: s1.ms, settled: s1.ok });
  await fleet.ready(2);
  // Phase 2: jobs T2..N.
  await publish(TARGETS[1], JOBS);
  await waitUntil(() => existsSync(markerPath(crashDir, crash, idOf(TARGETS[1]))), {
    timeoutMs: 20_000,
    what: `the ${crash} hook on job #${TARGETS[1]}`,
  });
  const allIds = [...ids.values()];
  const s2 = await settle(sb, allIds, 30_000);
  phases.push({ settleMs: s2.ms, settled: s2.ok });
  const endedAt = Date.now();

  // --- the books of the cell
  const [states, dlq] = await Promise.all([fetchStates(sb.app, allIds), dlqCounts(sb)]);
  const records = await Promise.all(TARGETS.map((k) => sb.app.backend?.getResult(idOf(k))));
  const ledger = readLedger(sb.ledgerDir);
  const fetches = readFetches(sb.ledgerDir);
  const exits = sb.processes.all.filter((h) => h.exit !== null && h.exit.at >= startedAt && h.exit.at <= endedAt);
  const violations: string[] = [];

  const targets = TARGETS.map((k, n) => {
    const id = idOf(k);
    const marker = readMarker(crashDir, crash, id);
    const starts = countBy(ledger.startsById.get(id));
    const ends = ledger.endsById.get(id)?.length ?? 0;
    const state = states.get(id) ?? "UNKNOWN";
    const dlqEntries = dlq.get(id) ?? 0;
    const accounted = state === "SUCCESS" || dlqEntries > 0;
    const again = marker ? fetches.get(id)?.find((f) => f.pid !== marker.pid && f.t >= marker.t) : undefined;
    const record = records[n];
    const t = {
      job: k,
      id,
      killedPid: marker?.pid ?? null,
      stateAtKill: marker?.stateAtKill,
      startsByRetries: starts,
      ends,
      state,
      finalRetries: record?.retries ?? null,
      dlqEntries,
      lost: !accounted,
      fetchedAgainAfterMs: again && marker ? again.t - marker.t : null,
    };
    const where = `${broker} ${mode} ${crash} job #${k}`;
    if (!marker) violations.push(`${where}: the hook did not fire`);
    if (JSON.stringify(starts) !== JSON.stringify(expected.starts)) {
      violations.push(
        `${where}: starts by retry counter ${JSON.stringify(starts)}, expected ${JSON.stringify(expected.starts)}`,
      );
    }
    if (ends !== expected.ends) violations.push(`${where}: ${ends} completed runs, expected ${expected.ends}`);
    if (expected.final === "SUCCESS" && state !== "SUCCESS")
      violations.push(`${where}: final state ${state}, expected SUCCESS`);
    if (expected.final === "DLQ" && dlqEntries === 0) violations.push(`${where}: not in the DLQ (state ${state})`);
    // A job in the DLQ says so: its record is written before the move (at_least_once), or with
    // the dead letter in one call (Redis with its backend on the same server). An at_most_once
    // dead letter on the other brokers is written before its record, in two calls.
    if (expected.final === "DLQ" && state !== "DEAD_LETTERED" && (mode === "at_least_once" || broker === "redis")) {
      violations.push(`${where}: in the DLQ with state ${state}, expected DEAD_LETTERED`);
    }
    if (expected.final !== "lost" && t.lost) violations.push(`${where}: lost (state ${state}, no DLQ entry)`);
    if (expected.final === "lost" && !t.lost)
      violations.push(`${where}: expected lost, found ${state} / DLQ ${dlqEntries}`);
    if (expected.dlqEntries !== undefined && dlqEntries !== expected.dlqEntries) {
      violations.push(`${where}: ${dlqEntries} DLQ entries, expected ${expected.dlqEntries}`);
    }
    if (expected.finalRetries !== undefined && record?.retries !== expected.finalRetries) {
      violations.push(`${where}: final retry counter ${record?.retries}, expected ${expected.finalRetries}`);
    }
    if (cell.point === "after_result_before_ack" && marker && marker.stateAtKill !== "SUCCESS") {
      violations.push(`${where}: state when killed before the ack was ${marker.stateAtKill}, expected SUCCESS`);
    }
    // Recovery: leaseMs + reclaim interval (lease/2) + 2 s; RabbitMQ requeues at once.
    const bound = broker === "rabbitmq" ? 2000 : LEASE_MS + LEASE_MS / 2 + 2000;
    // The killed delivery itself must come back (not a new copy published before the kill).
    const redelivered = mode === "at_least_once" ? cell.variant !== "after" : cell.point === "after_fetch";
    if (redelivered && marker && (t.fetchedAgainAfterMs === null || t.fetchedAgainAfterMs > bound)) {
      violations.push(`${where}: fetched again after ${t.fetchedAgainAfterMs} ms (bound ${bound})`);
    }
    return t;
  });

  // Every other job: at-least-once loses nothing; at-most-once never runs an attempt twice.
  const targetIds = new Set(TARGETS.map(idOf));
  let extraStarts = 0;
  let duplicateAttempts = 0;
  const lost: string[] = [];
  for (const id of allIds) {
    const starts = ledger.startsById.get(id) ?? [];
    const state = states.get(id) ?? "UNKNOWN";
    const inDlq = (dlq.get(id) ?? 0) > 0;
    if (!(state === "SUCCESS" || inDlq)) lost.push(id);
    if (targetIds.has(id)) continue;
    extraStarts += Math.max(0, starts.length - NORMAL_STARTS[cell.kind]);
    for (const count of Object.values(countBy(starts))) duplicateAttempts += Math.max(0, count - 1);
  }
  const otherLost = lost.filter((id) => !targetIds.has(id));
  const kills = targets.filter((t) => t.killedPid !== null).length;
  if (mode === "at_least_once") {
    if (otherLost.length > 0)
      violations.push(`${otherLost.length} other jobs lost: ${otherLost.slice(0, 5).join(", ")}`);
    // Jobs in flight in a killed worker run again: at most one extra attempt each. A worker
    // holds up to 2 × concurrency unacknowledged messages (running, and finished ones whose
    // outcome is being stored and acknowledged).
    if (extraStarts > kills * 2 * CONCURRENCY * NORMAL_STARTS[cell.kind]) {
      violations.push(`${extraStarts} extra attempts of other jobs for ${kills} kills`);
    }
  } else {
    if (duplicateAttempts > 0) violations.push(`${duplicateAttempts} attempts of other jobs ran twice (at-most-once)`);
    // At most what the killed worker held: running jobs plus finished ones whose result was
    // still being stored (2 × concurrency).
    if (otherLost.length > kills * 2 * CONCURRENCY) {
      violations.push(
        `${otherLost.length} other jobs lost for ${kills} kills of workers with concurrency ${CONCURRENCY}`,
      );
    }
  }
  for (const exit of exits) {
    const killed = targets.some((t) => t.killedPid === exit.pid);
    if (!killed || exit.exit?.signal !== "SIGKILL") {
      violations.push(`worker ${exit.name} (pid ${exit.pid}) exited unexpectedly: ${JSON.stringify(exit.exit)}`);
    }
  }
  if (!phases.every((p) => p.settled)) violations.push(`not settled within 30 s: ${JSON.stringify(phases)}`);

  const result = {
    broker,
    mode,
    crashPoint: crash,
    task: taskName,
    jobs: JOBS,
    targets,
    kills,
    exits: exits.length,
    lost: lost.length,
    lostIds: lost,
    otherLost: otherLost.length,
    extraAttemptsOfOtherJobs: extraStarts,
    attemptsRunTwiceOfOtherJobs: duplicateAttempts,
    phases,
    wallMs: endedAt - startedAt,
    violations,
  };
  report(`crash-point-${broker}-${mode}-${crash.replace(/:/g, "-")}`, result);
  const describeTarget = (t: (typeof targets)[number]) =>
    `${JSON.stringify(t.startsByRetries)}/${t.ends} ${t.lost ? "LOST" : t.dlqEntries > 0 ? `DLQ×${t.dlqEntries}` : t.state}` +
    (t.fetchedAgainAfterMs === null ? "" : ` +${t.fetchedAgainAfterMs}ms`);
  rows.push({
    broker,
    mode,
    cell: crash,
    pass: violations.length === 0,
    summary:
      `${targets.map(describeTarget).join(" · ")}; other: lost ${otherLost.length}, extra ${extraStarts}` +
      (mode === "at_most_once" ? `, twice ${duplicateAttempts}` : ""),
  });
  expect(violations).toEqual([]);
}

const skipRabbit = (await skipUnless("rabbitmq")) || !(await hasRabbitmqctl());
const skipRedis = await skipUnless("redis");
const SKIP: Record<BrokerKind, boolean> = { sqlite: false, redis: skipRedis, rabbitmq: skipRabbit || skipRedis };

afterAll(() => {
  if (rows.length === 0) return;
  const lines = rows.map(
    (r) => `${r.pass ? "ok  " : "FAIL"} ${r.broker.padEnd(8)} ${r.mode.padEnd(13)} ${r.cell.padEnd(40)} ${r.summary}`,
  );
  console.log(
    `[reliability] crash-point matrix (targets: starts by retry counter / completed runs, outcome, fetched again after)\n${lines.join("\n")}`,
  );
  report("crash-point-matrix", { jobs: JOBS, targets: TARGETS, concurrency: CONCURRENCY, leaseMs: LEASE_MS, rows });
});

for (const broker of ["sqlite", "redis", "rabbitmq"] as const) {
  describe.skipIf(SKIP[broker])(`R3 crash-point matrix: ${broker}`, () => {
    let sb: Sandbox;
    let fleet: Fleet;
    const tasks: Record<string, Task<[Job], number>> = {};

    beforeAll(async () => {
      sb = openSandbox({ broker, claimMinIdleMs: LEASE_MS });
      const crashDir = join(sb.dir, "crash");
      mkdirSync(crashDir);
      const never = async (_job: Job): Promise<number> => {
        throw new Error("the test process never runs tasks");
      };
      for (const kind of ["ok", "retry", "fail"] as const) {
        tasks[`cp_${kind}`] = sb.app.task({ name: `cp_${kind}`, deliveryMode: "at_least_once" }, never);
        tasks[`cp_${kind}_amo`] = sb.app.task({ name: `cp_${kind}_amo`, deliveryMode: "at_most_once" }, never);
      }
      await sb.app.connect();
      fleet = new Fleet(sb, crashDir);
      fleet.spawn();
      fleet.spawn();
      await fleet.ready(2);
    });

    afterAll(async () => {
      fleet?.close();
      await sb?.close();
    });

    for (const mode of ["at_least_once", "at_most_once"] as const) {
      for (const cell of cellsFor(broker, mode)) {
        it(`${mode}: ${cellId(cell)}`, async () => {
          try {
            await runCell(fleet, tasks, broker, mode, cell);
          } catch (error) {
            console.error(sb.processes.describe().slice(-6000));
            throw error;
          }
        }, 90_000);
      }
    }
  });
}

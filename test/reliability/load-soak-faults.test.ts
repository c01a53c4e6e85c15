/**
 * L3 with faults (RELIABILITY §3.7 L3) — a soak at a steady 100 jobs/s of at-least-once jobs
 * while one fault is injected every {@link FAULT_EVERY_MS} (CI: 15 s over 60 s → 3 faults;
 * full tier: 60 s over 5 minutes → 4 faults). The fault kinds are a seeded shuffle of
 * {worker SIGKILL + replacement, worker SIGTERM + replacement, worker SIGSTOP 3 s then SIGCONT,
 * own-redis SIGKILL + restart (AOF, `appendfsync always`), chaos-proxy reset of every worker
 * connection}, taken in turn (seed: `CHICORY_RELIABILITY_SEED`, else random; always printed).
 * Not injected: PG connection kill (no SQL backend in this setup).
 *
 * Setup: own redis-server (`appendonly yes --appendfsync always`, `noeviction`); a chaos TCP
 * proxy in front of it; 2 `chicory worker -c 32` processes (built CLI, ledger-load-app.mjs,
 * `--expose-gc`) reach Redis only through the proxy (broker and backend), with a 1 s lease
 * (`CHICORY_BROKER_REDIS_CLAIM_MIN_IDLE_MS=1000`) so that reclaims happen during the run. The
 * test process (producer, sampler) talks to Redis directly. Each task writes a `start` line to a
 * per-process ledger file before anything else (survives SIGKILL; counts reruns).
 *
 * Pass: every confirmed job ends SUCCESS (missing == 0); duplicates ≤ 1 % of jobs, every one of
 * them re-run within {@link DUP_WINDOW_MS} of a fault; p99 enqueue→start latency of the jobs
 * enqueued outside the fault windows ([fault, fault + 5 s]) < 1 s; `connected_clients` back to
 * its steady value (median before the first fault) after each fault, before the next one and at
 * the end; no worker line at level ≥ error, and none mentioning uncaught/unhandled, except lines
 * of {@link TOLERATED_ERRORS} within [fault, fault end + 10 s]; workers that were not killed exit
 * 0 on SIGTERM; every worker's RSS stays within 150 MiB of its first sample. Reported: the
 * faults with times, duplicates, latency p50/p99 inside and outside the windows, recovery after
 * each fault.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import { Chicory } from "../../src/index.js";
import { readLedger } from "./harness/ledger.js";
import { runSeed, seededRandom } from "./harness/wait.js";
import { ChaosProxy } from "./infra/chaos-proxy.js";
import { freePort, OwnRedis } from "./infra/redis-server.js";
import { infoNumber, pendingCount, waitUntil } from "./load/load-redis.js";
import {
  CLI,
  FULL,
  killWorkers,
  quantile,
  round,
  rssMiB,
  startWorker,
  stopWorker,
  type WorkerProcess,
  writeReport,
} from "./load/load-workers.js";

const APP = "test/reliability/load/ledger-load-app.mjs";
const DURATION_MS = FULL ? 5 * 60_000 : 60_000;
const FAULT_EVERY_MS = FULL ? 60_000 : 15_000;
const RATE = 100;
const WORKERS = 2;
const CONCURRENCY = 32;
const LEASE_MS = 1000;
const SIGSTOP_MS = 3000;
/** Jobs enqueued in [fault, fault + this] are "inside" the fault window. */
const WINDOW_MS = 5000;
const P99_LIMIT_MS = 1000;
/** RSS allowed above a worker's first sample (RELIABILITY L1: idle + 150 MB). */
const RSS_GROWTH_LIMIT_MIB = 150;
/** Duplicates allowed, as a fraction of the confirmed jobs. */
const DUP_LIMIT = 0.01;
/** Jobs enqueued this long before a fault are counted as its jobs in the per-fault figures. */
const LEAD_MS = 2000;
/** A re-run must start within this long after a fault to be attributed to it. */
const DUP_WINDOW_MS = 15_000;
/**
 * Worker lines at level ≥ error tolerated within [fault, fault end + 10 s]: a settling step
 * (storing the result, the ack) that kept failing while Redis or the proxy was down. Anything
 * else, or any such line outside a fault window, fails the test.
 */
const TOLERATED_ERRORS = [/"msg":"settling step failed; giving up"/];
const PREFIX = "soakf";
const GROUP = "chicory-workers";
const STREAM = `${PREFIX}:stream:{default}`;

type FaultKind = "worker-sigkill" | "worker-sigterm" | "worker-sigstop" | "redis-sigkill" | "proxy-reset";
const KINDS: readonly FaultKind[] = [
  "worker-sigkill",
  "worker-sigterm",
  "worker-sigstop",
  "redis-sigkill",
  "proxy-reset",
];

interface Fault {
  readonly kind: FaultKind;
  /** Epoch ms at which it was injected. */
  readonly at: number;
  /** Epoch ms at which the fault's action was over (replacement started, SIGCONT, Redis up, …). */
  endAt: number;
  readonly detail: Record<string, unknown>;
}

interface Sample {
  readonly at: number;
  readonly clients: number | null;
  readonly xlen: number | null;
  readonly pel: number | null;
}

/** A worker line with its pino `time` (epoch ms), when it has one. */
function lineTime(line: string): number | null {
  const m = /"time":(\d+)/.exec(line);
  return m ? Number(m[1]) : null;
}

const hasRedisServer = spawnSync("redis-server", ["--version"]).status === 0;

describe.skipIf(!hasRedisServer)("L3 soak with faults (own redis-server, chaos proxy)", () => {
  it(
    `runs ${DURATION_MS / 1000} s at ${RATE} jobs/s with a fault every ${FAULT_EVERY_MS / 1000} s: nothing missing, duplicates ≤ 1 %`,
    async () => {
      if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` first`);
      const seed = runSeed();
      console.log(`[reliability] load-soak-faults seed=${seed} (replay: CHICORY_RELIABILITY_SEED=${seed})`);
      const random = seededRandom(seed);
      const order = [...KINDS];
      for (let i = order.length - 1; i > 0; i--) {
        const j = Math.floor(random() * (i + 1));
        [order[i], order[j]] = [order[j] as FaultKind, order[i] as FaultKind];
      }

      const dir = mkdtempSync(join(tmpdir(), "chicory-load-soak-faults-"));
      const ledgerDir = join(dir, "ledger");
      mkdirSync(ledgerDir);
      const server = new OwnRedis(await freePort(), dir, "always");
      const proxy = new ChaosProxy(server.port);
      const all: WorkerProcess[] = [];
      /** The live worker of each slot. */
      const slots: WorkerProcess[] = [];
      let admin: Redis | undefined;
      let producer: Chicory | undefined;
      let stopSampling = false;
      let samplerLoop: Promise<void> | undefined;
      let passed = false;
      try {
        await server.start();
        const proxyPort = await proxy.listen();
        const proxyUrl = `redis://127.0.0.1:${proxyPort}/0`;
        const redis = new Redis(server.url, { connectionName: "soak-faults-admin", maxRetriesPerRequest: null });
        admin = redis;
        const env = {
          CHICORY_BROKER_URL: proxyUrl,
          CHICORY_BACKEND_URL: proxyUrl,
          CHICORY_BROKER_REDIS_KEY_PREFIX: PREFIX,
          CHICORY_BACKEND_REDIS_KEY_PREFIX: PREFIX,
          CHICORY_BROKER_REDIS_CLAIM_MIN_IDLE_MS: String(LEASE_MS),
          CHICORY_TEST_LEDGER_DIR: ledgerDir,
          CHICORY_TEST_HEAP_EVERY_MS: "2000",
        };
        let started = 0;
        const spawnWorker = async () => {
          const w = await startWorker(`worker${++started}`, CONCURRENCY, env, dir, [], ["--expose-gc"], APP);
          all.push(w);
          return w;
        };
        for (const w of await Promise.all(Array.from({ length: WORKERS }, spawnWorker))) slots.push(w);

        const app = new Chicory({
          broker: server.url,
          config: { env: { CHICORY_BROKER_REDIS_KEY_PREFIX: PREFIX, CHICORY_BACKEND_REDIS_KEY_PREFIX: PREFIX } },
        });
        producer = app;
        const stamp = app.task({ name: "stamp_ledger", deliveryMode: "at_least_once" }, () => Date.now());
        await app.connect();

        // Sampler: Redis state every 250 ms, through the outage too (a failed read is a null sample).
        const samples: Sample[] = [];
        const rssFirst = new Map<number, number>();
        const rssPeak = new Map<number, number>();
        samplerLoop = (async () => {
          while (!stopSampling) {
            const at = Date.now();
            for (const w of slots) {
              const rss = w.exit ? null : rssMiB(w.pid);
              if (rss === null) continue;
              if (!rssFirst.has(w.pid)) rssFirst.set(w.pid, rss);
              rssPeak.set(w.pid, Math.max(rss, rssPeak.get(w.pid) ?? 0));
            }
            const read = <T>(p: Promise<T>) => Promise.race([p, sleep(200, null)]).catch(() => null);
            const [clients, xlen, pel] = await Promise.all([
              read(infoNumber(redis, "clients", "connected_clients")),
              read(redis.xlen(STREAM)),
              read(pendingCount(redis, STREAM, GROUP)),
            ]);
            samples.push({ at, clients, xlen, pel });
            await sleep(Math.max(0, 250 - (Date.now() - at)));
          }
        })();

        // Faults.
        const faults: Fault[] = [];
        const pickSlot = () => (random() < 0.5 ? 0 : 1);
        const inject = async (kind: FaultKind): Promise<void> => {
          const at = Date.now();
          const fault: Fault = { kind, at, endAt: at, detail: {} };
          faults.push(fault);
          if (kind === "worker-sigkill" || kind === "worker-sigterm") {
            const slot = pickSlot();
            const victim = slots[slot] as WorkerProcess;
            victim.child.kill(kind === "worker-sigkill" ? "SIGKILL" : "SIGTERM");
            await Promise.race([victim.exited, sleep(20_000)]);
            fault.detail.victim = victim.name;
            fault.detail.exit = victim.exit;
            fault.detail.exitAfterMs = Date.now() - at;
            const replacement = await spawnWorker();
            slots[slot] = replacement;
            fault.detail.replacement = replacement.name;
          } else if (kind === "worker-sigstop") {
            const victim = slots[pickSlot()] as WorkerProcess;
            fault.detail.victim = victim.name;
            process.kill(victim.pid, "SIGSTOP");
            await sleep(SIGSTOP_MS);
            process.kill(victim.pid, "SIGCONT");
          } else if (kind === "redis-sigkill") {
            await server.kill("SIGKILL");
            fault.detail.downAfterMs = Date.now() - at;
            await server.start();
            fault.detail.upAfterMs = Date.now() - at;
          } else {
            fault.detail.connectionsReset = proxy.cut();
          }
          fault.endAt = Date.now();
        };

        // Steady producer (as load-soak): at every step, send what the clock says is due.
        const enqueuedAt = new Map<string, number>();
        let failedPublishes = 0;
        const failedPublishTimes: number[] = [];
        let maxPublishMs = 0;
        const inFlight = new Set<Promise<void>>();
        const t0 = Date.now();
        const faultTimes: number[] = [];
        for (let t = FAULT_EVERY_MS; t <= DURATION_MS - FAULT_EVERY_MS / 2; t += FAULT_EVERY_MS) faultTimes.push(t);
        let nextFault = 0;
        let running: Promise<void> | null = null;
        let sent = 0;
        while (Date.now() - t0 < DURATION_MS) {
          const due = Math.floor(((Date.now() - t0) * RATE) / 1000) - sent;
          for (let k = 0; k < due; k++) {
            const at = Date.now();
            const p = stamp.applyAsync([]).then(
              (result) => {
                enqueuedAt.set(result.taskId, at);
                maxPublishMs = Math.max(maxPublishMs, Date.now() - at);
              },
              () => {
                failedPublishes++;
                failedPublishTimes.push(at);
              },
            );
            inFlight.add(p);
            void p.finally(() => inFlight.delete(p));
          }
          sent += Math.max(0, due);
          const dueFault = faultTimes[nextFault];
          if (running === null && dueFault !== undefined && Date.now() - t0 >= dueFault) {
            const kind = order[nextFault % order.length] as FaultKind;
            nextFault++;
            running = inject(kind).finally(() => {
              running = null;
            });
          }
          await sleep(10);
        }
        await running;
        await Promise.all(inFlight);
        const produceMs = Date.now() - t0;
        const endOfRun = Date.now();

        const backend = app.backend;
        if (!backend) throw new Error("the producer app has no backend");
        const ids = [...enqueuedAt.keys()];
        const missingIds = async (): Promise<string[]> => {
          const out: string[] = [];
          for (let i = 0; i < ids.length; i += 1000) {
            const chunk = ids.slice(i, i + 1000);
            const records = await Promise.all(chunk.map((id) => backend.getResult(id)));
            records.forEach((r, j) => {
              if (r?.state !== "SUCCESS" || typeof r.result !== "number") out.push(chunk[j] as string);
            });
          }
          return out;
        };
        await waitUntil(
          "the queue to drain and every confirmed job to have its result",
          60_000,
          async () =>
            (await redis.xlen(STREAM)) === 0 &&
            (await pendingCount(redis, STREAM, GROUP)) === 0 &&
            (await missingIds()).length === 0,
          500,
        ).catch(() => undefined);
        const drainedAfterMs = Date.now() - endOfRun;
        const missing = await missingIds();
        // Settle: one more second of samples with everything idle, then stop.
        await sleep(1000);
        stopSampling = true;
        await samplerLoop;
        const finalWorkers = [...slots];
        await Promise.all(finalWorkers.map((w) => stopWorker(w)));

        // Ledger: every run of every job.
        const ledger = readLedger(ledgerDir);
        const confirmed = new Set(ids);
        let duplicates = 0;
        const unattributed: Array<{ id: string; rerunAt: number }> = [];
        const dupPerFault = faults.map(() => 0);
        for (const [id, starts] of ledger.startsById) {
          for (const rerun of starts.slice(1)) {
            duplicates++;
            let k = -1;
            faults.forEach((f, i) => {
              if (rerun.t >= f.at && rerun.t <= f.endAt + DUP_WINDOW_MS) k = i;
            });
            if (k >= 0) dupPerFault[k] = (dupPerFault[k] ?? 0) + 1;
            else unattributed.push({ id, rerunAt: rerun.t - t0 });
          }
        }
        const notInLedger = ids.filter((id) => !ledger.startsById.has(id)).length;
        const strangers = [...ledger.startsById.keys()].filter((id) => !confirmed.has(id)).length;

        // Latency: first start (ledger) − time just before applyAsync.
        const inWindow = (t: number) => faults.some((f) => t >= f.at && t <= f.at + WINDOW_MS);
        const inside: number[] = [];
        const outside: number[] = [];
        const perJob: Array<[number, number]> = [];
        for (const id of ids) {
          const first = ledger.startsById.get(id)?.[0];
          const at = enqueuedAt.get(id) as number;
          if (!first) continue;
          const latency = first.t - at;
          perJob.push([at, latency]);
          (inWindow(at) ? inside : outside).push(latency);
        }
        inside.sort((a, b) => a - b);
        outside.sort((a, b) => a - b);
        perJob.sort((a, b) => a[0] - b[0]);

        // connected_clients: steady value = median before the first fault (after 2 s of warm-up).
        const firstFaultAt = faults[0]?.at ?? endOfRun;
        const before = samples
          .filter((s) => s.at >= t0 + 2000 && s.at < firstFaultAt && s.clients !== null)
          .map((s) => s.clients as number)
          .sort((a, b) => a - b);
        const steadyClients = quantile(before, 0.5);
        const recovery = faults.map((f, i) => {
          const until = faults[i + 1]?.at ?? endOfRun;
          const window = samples.filter((s) => s.at >= f.at && s.at < until);
          // Back = the first sample from which clients equal the steady value until the next fault.
          let backAt: number | null = null;
          for (let k = window.length - 1; k >= 0; k--) {
            if ((window[k] as Sample).clients !== steadyClients) break;
            backAt = (window[k] as Sample).at;
          }
          // Jobs of this fault: enqueued from LEAD_MS before it (they may sit in a stopped or
          // killed worker) until LEAD_MS before the next one.
          const mine = perJob.filter(([at]) => at >= f.at - LEAD_MS && at < until - LEAD_MS);
          const slow = mine.filter(([, l]) => l >= P99_LIMIT_MS);
          const lastSlow = slow.at(-1);
          const clientsSeen = window.map((s) => s.clients).filter((c): c is number => c !== null);
          return {
            fault: f.kind,
            atS: round((f.at - t0) / 1000, 1),
            actionMs: f.endAt - f.at,
            ...f.detail,
            clientsMinMax: [Math.min(...clientsSeen), Math.max(...clientsSeen)],
            clientsBackAfterMs: backAt === null ? null : backAt - f.at,
            jobsWithLatencyOver1s: slow.length,
            firstSlowEnqueuedAtMs: slow[0] ? slow[0][0] - f.at : null,
            lastSlowEnqueuedAtMs: lastSlow ? lastSlow[0] - f.at : null,
            maxLatencyMs: Math.max(0, ...mine.map(([, l]) => l)),
            duplicates: dupPerFault[i],
          };
        });
        const finalClients = samples.filter((s) => s.clients !== null).at(-1)?.clients ?? null;

        // Worker output: error lines, tolerated only around faults.
        const errorLines = all.flatMap((w) => w.errors.map((line) => ({ worker: w.name, line, time: lineTime(line) })));
        const untolerated = errorLines.filter(
          ({ line, time }) =>
            !(
              time !== null &&
              TOLERATED_ERRORS.some((re) => re.test(line)) &&
              faults.some((f) => time >= f.at && time <= f.endAt + 10_000)
            ),
        );
        // Warning lines by message (from the kept logs).
        const warningsByMsg: Record<string, number> = {};
        for (const name of readdirSync(dir)) {
          if (!name.startsWith("worker")) continue;
          for (const line of readFileSync(join(dir, name), "utf8").split("\n")) {
            if (!line.includes('"level":40')) continue;
            const msg = /"msg":"([^"]*)"/.exec(line)?.[1] ?? "?";
            warningsByMsg[msg] = (warningsByMsg[msg] ?? 0) + 1;
          }
        }

        const figures = {
          seed,
          seconds: DURATION_MS / 1000,
          ratePerSecond: RATE,
          leaseMs: LEASE_MS,
          faultOrder: order,
          sent,
          confirmed: ids.length,
          failedPublishes,
          failedPublishesAtS: failedPublishTimes.map((t) => round((t - t0) / 1000, 1)),
          achievedRate: round(ids.length / (produceMs / 1000)),
          maxPublishMs,
          drainedAfterMs,
          missing: missing.length,
          notInLedger,
          runsOfUnconfirmedJobs: strangers,
          tornLedgerLines: ledger.tornLines,
          duplicates,
          duplicateRatio: round(duplicates / Math.max(1, ids.length), 5),
          unattributedDuplicates: unattributed,
          latencyOutsideMs: {
            jobs: outside.length,
            p50: quantile(outside, 0.5),
            p99: quantile(outside, 0.99),
            max: outside.at(-1),
          },
          latencyInsideMs: {
            jobs: inside.length,
            p50: quantile(inside, 0.5),
            p99: quantile(inside, 0.99),
            max: inside.at(-1),
          },
          steadyClients,
          finalClients,
          faults: recovery,
          peakXlen: Math.max(0, ...samples.map((s) => s.xlen ?? 0)),
          peakPel: Math.max(0, ...samples.map((s) => s.pel ?? 0)),
          workers: all.map((w) => ({
            name: w.name,
            pid: w.pid,
            exit: w.exit,
            processed: w.processed,
            warnings: w.warnings,
            rssFirstPeakMiB: [round(rssFirst.get(w.pid) ?? 0), round(rssPeak.get(w.pid) ?? 0)],
            heapAfterGcFirstLastMiB: [round(w.heap[0]?.[1] ?? 0), round(w.heap.at(-1)?.[1] ?? 0)],
          })),
          warningsByMsg,
          errorLines: errorLines.map(({ worker, line }) => `${worker}: ${line.slice(0, 300)}`),
        };
        writeReport("load-soak-faults", figures);

        expect(faults.length, "faults injected").toBe(faultTimes.length);
        expect(missing, "confirmed jobs without a SUCCESS record").toEqual([]);
        expect(notInLedger, "confirmed jobs that never started").toBe(0);
        expect(duplicates, "duplicates").toBeLessThanOrEqual(ids.length * DUP_LIMIT);
        expect(unattributed, "duplicates not attributable to a fault").toEqual([]);
        expect(outside.length, "jobs outside the fault windows").toBeGreaterThan(ids.length / 2);
        expect(quantile(outside, 0.99), "p99 enqueue→start latency outside fault windows (ms)").toBeLessThan(
          P99_LIMIT_MS,
        );
        for (const r of recovery) {
          expect(r.clientsBackAfterMs, `connected_clients back to ${steadyClients} after ${r.fault}`).not.toBeNull();
        }
        expect(finalClients, "connected_clients at the end").toBe(steadyClients);
        expect(untolerated, "worker error lines").toEqual([]);
        for (const w of all) {
          const growth = (rssPeak.get(w.pid) ?? 0) - (rssFirst.get(w.pid) ?? 0);
          expect(growth, `${w.name} RSS growth over its first sample (MiB)`).toBeLessThan(RSS_GROWTH_LIMIT_MIB);
        }
        for (const w of finalWorkers) expect(w.exit, `${w.name} exit`).toEqual({ code: 0, signal: null });
        for (const f of faults.filter((x) => x.kind === "worker-sigterm")) {
          expect(f.detail.exit, "exit of the SIGTERMed worker").toEqual({ code: 0, signal: null });
        }
        passed = true;
      } finally {
        stopSampling = true;
        await samplerLoop?.catch(() => undefined);
        for (const w of all) if (!w.exit) w.child.kill("SIGCONT");
        await producer?.disconnect().catch(() => undefined);
        await killWorkers(all);
        admin?.disconnect();
        await proxy.close();
        await server.kill();
        if (passed) rmSync(dir, { recursive: true, force: true });
        else console.error(`[reliability] load-soak-faults: logs kept in ${dir}`);
      }
    },
    DURATION_MS + 180_000,
  );
});

/**
 * At-most-once under worker SIGKILL, with real `chicory worker` processes and the ledger oracle:
 * - R2 (Redis, and SQLite): random SIGKILLs during at-most-once jobs, replacements started. No
 *   job runs twice (no id with two `start` lines); only jobs a killed worker held are lost; the
 *   broker never keeps acknowledged work leased (Redis: the group's PEL holds only entries in
 *   transit between read and ack, and is empty at the end).
 * - R7 (Redis): mixed delivery modes in one app whose default is at-most-once
 *   (CHICORY_DELIVERY_MODE): the at-least-once task loses nothing, the at-most-once tasks (one
 *   declared, one by the app default) never run twice, and the PEL is empty after the drain.
 */
import { describe, expect, it } from "vitest";
import { skipUnless } from "../helpers/services.js";
import { awaitAtMostOnce, classifyLost, inFlightOf, sampleLeases } from "./harness/at-most-once.js";
import { awaitBooks, computeBooks, report } from "./harness/books.js";
import { readLedger, startsOf } from "./harness/ledger.js";
import type { ProcessHandle } from "./harness/processes.js";
import { newProducerLedger, produce } from "./harness/producer.js";
import { openSandbox, type Sandbox } from "./harness/sandbox.js";
import { CLAIM_MS } from "./harness/scenarios.js";
import { runSeed, seededRandom, sleep, waitUntil } from "./harness/wait.js";

const skipRedis = await skipUnless("redis");

/** A kill of the chaos schedule: the victim, when, and the ids it had started and not ended. */
interface Kill {
  readonly pid: number;
  readonly at: number;
  readonly inFlight: readonly string[];
}

/**
 * The R1 schedule: `kills` times, after `pauseMs()` (seeded), SIGKILL a random live worker, read
 * its in-flight runs from the ledger, and start a replacement. With `holding`, the kill waits
 * (up to 3 s, then kills anyway) until the victim's in-flight runs satisfy it.
 */
async function chaos(
  sb: Sandbox,
  live: ProcessHandle[],
  start: () => Promise<ProcessHandle>,
  random: () => number,
  kills: number,
  pauseMs: () => number,
  holding?: (inFlight: readonly string[]) => boolean,
): Promise<Kill[]> {
  const done: Kill[] = [];
  for (let k = 0; k < kills; k++) {
    await sleep(pauseMs());
    const index = Math.floor(random() * live.length);
    const victim = live[index] as ProcessHandle;
    if (holding) {
      await waitUntil(() => holding(inFlightOf(readLedger(sb.ledgerDir), victim.pid)), {
        timeoutMs: 3000,
        intervalMs: 10,
        what: "the victim to hold jobs of each kind",
      }).catch(() => false);
    }
    const at = Date.now();
    victim.signal("SIGKILL");
    await victim.exited;
    done.push({ pid: victim.pid, at, inFlight: inFlightOf(readLedger(sb.ledgerDir), victim.pid) });
    live.splice(index, 1, await start());
  }
  return done;
}

describe.skipIf(skipRedis)("Redis broker: at-most-once under SIGKILL", () => {
  it("R2: random SIGKILLs during 2,000 at-most-once jobs (replacements started): no job runs twice, only jobs the killed workers held are lost, the PEL stays bounded", async () => {
    const seed = runSeed();
    const random = seededRandom(seed);
    const sb = openSandbox({ broker: "redis", claimMinIdleMs: CLAIM_MS });
    const concurrency = 8;
    const JOBS = 2000;
    const KILLS = 3;
    const STALE_MS = 3000;
    let sampler: ReturnType<typeof sampleLeases> | undefined;
    try {
      await sb.app.connect();
      let n = 0;
      const start = (): Promise<ProcessHandle> =>
        sb.processes.startWorker({ name: `w${++n}`, concurrency, env: sb.env });
      const live: ProcessHandle[] = [await start(), await start()];
      sampler = sampleLeases(sb, { intervalMs: 50, staleMs: STALE_MS, leaseMs: CLAIM_MS });
      // Jobs of 5–25 ms (R1 uses 2–10 ms): long enough that a kill finds runs in flight.
      const producer = newProducerLedger();
      const produced = produce(sb.workAmo, producer, {
        count: JOBS,
        ms: () => 5 + Math.floor(random() * 21),
        ratePerSecond: 500,
      });
      const kills = await chaos(
        sb,
        live,
        start,
        random,
        KILLS,
        () => 600 + Math.floor(random() * 800),
        (inFlight) => inFlight.length >= 2,
      );
      await produced;
      expect(producer.failed).toEqual([]);
      const killed = new Set(kills.map((k) => k.pid));
      const result = await awaitAtMostOnce(sb, producer.confirmed, killed, 60_000);
      const pel = await sampler.stop();
      sampler = undefined;
      const { books, lost } = result;
      const inFlightAtKills = kills.reduce((sum, k) => sum + k.inFlight.length, 0);
      const finalSize = await sb.app.broker.getQueueSize("default");
      const finalPending = await sb.app.broker.getPendingCount("default");
      report("redis-at-most-once-sigkill-chaos", {
        seed,
        jobs: JOBS,
        concurrency,
        workers: 2,
        claimMinIdleMs: CLAIM_MS,
        kills: kills.map((k) => ({ pid: k.pid, at: k.at, inFlight: k.inFlight.length })),
        inFlightAtKills,
        lost,
        books,
        pel,
        finalSize,
        finalPending,
        settledAfterMs: result.settledAfterMs,
      });
      expect(result.timedOut).toBe(false);
      expect(books.confirmed).toBe(JOBS);
      // Never twice: no id has two `start` lines (strict; runs cut short count too).
      expect(books.duplicateIds).toEqual([]);
      expect(books.duplicateStarts).toBe(0);
      // Lost only what a killed worker held: every run cut short by a kill stays lost (none is
      // rerun), no job run by a live worker is lost, and at most what one worker holds per kill:
      // 2 × concurrency (running, plus finished runs whose result was still being stored).
      expect(inFlightAtKills).toBeGreaterThan(0);
      expect(lost.onLiveWorker).toBe(0);
      expect(lost.interrupted).toBe(inFlightAtKills);
      expect(lost.total).toBeLessThanOrEqual(KILLS * 2 * concurrency);
      expect(books.success + lost.total).toBe(JOBS);
      // The PEL holds entries only between read and ack (plus a killed worker's unacked reads
      // until reclaimed): bounded by the fetch windows, never left behind, empty at the end.
      expect(pel.maxStale).toBe(0);
      expect(pel.maxPending).toBeLessThanOrEqual(3 * concurrency);
      expect(finalSize).toBe(0);
      expect(finalPending).toBe(0);
    } catch (error) {
      console.error(sb.processes.describe());
      throw error;
    } finally {
      await sampler?.stop().catch(() => undefined);
      await sb.close();
    }
  }, 120_000);

  it("R7: app default at-most-once with an at-least-once task: SIGKILLs lose no at-least-once job and run no at-most-once job twice; PEL empty after the drain", async () => {
    const seed = runSeed();
    const random = seededRandom(seed);
    const sb = openSandbox({
      broker: "redis",
      claimMinIdleMs: CLAIM_MS,
      env: { CHICORY_DELIVERY_MODE: "at_most_once" },
    });
    const concurrency = 8;
    const PER_TASK = 600;
    const KILLS = 2;
    try {
      const workDefault = sb.app.task({ name: "work_default" }, async (_ms: number): Promise<number> => {
        throw new Error("the test process never runs tasks");
      });
      await sb.app.connect();
      let n = 0;
      const start = (): Promise<ProcessHandle> =>
        sb.processes.startWorker({ name: `w${++n}`, concurrency, env: sb.env });
      const live: ProcessHandle[] = [await start(), await start()];
      const bannerMode = /delivery\s+(\S+)/.exec(live[0]?.output.stderr ?? "")?.[1];
      const alo = newProducerLedger();
      const amo = newProducerLedger();
      const dflt = newProducerLedger();
      // Jobs of 10–40 ms at 390/s in all: each worker holds several of each kind at a time.
      const ms = () => 10 + Math.floor(random() * 31);
      const produced = Promise.all([
        produce(sb.work, alo, { count: PER_TASK, ms, ratePerSecond: 130 }),
        produce(sb.workAmo, amo, { count: PER_TASK, ms, ratePerSecond: 130 }),
        produce(workDefault, dflt, { count: PER_TASK, ms, ratePerSecond: 130 }),
      ]);
      // Each kill lands while the victim runs at least one at-least-once and one at-most-once job.
      const aloIds = new Set<string>();
      const kills = await chaos(
        sb,
        live,
        start,
        random,
        KILLS,
        () => 800 + Math.floor(random() * 1000),
        (inFlight) => {
          for (const id of alo.confirmed) aloIds.add(id);
          const aloHeld = inFlight.filter((id) => aloIds.has(id)).length;
          return aloHeld > 0 && inFlight.length > aloHeld;
        },
      );
      await produced;
      expect([...alo.failed, ...amo.failed, ...dflt.failed]).toEqual([]);
      const killed = new Set(kills.map((k) => k.pid));
      const aloBooks = await awaitBooks(sb.app, alo.confirmed, sb.ledgerDir, 60_000);
      const result = await awaitAtMostOnce(sb, [...amo.confirmed, ...dflt.confirmed], killed, 30_000);
      const { states, ledger } = result;
      const split = (ids: readonly string[]) => {
        const set = new Set(ids);
        return {
          books: computeBooks(ids, states, new Set(), ledger),
          lost: classifyLost(ids, states, ledger, killed),
          inFlightAtKills: kills.reduce((sum, k) => sum + k.inFlight.filter((id) => set.has(id)).length, 0),
        };
      };
      const amoPart = split(amo.confirmed);
      const dfltPart = split(dflt.confirmed);
      const aloSet = new Set(alo.confirmed);
      const aloInFlightAtKills = kills.reduce((sum, k) => sum + k.inFlight.filter((id) => aloSet.has(id)).length, 0);
      const finalSize = await sb.app.broker.getQueueSize("default");
      const finalPending = await sb.app.broker.getPendingCount("default");
      report("redis-mixed-delivery-modes", {
        seed,
        perTask: PER_TASK,
        concurrency,
        workers: 2,
        claimMinIdleMs: CLAIM_MS,
        appDefault: "at_most_once",
        bannerMode,
        kills: kills.map((k) => ({ pid: k.pid, at: k.at, inFlight: k.inFlight.length })),
        atLeastOnce: { books: aloBooks, inFlightAtKills: aloInFlightAtKills },
        atMostOnceDeclared: amoPart,
        atMostOnceByDefault: dfltPart,
        finalSize,
        finalPending,
      });
      expect(bannerMode).toBe("at_most_once");
      // at-least-once (declared on the task, against the app default): nothing lost.
      expect(aloBooks.missingSample).toEqual([]);
      expect(aloBooks.missing).toBe(0);
      expect(aloBooks.success).toBe(PER_TASK);
      // a killed worker held up to 2 × concurrency unacknowledged jobs (running + settling)
      expect(aloBooks.duplicateStarts).toBeLessThanOrEqual(KILLS * 2 * concurrency);
      // The kills did cut at-least-once runs short (so their recovery was exercised), and each
      // of those ran again.
      expect(aloInFlightAtKills).toBeGreaterThan(0);
      expect(aloBooks.duplicateStarts).toBeGreaterThanOrEqual(aloInFlightAtKills);
      // at-most-once (declared, and by the app default): never twice, loss only on killed workers.
      expect(result.timedOut).toBe(false);
      for (const part of [amoPart, dfltPart]) {
        expect(part.books.duplicateStarts).toBe(0);
        expect(part.lost.onLiveWorker).toBe(0);
        expect(part.lost.interrupted).toBe(part.inFlightAtKills);
      }
      expect(amoPart.lost.total + dfltPart.lost.total).toBeLessThanOrEqual(KILLS * 2 * concurrency);
      // PEL empty after the drain: no at-least-once entry stranded in a dead consumer's PEL.
      expect(finalSize).toBe(0);
      expect(finalPending).toBe(0);
    } catch (error) {
      console.error(sb.processes.describe());
      throw error;
    } finally {
      await sb.close();
    }
  }, 120_000);
});

describe("SQLite broker: at-most-once under SIGKILL", () => {
  it("R2: a worker SIGKILLed during 300 at-most-once jobs: no job runs twice, only its jobs are lost, nothing stays leased", async () => {
    const seed = runSeed();
    const random = seededRandom(seed);
    const sb = openSandbox({ broker: "sqlite", claimMinIdleMs: CLAIM_MS });
    const concurrency = 4;
    const JOBS = 300;
    let sampler: ReturnType<typeof sampleLeases> | undefined;
    try {
      await sb.app.connect();
      const w1 = await sb.processes.startWorker({ name: "w1", concurrency, env: sb.env });
      const w2 = await sb.processes.startWorker({ name: "w2", concurrency, env: sb.env });
      sampler = sampleLeases(sb, { intervalMs: 50, staleMs: 3000, leaseMs: CLAIM_MS });
      const producer = newProducerLedger();
      const produced = produce(sb.workAmo, producer, { count: JOBS, ms: () => 20 + Math.floor(random() * 31) });
      await waitUntil(
        () => {
          const ledger = readLedger(sb.ledgerDir);
          return startsOf(ledger, w1.pid) >= 20 && startsOf(ledger, w2.pid) >= 5;
        },
        { timeoutMs: 20_000, what: "both workers running jobs" },
      );
      const at = Date.now();
      w1.signal("SIGKILL");
      await w1.exited;
      const inFlight = inFlightOf(readLedger(sb.ledgerDir), w1.pid);
      await sb.processes.startWorker({ name: "w3", concurrency, env: sb.env });
      await produced;
      expect(producer.failed).toEqual([]);
      const result = await awaitAtMostOnce(sb, producer.confirmed, new Set([w1.pid]), 60_000);
      const leases = await sampler.stop();
      sampler = undefined;
      const { books, lost } = result;
      const finalSize = await sb.app.broker.getQueueSize("default");
      const finalPending = await sb.app.broker.getPendingCount("default");
      report("sqlite-at-most-once-sigkill", {
        seed,
        jobs: JOBS,
        concurrency,
        claimMinIdleMs: CLAIM_MS,
        kill: { pid: w1.pid, at, inFlight: inFlight.length },
        lost,
        books,
        leases,
        finalSize,
        finalPending,
      });
      expect(result.timedOut).toBe(false);
      expect(books.confirmed).toBe(JOBS);
      expect(books.duplicateStarts).toBe(0);
      expect(lost.onLiveWorker).toBe(0);
      expect(lost.interrupted).toBe(inFlight.length);
      expect(lost.total).toBeLessThanOrEqual(concurrency);
      expect(books.success + lost.total).toBe(JOBS);
      expect(leases.maxStale).toBe(0);
      expect(finalSize).toBe(0);
      expect(finalPending).toBe(0);
    } catch (error) {
      console.error(sb.processes.describe());
      throw error;
    } finally {
      await sampler?.stop().catch(() => undefined);
      await sb.close();
    }
  }, 120_000);
});

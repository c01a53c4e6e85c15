/**
 * Network faults through a chaos TCP proxy on loopback (RELIABILITY §3.3 N2, issue 7): the
 * app (producer, workers, Redis broker and backend) reaches its own redis-server only through
 * the proxy.
 * (a) cut: every connection is reset (RST both ways) twice during the run → clients reconnect
 *     and every confirmed job ends SUCCESS (missing == 0).
 * (b) stall: every open connection stops forwarding without closing (half-open). New
 *     connections still pass, so a client that notices the dead socket and reconnects resumes
 *     at once. Measured and reported: whether and when the clients gave up on their stalled
 *     sockets and how much work completed during the stall. Then the proxy heals; work must
 *     resume and every confirmed job end SUCCESS.
 * (d) stall of the result subscriber: it only receives, so only its PING check can tell the
 *     connection died; it reconnects and push notifications flow again during the stall.
 * (e) one worker cut off alone past its lease: another worker (straight to Redis) takes its
 *     jobs over and runs them; the cut-off worker's acks, sent again once it reconnects, find
 *     them settled and report a possible double run (a warning), not "acknowledged by an
 *     earlier copy" (its own gap in Redis's replies is no stall of Redis).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { RedisBackend } from "../../src/backends/redis/index.js";
import { Chicory, silentLogger, Worker } from "../../src/index.js";
import { capturingLogger } from "../helpers/capturing-logger.js";
import { uniqueName } from "../helpers/services.js";
import { ChaosProxy } from "./infra/chaos-proxy.js";
import { JobLedger, produce, report, sleepMs, waitFor } from "./infra/ledger.js";
import { freePort, OwnRedis } from "./infra/redis-server.js";

const hasRedisServer = await (async () => {
  const { spawnSync } = await import("node:child_process");
  return spawnSync("redis-server", ["--version"]).status === 0;
})();

/** How long the stall lasts before the proxy heals (the detection window). */
const STALL_MS = 20_000;

/** Measured by test (b), checked by test (c). */
let stallFigures: { detectedAfterMs: number | null; completionsDuringStall: number; stallWindowMs: number } | null =
  null;

interface Rig {
  readonly app: Chicory;
  readonly proxy: ChaosProxy;
  readonly ledger: JobLedger;
  readonly taskId: (i: number) => string;
  readonly job: { applyAsync(args: [number], options: { taskId: string }): Promise<unknown> };
  missingResults(): Promise<number[]>;
  close(): Promise<void>;
}

/** Its own redis-server (data in a temporary `dir`) and a chaos proxy in front of it. */
async function redisBehindProxy() {
  const dir = mkdtempSync(join(tmpdir(), "chicory-rel-proxy-"));
  const server = new OwnRedis(await freePort(), dir, "none");
  await server.start();
  const proxy = new ChaosProxy(server.port);
  const proxyPort = await proxy.listen();
  return { dir, server, proxy, proxyPort };
}

async function rig(): Promise<Rig> {
  const { dir, server, proxy, proxyPort } = await redisBehindProxy();
  const name = uniqueName("rel");
  const app = new Chicory({
    broker: `redis://127.0.0.1:${proxyPort}/0`,
    config: {
      env: {
        CHICORY_BROKER_REDIS_KEY_PREFIX: name,
        CHICORY_BACKEND_REDIS_KEY_PREFIX: name,
        CHICORY_BROKER_REDIS_CLAIM_MIN_IDLE_MS: "3000",
        CHICORY_BROKER_REDIS_BLOCK_MS: "2000",
      },
    },
  });
  const ledger = new JobLedger();
  const job = app.task({ name: "rel_proxy_job" }, async (i: number) => {
    await sleepMs(5 + (i % 10));
    ledger.ran(i);
    return i;
  });
  const taskId = (i: number) => `${name}-${i}`;
  const workers = [0, 1].map(() => new Worker(app, { logger: silentLogger, concurrency: 8, heartbeatInterval: 1 }));
  await app.connect();
  for (const w of workers) await w.start();
  return {
    app,
    proxy,
    ledger,
    taskId,
    job,
    async missingResults() {
      const backend = app.backend;
      if (!backend) throw new Error("no backend");
      const missing: number[] = [];
      for (const i of ledger.confirmed.keys()) {
        const r = await backend.getResult(taskId(i));
        if (r?.state !== "SUCCESS" || r.result !== i) missing.push(i);
      }
      return missing;
    },
    async close() {
      proxy.heal();
      for (const w of workers) await w.stop(5).catch(() => undefined);
      await app.disconnect().catch(() => undefined);
      await proxy.close();
      await server.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

describe.skipIf(!hasRedisServer)("infra: chaos TCP proxy between the app and Redis", () => {
  it("(a) all connections reset twice mid-run: clients reconnect, missing == 0", async () => {
    const r = await rig();
    const JOBS = 600;
    const cuts: Array<{ at: number; connections: number }> = [];
    try {
      await produce({
        count: JOBS,
        ratePerSec: 150,
        parallel: 8,
        publish: (i) => r.job.applyAsync([i], { taskId: r.taskId(i) }),
        ledger: r.ledger,
        retryAfterMs: 200,
        deadline: Date.now() + 90_000,
        onStart: (i) => {
          if (i === 200 || i === 400) cuts.push({ at: Date.now(), connections: r.proxy.cut() });
        },
      });
      const allRan = await waitFor(() => r.ledger.notRun().length === 0, 60_000, 100);
      const missing = await r.missingResults();
      // A job published and consumed entirely after each cut.
      const recoveries = cuts.map((c) => (r.ledger.firstRunOfJobStartedAfter(c.at) ?? Number.POSITIVE_INFINITY) - c.at);
      report("chaos-proxy cut", {
        jobs: JOBS,
        confirmed: r.ledger.confirmed.size,
        failedPublishAttempts: r.ledger.failedAttempts,
        failureKinds: Object.fromEntries(r.ledger.failureKinds),
        connectionsReset: cuts.map((c) => c.connections),
        endToEndRecoveryAfterCutMs: recoveries,
        missing: missing.length,
        duplicates: r.ledger.duplicates(),
      });
      expect(cuts.every((c) => c.connections > 0)).toBe(true);
      expect(allRan).toBe(true);
      expect(r.ledger.confirmed.size).toBe(JOBS);
      expect(missing).toEqual([]);
      for (const ms of recoveries) expect(ms).toBeLessThanOrEqual(30_000);
    } finally {
      await r.close();
    }
  });

  it("(b) half-open stall: detection reported, work resumes after the proxy heals, missing == 0", async () => {
    const r = await rig();
    const JOBS = 400;
    let stallAt = 0;
    let stalled = 0;
    let healAt = 0;
    let completionsDuringStall = 0;
    let unfinishedAtHeal = 0;
    let detectedAfterMs: number | null = null;
    const stallAndHeal = async () => {
      stallAt = Date.now();
      stalled = r.proxy.stall();
      await waitFor(() => r.proxy.stalledOpen === 0, STALL_MS, 100);
      if (r.proxy.stalledClosedAt.length > 0) detectedAfterMs = (r.proxy.stalledClosedAt[0] ?? 0) - stallAt;
      completionsDuringStall = r.ledger.completionsAfter(stallAt + 1000);
      healAt = Date.now();
      unfinishedAtHeal = JOBS - r.ledger.confirmed.size + r.ledger.notRun().length;
      r.proxy.heal();
    };
    let stalling: Promise<void> | null = null;
    try {
      const producing = produce({
        count: JOBS,
        ratePerSec: 100,
        parallel: 8,
        publish: (i) => r.job.applyAsync([i], { taskId: r.taskId(i) }),
        ledger: r.ledger,
        retryAfterMs: 200,
        deadline: Date.now() + 120_000,
        onStart: (i) => {
          if (i === 150) stalling = stallAndHeal();
        },
      });
      await producing;
      await stalling;
      const allRan = await waitFor(() => r.ledger.notRun().length === 0, 60_000, 100);
      const missing = await r.missingResults();
      const resumeAfterHealMs = (r.ledger.firstCompletionAfter(healAt) ?? Number.POSITIVE_INFINITY) - healAt;
      stallFigures = { detectedAfterMs, completionsDuringStall, stallWindowMs: healAt - stallAt };
      report("chaos-proxy stall", {
        jobs: JOBS,
        confirmed: r.ledger.confirmed.size,
        stalledConnections: stalled,
        clientsClosedStalledSockets: r.proxy.stalledClosedAt.length,
        detectedAfterMs,
        stallWindowMs: healAt - stallAt,
        completionsDuringStall,
        unfinishedAtHeal,
        resumeAfterHealMs,
        missing: missing.length,
        duplicates: r.ledger.duplicates(),
      });
      expect(stalled).toBeGreaterThan(0);
      expect(allRan).toBe(true);
      expect(r.ledger.confirmed.size).toBe(JOBS);
      expect(missing).toEqual([]);
      // When the clients dropped the stalled sockets and reconnected, every job may be done
      // before the heal: work resumed during the stall already. Otherwise it resumes after it.
      if (unfinishedAtHeal === 0) expect(completionsDuringStall).toBeGreaterThan(0);
      else expect(resumeAfterHealMs).toBeLessThanOrEqual(30_000);
    } finally {
      await (stalling as Promise<void> | null)?.catch(() => undefined);
      await r.close();
    }
  });

  // RELIABILITY N2: a half-open connection is given up within the socket timeout (10 s without
  // a reply; a blocked read gets its block time on top) and the client reconnects.
  it("(c) the clients give up stalled (half-open) sockets within 15 s", () => {
    expect(stallFigures).not.toBeNull();
    expect(stallFigures?.detectedAfterMs).not.toBeNull();
    expect(stallFigures?.detectedAfterMs).toBeLessThanOrEqual(15_000);
  });

  it("(e) a worker cut off alone past its lease: the jobs another worker took over are reported as possibly run twice", async () => {
    const { dir, server, proxy, proxyPort } = await redisBehindProxy();
    const name = uniqueName("rel");
    const env = {
      CHICORY_BROKER_REDIS_KEY_PREFIX: name,
      CHICORY_BACKEND_REDIS_KEY_PREFIX: name,
      CHICORY_BROKER_REDIS_CLAIM_MIN_IDLE_MS: "3000",
    };
    const runs = new Map<number, string[]>();
    const newApp = (url: string, who: string, ms: number) => {
      const app = new Chicory({ broker: url, config: { env } });
      const job = app.task({ name: "rel_cut_off_job" }, async (i: number) => {
        runs.set(i, [...(runs.get(i) ?? []), who]);
        await sleepMs(ms);
        return who;
      });
      return { app, job };
    };
    const a = newApp(`redis://127.0.0.1:${proxyPort}/0`, "a", 1000); // through the proxy
    const b = newApp(server.url, "b", 0); // straight to Redis
    const { logger, lines } = capturingLogger();
    const workerA = new Worker(a.app, { logger, concurrency: 4 });
    const workerB = new Worker(b.app, { logger: silentLogger, concurrency: 4 });
    const warned = () =>
      lines
        .filter((line) => line.level === "warn" && /^redis ack: entries no longer pending/.test(line.message))
        .reduce((sum, line) => sum + Number(line.fields.entries ?? 0), 0);
    try {
      const ids: string[] = [];
      for (let i = 0; i < 4; i++) ids.push((await a.job.delay(i)).taskId); // all four taken by A at its first read
      await workerA.start();
      expect(await waitFor(() => runs.size === 4, 10_000, 10)).toBe(true);
      expect(proxy.stall()).toBeGreaterThan(0); // A's jobs end in 1 s; their acks do not get through
      await workerB.start();
      // B takes them over once A's leases run out (3 s), and runs them
      expect(await waitFor(() => [...runs.values()].every((r) => r.includes("b")), 20_000)).toBe(true);
      // A gives up its stalled sockets (10 s without a reply), reconnects (new connections pass)
      // and sends its acks again, which find the entries settled by B
      expect(await waitFor(() => warned() >= 4, 30_000)).toBe(true);
      expect([...runs.values()].map((r) => [...r].sort())).toEqual([...Array(4)].map(() => ["a", "b"]));
      expect(warned()).toBe(4);
      expect(lines.filter((line) => /already acknowledged by an earlier copy/.test(line.message))).toEqual([]);
      // the results stay B's (A's records went with fenced acks: stored only where none was final)
      const results = await Promise.all(ids.map((id) => b.app.backend?.getResult(id)));
      expect(results.map((r) => [r?.state, r?.result])).toEqual(ids.map(() => ["SUCCESS", "b"]));
    } finally {
      proxy.heal();
      await Promise.allSettled([workerA.stop(2), workerB.stop(2)]);
      await Promise.allSettled([a.app.disconnect(), b.app.disconnect()]);
      await proxy.close();
      await server.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    }
  }, 90_000);

  it("(d) a stalled result subscriber is noticed by its PING check: push resumes during the stall", async () => {
    const { dir, server, proxy, proxyPort } = await redisBehindProxy();
    const prefix = uniqueName("rel");
    const waiting = new RedisBackend({ url: `redis://127.0.0.1:${proxyPort}/0`, keyPrefix: prefix, env: {} });
    const writer = new RedisBackend({ url: server.url, keyPrefix: prefix, env: {} });
    const success = (taskId: string) => ({
      taskId,
      state: "SUCCESS" as const,
      result: taskId,
      updatedAt: new Date().toISOString(),
    });
    try {
      await waiting.connect();
      await writer.connect();
      const first = waiting.waitForResult("before", { timeoutMs: 10_000 });
      await writer.storeResult(success("before"));
      expect((await first)?.state).toBe("SUCCESS"); // subscribed, push flowing
      const stallAt = Date.now();
      expect(proxy.stall()).toBeGreaterThan(0);
      // The backend sends nothing on its command connection meanwhile: the first stalled socket
      // given up is the subscriber's, after a PING without an answer.
      const gaveUp = await waitFor(() => proxy.stalledClosedAt.length >= 1, 20_000, 100);
      const gaveUpAfterMs = (proxy.stalledClosedAt[0] ?? Number.NaN) - stallAt;
      // Waits with no poll within their time: only a push can resolve them (the command
      // connection is still stalled), once the subscriber has subscribed again.
      let attempts = 0;
      const pushed = await waitFor(
        async () => {
          const id = `during-${attempts++}`;
          const wait = waiting.waitForResult(id, { timeoutMs: 3000, pollIntervalMs: 60_000 });
          await writer.storeResult(success(id));
          return (await wait)?.state === "SUCCESS";
        },
        15_000,
        0,
      );
      report("chaos-proxy result subscriber stall", {
        gaveUpAfterMs,
        pushed,
        attempts,
        clientsClosedStalledSockets: proxy.stalledClosedAt.length,
      });
      expect(gaveUp).toBe(true);
      expect(pushed).toBe(true);
    } finally {
      proxy.heal();
      await writer.disconnect().catch(() => undefined);
      await waiting.disconnect().catch(() => undefined);
      await proxy.close();
      await server.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});

/**
 * Infrastructure fault: a redis-server the test starts itself (never the shared :6379) is
 * frozen (SIGSTOP): its connections stay open and nothing answers. Inspection calls must not
 * hang for the whole outage: `AsyncResult.state()` and the broker's counts reject with a
 * connection error naming the deadline (10 s), and answer again once the server resumes.
 * And a server that is down (SIGKILL): a publish still waiting for it when the app disconnects
 * ends then ("outcome unknown"), not at its 10 s time limit, nor never.
 * And a freeze longer than the lease: every entry looks expired when Redis answers again, and a
 * worker coming out of the freeze, or one started during it, must not take a live worker's job
 * before that worker's renewal gets in; a dead worker's job is still taken over.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import { MessageCodec } from "../../src/core/message.js";
import { BackendConnectionError, BrokerConnectionError, Chicory, type Logger, Worker } from "../../src/index.js";
import { RedisBackend, RedisBroker } from "../../src/redis.js";
import { APP_JS, cliEnv, requireBuild, startCli } from "../integration/cli/cli-process.js";
import { sleepMs, waitFor } from "./infra/ledger.js";
import { freePort, OwnRedis } from "./infra/redis-server.js";

const hasRedisServer = await (async () => {
  const { spawnSync } = await import("node:child_process");
  return spawnSync("redis-server", ["--version"]).status === 0;
})();

/** A redis-server of the test's own, an app on it (with a Redis backend or none), and its cleanup. */
async function ownRedisApp(withBackend: boolean) {
  const dir = mkdtempSync(join(tmpdir(), "chicory-frozen-"));
  const server = new OwnRedis(await freePort(), dir, "none");
  await server.start();
  const app = new Chicory({
    broker: new RedisBroker({ url: server.url, keyPrefix: "frozen", env: {} }),
    backend: withBackend ? new RedisBackend({ url: server.url, keyPrefix: "frozen", env: {} }) : null,
  });
  const noop = app.task(async function noop() {});
  const close = async () => {
    await app.disconnect().catch(() => undefined);
    await server.kill();
    rmSync(dir, { recursive: true, force: true });
  };
  return { server, app, noop, close };
}

describe.skipIf(!hasRedisServer && process.env.CI !== "true")("infra: own redis-server frozen (SIGSTOP)", () => {
  it("state() and the broker's counts reject after their 10 s deadline instead of hanging", {
    timeout: 60_000,
  }, async () => {
    const { server, app, noop, close } = await ownRedisApp(true);
    try {
      await app.connect();
      const result = await noop.delay();
      expect(await result.state()).toBe("PENDING");
      process.kill(server.pid as number, "SIGSTOP");
      const started = performance.now();
      const [state, size] = await Promise.allSettled([result.state(), app.broker.getQueueSize("default")]);
      const tookMs = performance.now() - started;
      expect(state.status === "rejected" && state.reason).toBeInstanceOf(BackendConnectionError);
      expect(String(state.status === "rejected" && state.reason)).toMatch(/no answer from .* within 10 s/);
      expect(size.status === "rejected" && size.reason).toBeInstanceOf(BrokerConnectionError);
      expect(tookMs).toBeGreaterThanOrEqual(9_900);
      expect(tookMs).toBeLessThan(20_000);
      process.kill(server.pid as number, "SIGCONT");
      expect(await result.state()).toBe("PENDING");
      expect(await app.broker.getQueueSize("default")).toBe(1);
    } finally {
      if (server.pid !== undefined) process.kill(server.pid, "SIGCONT");
      await close();
    }
  });

  it("a publish pending while Redis is down ends at once when the app disconnects (outcome unknown)", {
    timeout: 60_000,
  }, async () => {
    const { server, app, noop, close } = await ownRedisApp(false);
    try {
      await app.connect();
      await server.kill("SIGKILL");
      const pending = noop.send().then(
        () => "published",
        (error: unknown) => error,
      );
      const started = performance.now();
      await app.disconnect();
      const outcome = await pending;
      expect(outcome).toBeInstanceOf(BrokerConnectionError);
      expect(String(outcome)).toMatch(/disconnected before .* answered; its outcome is unknown/);
      expect(performance.now() - started).toBeLessThan(5_000); // not the 10 s publish time limit
    } finally {
      await close();
    }
  });

  /**
   * Two entries held by other workers' consumers: "live" renews its lease 0.5 s after the freeze
   * ends (a little after the workers under test come out of it, as a renewal can), "dead" never
   * does. Worker A runs through the freeze; with `lateWorker`, worker B (another app on the same
   * server) starts during it, and never saw Redis before the stall. Neither may run "live"; the
   * dead worker's job is taken over after. Returns the warnings logged, and the stream window's
   * message whatever its level.
   */
  async function freezeLongerThanTheLease(lateWorker: boolean): Promise<string[]> {
    const LEASE_MS = 3000;
    // longer than the lease, and than a blocked read's client-side time limit (its block + 5 s),
    // which ends the read with no reply from Redis
    const FREEZE_MS = 10_000;
    const dir = mkdtempSync(join(tmpdir(), "chicory-frozen-"));
    const server = new OwnRedis(await freePort(), dir, "none");
    await server.start();
    const runs: string[] = [];
    let deadJobRan: () => void = () => undefined;
    const deadJobRun = new Promise<void>((resolve) => {
      deadJobRan = resolve;
    });
    // warnings, and the stream window's message at info level too (said at info by a worker that
    // warned of the same stall itself)
    const warnings: string[] = [];
    const logger: Logger = {
      debug: () => undefined,
      info: (_fields: unknown, message?: string) => {
        if (/^redis: no consumer was in touch/.test(String(message))) warnings.push(String(message));
      },
      warn: (fields: unknown, message?: string) => void warnings.push(String(message ?? fields)),
      error: () => undefined,
      child: () => logger,
    };
    const newApp = () => {
      const app = new Chicory({
        broker: new RedisBroker({
          url: server.url,
          keyPrefix: "frozen",
          consumerGroup: "g",
          claimMinIdleMs: LEASE_MS,
          env: {},
        }),
        backend: null,
      });
      const job = app.task({ name: "frozen_job" }, async (of: string) => {
        runs.push(of);
        if (of === "dead") deadJobRan();
      });
      return { app, job, worker: new Worker(app, { logger, concurrency: 4 }) };
    };
    const a = newApp();
    const b = newApp();
    const raw = new Redis(server.url);
    const stream = "frozen:stream:{default}";
    try {
      await raw.xgroup("CREATE", stream, "g", "0", "MKSTREAM");
      await a.job.delay("live");
      await a.job.delay("dead");
      const read = async (consumer: string) => {
        const reply = (await raw.xreadgroup("GROUP", "g", consumer, "COUNT", 1, "STREAMS", stream, ">")) as Array<
          [string, Array<[string, string[]]>]
        >;
        return reply[0]?.[1][0]?.[0] as string;
      };
      const liveId = await read("live-worker");
      await read("dead-worker");
      await a.worker.start();
      await b.app.connect();
      const consumers = async () => ((await raw.xinfo("CONSUMERS", stream, "g")) as unknown[]).length;
      expect(await waitFor(async () => (await consumers()) === 3, 10_000)).toBe(true);
      // worker A has made its first fetch: the queue's pulse is kept (a worker writes it before
      // its first read; here the two entries were read by hand, before any worker started)
      expect(await waitFor(async () => (await raw.hexists("frozen:pulse:{default}", "at")) === 1, 10_000)).toBe(true);
      process.kill(server.pid as number, "SIGSTOP");
      let bStarted: Promise<void> = Promise.resolve();
      if (lateWorker) {
        await sleepMs(FREEZE_MS - 3000);
        bStarted = b.worker.start(); // its first call gets in when Redis answers again
        await sleepMs(3000);
      } else await sleepMs(FREEZE_MS);
      process.kill(server.pid as number, "SIGCONT");
      await raw.ping(); // Redis answers again; both entries have been idle longer than the lease
      await bStarted;
      await sleepMs(500);
      expect(runs).not.toContain("live");
      expect(await raw.xclaim(stream, "g", "live-worker", 0, liveId, "JUSTID")).toEqual([liveId]);
      await sleepMs(500);
      await raw.xack(stream, "g", liveId); // the live worker finished its job
      await raw.xdel(stream, liveId);
      await Promise.race([
        deadJobRun,
        sleepMs(15_000).then(() => {
          throw new Error("the dead worker's job was not taken over");
        }),
      ]);
      expect(runs).toEqual(["dead"]);
      return warnings;
    } finally {
      if (server.pid !== undefined) process.kill(server.pid, "SIGCONT");
      await Promise.allSettled([a.worker.stop(), b.worker.stop()]);
      await Promise.allSettled([a.app.disconnect(), b.app.disconnect()]);
      raw.disconnect();
      await server.kill();
      rmSync(dir, { recursive: true, force: true });
    }
  }

  it("a freeze longer than the lease: a live worker's job stays with it; a dead worker's is taken over after", {
    timeout: 60_000,
  }, async () => {
    const warnings = await freezeLongerThanTheLease(false);
    expect(warnings).toContainEqual(expect.stringMatching(/^redis: no reply from Redis for \d+\.\d s/));
  });

  it("a worker started during a freeze longer than the lease leaves the live worker's job alone too", {
    timeout: 60_000,
  }, async () => {
    const warnings = await freezeLongerThanTheLease(true);
    expect(warnings).toContainEqual(
      expect.stringMatching(/^redis: no consumer was in touch with queue \S+ for \d+\.\d s/),
    );
  });
  it("an ack sent into a freeze longer than the lease is resent after the reconnect and counted as applied, not as a lost lease", {
    timeout: 60_000,
  }, async () => {
    const LEASE_MS = 3000;
    // longer than the command connection's reply limit (10 s): the client drops the connection
    // and sends the unanswered ack again once reconnected; the frozen server still runs the
    // first copy when it resumes
    const FREEZE_MS = 13_000;
    const dir = mkdtempSync(join(tmpdir(), "chicory-frozen-"));
    const server = new OwnRedis(await freePort(), dir, "none");
    await server.start();
    const warnings: string[] = [];
    let onEarlierCopy: () => void = () => undefined;
    const earlierCopy = new Promise<void>((resolve) => {
      onEarlierCopy = resolve;
    });
    const logger: Logger = {
      debug: () => undefined,
      info: (_fields: unknown, message?: string) => {
        if (/already acknowledged by an earlier copy/.test(String(message))) onEarlierCopy();
      },
      warn: (fields: unknown, message?: string) => void warnings.push(String(message ?? fields)),
      error: () => undefined,
      child: () => logger,
    };
    const app = new Chicory({
      broker: new RedisBroker({ url: server.url, keyPrefix: "frozen", claimMinIdleMs: LEASE_MS, env: {} }),
      backend: null,
    });
    let runs = 0;
    let started: () => void = () => undefined;
    const running = new Promise<void>((resolve) => {
      started = resolve;
    });
    let finish: () => void = () => undefined;
    const finishes = new Promise<void>((resolve) => {
      finish = resolve;
    });
    const job = app.task({ name: "frozen_ack" }, async () => {
      runs++;
      started();
      await finishes;
    });
    const worker = new Worker(app, { logger, concurrency: 2 });
    const raw = new Redis(server.url);
    try {
      await worker.start();
      await job.delay();
      await running;
      process.kill(server.pid as number, "SIGSTOP");
      await sleepMs(500);
      finish(); // its ack goes out to the frozen server
      await sleepMs(FREEZE_MS - 500);
      process.kill(server.pid as number, "SIGCONT");
      await Promise.race([
        earlierCopy,
        sleepMs(20_000).then(() => {
          throw new Error(`no resent ack counted as applied; warnings: ${warnings.join(" | ")}`);
        }),
      ]);
      expect(warnings.filter((w) => /no longer pending for this consumer/.test(w))).toEqual([]);
      expect(runs).toBe(1);
      expect(await raw.xlen("frozen:stream:{default}")).toBe(0);
    } finally {
      if (server.pid !== undefined) process.kill(server.pid, "SIGCONT");
      await worker.stop().catch(() => undefined);
      await app.disconnect().catch(() => undefined);
      raw.disconnect();
      await server.kill();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("dlq replay --all stopped by SIGINT while Redis is frozen ends 5 s later, saying how many replays got no answer", {
    timeout: 60_000,
  }, async () => {
    requireBuild();
    const dir = mkdtempSync(join(tmpdir(), "chicory-frozen-"));
    const server = new OwnRedis(await freePort(), dir, "none");
    await server.start();
    const raw = new Redis(server.url);
    const [dlq, stream] = ["frozen:dlq:{replayq}", "frozen:stream:{replayq}"];
    try {
      const codec = new MessageCodec();
      const total = 20_000;
      const fill = raw.pipeline();
      for (let i = 0; i < total; i++) {
        const body = codec.encode({
          v: 1,
          id: `t-${i}`,
          name: "add",
          args: [i, 1],
          retries: 0,
          eta: null,
          priority: null,
          firstFailureAt: null,
          lastError: null,
        });
        fill.xadd(dlq, "*", "data", body, "error", "x", "failed_at", 1);
      }
      await fill.exec();
      const replaying = startCli(
        ["dlq", "replay", APP_JS, "--all", "-q", "replayq"],
        cliEnv({
          CHICORY_BROKER_URL: server.url,
          CHICORY_BROKER_REDIS_KEY_PREFIX: "frozen",
          CHICORY_BACKEND_REDIS_KEY_PREFIX: "frozen",
        }),
      );
      await waitFor(async () => (await raw.xlen(stream)) > 0, 15_000); // under way
      process.kill(server.pid as number, "SIGSTOP");
      replaying.child.kill("SIGINT");
      const signalled = performance.now();
      const exit = await replaying.exited;
      const tookMs = performance.now() - signalled;
      expect(exit.code).toBe(130);
      const said =
        /interrupted by SIGINT: replayed (\d+) message\(s\); (\d+) replay\(s\) under way got no answer within 5 s \(each moves its entry whole or not at all\); the dead-letter queue \(replayq\) was not counted \(the server does not answer\): run the command again to go on/.exec(
          exit.stderr,
        );
      expect(said, exit.stderr).not.toBeNull();
      expect(tookMs).toBeGreaterThanOrEqual(4_900);
      expect(tookMs).toBeLessThan(15_000);
      process.kill(server.pid as number, "SIGCONT");
      // each move is whole: what the queue and the DLQ hold adds up, and the count said is a floor
      // (read in one transaction: the dead CLI's last scripts may still be running when thawed)
      const counts = (await raw.multi().xlen(stream).xlen(dlq).exec()) ?? [];
      const [queued = -1, left = -1] = counts.map(([, n]) => Number(n));
      expect(queued + left).toBe(total);
      expect(queued).toBeGreaterThanOrEqual(Number(said?.[1]));
      expect(queued).toBeLessThanOrEqual(Number(said?.[1]) + Number(said?.[2]));
    } finally {
      if (server.pid !== undefined) process.kill(server.pid, "SIGCONT");
      raw.disconnect();
      await server.kill();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

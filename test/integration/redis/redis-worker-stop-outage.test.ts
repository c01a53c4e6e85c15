/**
 * A worker told to stop while its Redis (broker and backend) is down: an idle one stops at once
 * instead of waiting for commands that can only queue in the client (the consumer's removal
 * from its group, the last heartbeat, a heartbeat round in progress), and says which cleanup it
 * could not do; with Redis up nothing changes (the last heartbeat is stored, the consumer leaves
 * its group); a job running when Redis went away gets its graceful timeout, its aborted run's
 * release is not waited for, and it is not lost (it stays pending and another worker reclaims it
 * once Redis is back). Each test runs on a redis-server of this file's own.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis as IORedis } from "ioredis";
import { describe, expect, it } from "vitest";
import type { WorkerStats } from "../../../src/backends/backend.js";
import { RedisBackend } from "../../../src/backends/redis/index.js";
import { RedisBroker } from "../../../src/brokers/redis/index.js";
import { AsyncResult, Chicory, Worker } from "../../../src/index.js";
import { capturingLogger } from "../../helpers/capturing-logger.js";
import { useCleanups } from "../../helpers/cleanups.js";
import { skipUnless, uniqueName } from "../../helpers/services.js";
import { freePort, OwnRedis } from "../../reliability/infra/redis-server.js";
import { useOwnRedis } from "./own-redis.js";

const skip = await skipUnless("redis");

/** Resolves once `ready` is true (polled every 10 ms), rejects after `timeoutMs`. */
function until(ready: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const timer = setInterval(() => {
      if (ready()) {
        clearInterval(timer);
        resolve();
      } else if (Date.now() - started > timeoutMs) {
        clearInterval(timer);
        reject(new Error(`${what}: not within ${timeoutMs} ms`));
      }
    }, 10);
  });
}

describe.skipIf(skip)("redis worker: stop() while Redis is down", () => {
  const own = useOwnRedis("stop-outage");
  const cleanups = useCleanups();

  /** The own server running (a test before may have stopped it), and an app of a fresh prefix on it. */
  async function appOnOwnServer(): Promise<{ app: Chicory; keyPrefix: string }> {
    if (own.server.pid === undefined) await own.server.start();
    const url = own.server.url;
    const keyPrefix = uniqueName("stopdown");
    const app = new Chicory({
      broker: new RedisBroker({ url, keyPrefix, env: {}, blockMs: 200 }),
      backend: new RedisBackend({ url, keyPrefix, env: {} }),
      config: { env: {} },
    });
    app.task(async function noop() {}); // (an app without tasks is warned of at start)
    cleanups.push(() => app.disconnect().catch(() => undefined));
    return { app, keyPrefix };
  }

  it("an idle worker stops at once, names what it could not clean up, and leaves no Redis call pending", async () => {
    const { app } = await appOnOwnServer();
    const backend = app.backend as RedisBackend;
    // A heartbeat round sent while Redis is down is the one stop() finds in progress.
    let isDown = false;
    // (the round wrapped: a promise resolved with a promise would wait for it)
    let onDownHeartbeat: (sent: { round: Promise<void> }) => void = () => undefined;
    const downHeartbeat = new Promise<{ round: Promise<void> }>((resolve) => {
      onDownHeartbeat = resolve;
    });
    const storeHeartbeat = backend.storeHeartbeat.bind(backend);
    backend.storeHeartbeat = (stats: WorkerStats, ttl: number): Promise<void> => {
      const round = storeHeartbeat(stats, ttl);
      if (isDown) {
        round.catch(() => undefined);
        onDownHeartbeat({ round });
      }
      return round;
    };
    const { logger, lines } = capturingLogger();
    const worker = new Worker(app, { logger, concurrency: 2, heartbeatInterval: 0.1, heartbeatTtl: 1 });
    cleanups.push(() => worker.stop(0));
    await worker.start();
    await until(() => worker.lastHeartbeat !== null, "first heartbeat");

    await own.server.kill(); // Redis gone (SIGKILL, no persistence)
    isDown = true;
    const { round } = await downHeartbeat; // queued in the client, waiting for a Redis that is gone
    const started = performance.now();
    await worker.stop();
    const elapsedMs = performance.now() - started;

    expect(worker.isRunning).toBe(false);
    expect(worker.getStats().isRunning).toBe(false);
    const warnings = lines.filter((l) => l.level === "warn").map((l) => l.message);
    expect(warnings).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^shutdown: not waiting for the heartbeat or cleanup round in progress/),
        expect.stringMatching(/^redis consumer closed without removing itself from its consumer group/),
        expect.stringMatching(/^final heartbeat not stored: this worker's record is not marked stopped/),
      ]),
    );
    const lastHeartbeat = lines.find((l) => l.message.startsWith("final heartbeat not stored"));
    expect(String(lastHeartbeat?.fields.err)).toMatch(/unreachable/);
    // The round cut off ended with the disconnect, not at its own 10 s limit (whose timer would
    // keep a process that has nothing else to do alive for that long).
    await expect(round).rejects.toThrow(/the backend disconnected before .* answered/);
    // Before, fixed waits of 2 s (the round) + 1 s (the consumer's removal) + 2 s (the last
    // heartbeat) made this at least 5 s whatever the machine; now no step waits for Redis.
    expect(elapsedMs).toBeLessThan(2500);
  });

  it("with Redis up, stop() still stores the last heartbeat and removes the consumer from its group", async () => {
    const { app, keyPrefix } = await appOnOwnServer();
    const { logger, lines } = capturingLogger();
    const worker = new Worker(app, { logger, concurrency: 2 });
    cleanups.push(() => worker.stop(0));
    await worker.start();
    await until(() => worker.lastHeartbeat !== null, "first heartbeat");
    await worker.stop();

    const url = own.server.url;
    const broker = new RedisBroker({ url, keyPrefix, env: {} });
    const backend = new RedisBackend({ url, keyPrefix, env: {} });
    cleanups.push(() => backend.disconnect());
    cleanups.push(() => broker.disconnect());
    await Promise.all([broker.connect(), backend.connect()]);
    expect((await backend.getHeartbeat(worker.workerId))?.isRunning).toBe(false);
    expect(await broker.getConsumerCount("default")).toBe(0);
    expect(lines.filter((l) => l.level === "warn" || l.level === "error")).toEqual([]);
  });

  it("a stop() right after Redis came back, while the connections still wait to reconnect, still cleans up", async () => {
    if (own.server.pid === undefined) await own.server.start();
    const keyPrefix = uniqueName("stopdown-back");
    // Given clients (same reconnect delays as Chicory's own: 100 ms more per attempt), whose
    // reconnect attempts the test can see.
    const connect = () => {
      const client = new IORedis(own.server.url, { retryStrategy: (n: number) => Math.min(100 * n, 2000) });
      client.on("error", () => undefined);
      cleanups.push(() => client.disconnect());
      return client;
    };
    const brokerClient = connect();
    const backendClient = connect();
    const app = new Chicory({
      broker: new RedisBroker({ client: brokerClient, keyPrefix, env: {}, blockMs: 200 }),
      backend: new RedisBackend({ client: backendClient, keyPrefix, env: {} }),
      config: { env: {} },
    });
    cleanups.push(() => app.disconnect().catch(() => undefined));
    const { logger, lines } = capturingLogger();
    const worker = new Worker(app, { logger, concurrency: 2 });
    cleanups.push(() => worker.stop(0));
    await worker.start();
    await until(() => worker.lastHeartbeat !== null, "first heartbeat");

    // Down long enough that each connection's next attempt is at least 300 ms away...
    const attempts = (client: IORedis, n: number) =>
      new Promise<void>((resolve) => {
        let seen = 0;
        const onAttempt = () => {
          if (++seen < n) return;
          client.off("reconnecting", onAttempt);
          resolve();
        };
        client.on("reconnecting", onAttempt);
      });
    const waited = Promise.all([attempts(brokerClient, 3), attempts(backendClient, 3)]);
    await own.server.kill();
    await waited;
    // ...then back: both connections still say "reconnecting" when stop() is called.
    await own.server.start();
    expect([brokerClient.status, backendClient.status]).toEqual(["reconnecting", "reconnecting"]);
    const beforeStop = lines.length; // (the outage itself was logged: fetches failed)
    await worker.stop();

    const backend = new RedisBackend({ url: own.server.url, keyPrefix, env: {} });
    const broker = new RedisBroker({ url: own.server.url, keyPrefix, env: {} });
    cleanups.push(() => backend.disconnect());
    cleanups.push(() => broker.disconnect());
    await Promise.all([broker.connect(), backend.connect()]);
    // The server answers again: not taken for one that is away (the heartbeat as stopped, the
    // consumer gone from its group, no warning).
    expect((await backend.getHeartbeat(worker.workerId))?.isRunning).toBe(false);
    expect(await broker.getConsumerCount("default")).toBe(0);
    const stopLines = lines.slice(beforeStop);
    expect(stopLines.filter((l) => l.level === "warn" || l.level === "error").map((l) => l.message)).toEqual([]);
  });

  it("healthchecks asked together while a connection waits to reconnect share one check of the server", async () => {
    if (own.server.pid === undefined) await own.server.start();
    const client = new IORedis(own.server.url, { retryStrategy: (n: number) => Math.min(100 * n, 2000) });
    client.on("error", () => undefined);
    cleanups.push(() => client.disconnect());
    const broker = new RedisBroker({ client, keyPrefix: uniqueName("hc"), env: {} });
    cleanups.push(() => broker.disconnect());
    await broker.connect();
    const warnings: Error[] = [];
    const onWarning = (warning: Error) => warnings.push(warning);
    process.on("warning", onWarning);
    cleanups.push(() => {
      process.off("warning", onWarning);
    });

    const attempts = new Promise<void>((resolve) => {
      let seen = 0;
      client.on("reconnecting", () => {
        if (++seen === 3) resolve();
      });
    });
    await own.server.kill();
    await attempts; // the next attempt is at least 300 ms away
    await own.server.start();
    expect(client.status).toBe("reconnecting");
    const health = await Promise.all(Array.from({ length: 20 }, () => broker.healthcheck()));
    expect(health.map((h) => h.connected)).toEqual(Array(20).fill(true));
    // one listener for the connection's return, not one per healthcheck (20 listeners: a
    // MaxListenersExceededWarning, and 20 one-off connections to the server)
    await new Promise((resolve) => setImmediate(resolve));
    expect(warnings.map((w) => w.name)).not.toContain("MaxListenersExceededWarning");
  });

  it("a job running when Redis goes away stays pending, and another worker runs it once Redis is back", async () => {
    // A server that keeps its data (AOF, fsync always) across the outage.
    const dir = mkdtempSync(join(tmpdir(), "chicory-stop-outage-aof-"));
    const server = new OwnRedis(await freePort(), dir, "always");
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    cleanups.push(() => server.kill());
    await server.start();
    const keyPrefix = uniqueName("stopdown-job");
    const makeApp = () =>
      new Chicory({
        broker: new RedisBroker({ url: server.url, keyPrefix, env: {}, blockMs: 200, claimMinIdleMs: 500 }),
        backend: new RedisBackend({ url: server.url, keyPrefix, env: {} }),
        config: { env: {}, deliveryMode: "at_least_once" },
      });
    const runs: string[] = [];
    let aborted = 0;
    const register = (app: Chicory, who: string) =>
      app.task({ name: "hold", context: true }, async (ctx) => {
        runs.push(who);
        if (who === "second") return "done";
        // the first worker's run holds the job until its worker aborts it
        await new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve(), { once: true }));
        aborted++;
        throw new Error("aborted");
      });

    const first = makeApp();
    const hold = register(first, "first");
    cleanups.push(() => first.disconnect().catch(() => undefined));
    const { logger, lines } = capturingLogger();
    const worker = new Worker(first, { logger, concurrency: 1 });
    cleanups.push(() => worker.stop(0));
    await worker.start();
    const handle = await hold.delay();
    await until(() => runs.length === 1, "the first run");

    await server.kill(); // mid-run: the job cannot be acknowledged or released now
    const started = performance.now();
    await worker.stop(0.3); // the graceful timeout, then the abort
    const elapsedMs = performance.now() - started;
    expect(aborted).toBe(1);
    expect(worker.isRunning).toBe(false);
    // The handler had its whole graceful timeout; then the release of its aborted run, which
    // cannot reach Redis, was not waited for (before: until the shutdown grace ran out, at least
    // 3.5 s more whatever the machine). The message stays pending for its lease.
    expect(elapsedMs).toBeGreaterThanOrEqual(290);
    expect(elapsedMs).toBeLessThan(2500);
    expect(lines.map((l) => l.message)).toContainEqual(
      expect.stringMatching(/^shutdown: not waiting for outcomes that cannot be stored or acknowledged now/),
    );

    await server.start(); // same data (AOF): the entry is still pending for the stopped worker
    const second = makeApp();
    register(second, "second");
    cleanups.push(() => second.disconnect().catch(() => undefined));
    const rescuer = new Worker(second, { logger, concurrency: 1 });
    cleanups.push(() => rescuer.stop(0));
    await rescuer.start();
    expect(await new AsyncResult(handle.taskId, second.backend).get({ timeout: 20 })).toBe("done");
    expect(runs).toEqual(["first", "second"]);
  });
  it("stop() while the connect hangs (a server that accepts and never answers) cancels the start at once; run() returns", async () => {
    const sockets: Socket[] = [];
    let onConnection = () => {};
    const silent = createServer((socket) => {
      sockets.push(socket);
      onConnection();
    });
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    cleanups.push(async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    });
    const { port } = silent.address() as { port: number };
    const url = `redis://127.0.0.1:${port}/0`;
    /** A worker of a fresh app on the silent server, and a promise of its connection attempt. */
    const workerOnSilentServer = () => {
      const app = new Chicory({
        broker: new RedisBroker({ url, env: {} }),
        backend: new RedisBackend({ url, env: {} }),
        config: { env: {} },
      });
      cleanups.push(() => app.disconnect().catch(() => undefined));
      const { logger, lines } = capturingLogger();
      const connecting = new Promise<void>((resolve) => {
        onConnection = resolve;
      });
      return { worker: new Worker(app, { logger }), lines, connecting };
    };

    const first = workerOnSilentServer();
    const started = first.worker.start().catch((error: unknown) => error);
    await first.connecting;
    const stopAt = Date.now();
    await first.worker.stop();
    expect(String(await started)).toContain("worker start cancelled: stop() was called while the worker connected");
    expect(Date.now() - stopAt).toBeLessThan(5_000); // not the 10 s connect timeout
    expect(first.worker.isRunning).toBe(false);
    expect(first.lines.map((l) => l.message)).toContain("stopped while connecting: the worker did not start");
    // Started again while that start's close waits for its connect: a stop() cancels at once too.
    const again = first.worker.start().catch((error: unknown) => error);
    const againAt = Date.now();
    await first.worker.stop();
    expect(String(await again)).toContain("worker start cancelled");
    expect(Date.now() - againAt).toBeLessThan(5_000);

    // run() (the CLI's, a signal's stop) ends without an error
    const second = workerOnSilentServer();
    const running = second.worker.run();
    await second.connecting;
    await second.worker.stop();
    await expect(running).resolves.toBeUndefined();
    // the connects still hang in the background: end them, so the apps' cleanups close at once
    for (const socket of sockets) socket.destroy();
  });
  it("a start cancelled while connecting leaves its app usable: a later delay() connects and publishes", async () => {
    if (own.server.pid === undefined) await own.server.start();
    // answers only after 1 s: the start is cancelled before that, its connect then succeeds
    const sockets: Socket[] = [];
    let onConnection = () => {};
    let onFirstClosed = () => {};
    const firstClosed = new Promise<void>((resolve) => {
      onFirstClosed = resolve;
    });
    const slow = createServer((client) => {
      if (sockets.length === 0) client.once("close", () => onFirstClosed());
      sockets.push(client);
      client.pause();
      onConnection();
      setTimeout(() => {
        const upstream = new Socket();
        sockets.push(upstream);
        upstream.connect(own.server.port, "127.0.0.1", () => {
          client.pipe(upstream).pipe(client);
          client.resume();
        });
      }, 1000);
    });
    await new Promise<void>((resolve) => slow.listen(0, "127.0.0.1", resolve));
    cleanups.push(async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => slow.close(resolve));
    });
    const { port } = slow.address() as { port: number };
    const keyPrefix = uniqueName("cancelled");
    const app = new Chicory({
      broker: new RedisBroker({ url: `redis://127.0.0.1:${port}/0`, keyPrefix, env: {} }),
      backend: null,
      config: { env: {} },
    });
    cleanups.push(() => app.disconnect().catch(() => undefined));
    const job = app.task({ name: "after_cancel", ignoreResult: true }, async () => undefined);
    const worker = new Worker(app, { logger: capturingLogger().logger });
    const connecting = new Promise<void>((resolve) => {
      onConnection = resolve;
    });
    const started = worker.start().catch((error: unknown) => error);
    await connecting;
    await worker.stop();
    expect(String(await started)).toContain("worker start cancelled");
    // the cancelled start's connect went through later, and its close after it: the app was
    // marked connected by neither, so delay() connects again (it was refused as disconnected)
    await firstClosed;
    await expect(job.delay()).resolves.toBeDefined();
    const raw = new IORedis(own.server.url);
    cleanups.push(() => raw.quit().then(() => undefined));
    expect(await raw.xlen(`${keyPrefix}:stream:{default}`)).toBe(1);
  });
});

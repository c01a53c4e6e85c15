/**
 * A failover behind one address, as a managed Redis endpoint or a DNS name does it: two
 * redis-servers this test starts (B replicates A), reached through a TCP proxy. B is promoted,
 * A demoted, and the proxy sends new connections to B; the connections already open still
 * reach A, where every write now gets READONLY. The adapters reconnect on READONLY and send the
 * refused command again: the worker and the producer carry on against B by themselves. A
 * primary with `min-replicas-to-write` whose replica is gone refuses writes (`NOREPLICAS`):
 * publishes fail, and the worker's acks wait for the replica's return.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inspect } from "node:util";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RedisBackend } from "../../../src/backends/redis/index.js";
import { RedisBroker } from "../../../src/brokers/redis/index.js";
import { queueKeys } from "../../../src/brokers/redis/redis-keys.js";
import { defineBrokerScripts } from "../../../src/brokers/redis/redis-scripts.js";
import { MessageCodec } from "../../../src/core/message.js";
import {
  AsyncResult,
  BrokerConnectionError,
  Chicory,
  QueueFullError,
  silentLogger,
  Worker,
} from "../../../src/index.js";
import { type RedisClientLike, runScript } from "../../../src/redis/redis-client.js";
import { encodeTask, eventually } from "../../contract/contract-helpers.js";
import { capturingLogger } from "../../helpers/capturing-logger.js";
import { useCleanups } from "../../helpers/cleanups.js";
import { skipUnless } from "../../helpers/services.js";
import { ChaosProxy } from "../../reliability/infra/chaos-proxy.js";
import { freePort, OwnRedis } from "../../reliability/infra/redis-server.js";
import { acknowledged, caughtUp, replicate } from "./replication.js";

const skip = await skipUnless("redis");

describe.skipIf(skip)("redis adapters: failover behind one address", () => {
  const cleanups = useCleanups();
  const dirs: string[] = [];
  const servers: OwnRedis[] = [];

  async function ownRedis(): Promise<OwnRedis> {
    const dir = mkdtempSync(join(tmpdir(), "chicory-failover-"));
    dirs.push(dir);
    const server = new OwnRedis(await freePort(), dir, "none");
    servers.push(server);
    await server.start();
    return server;
  }

  /** A primary and its replica (killed and started again by the tests), with an admin connection to each. */
  async function primaryWithReplica() {
    const primary = await ownRedis();
    const replica = await ownRedis();
    const adminP = new Redis(primary.port, "127.0.0.1");
    const adminR = new Redis(replica.port, "127.0.0.1");
    adminR.on("error", () => {}); // the replica is killed and started again
    cleanups.push(() => {
      adminP.disconnect();
      adminR.disconnect();
    });
    await replicate(adminR, primary.port);
    await adminP.call("CONFIG", "SET", "repl-diskless-sync-delay", "0"); // (the replica's return: no 5 s wait)
    return { primary, replica, adminP, adminR };
  }

  let a: OwnRedis;
  let b: OwnRedis;
  beforeAll(async () => {
    a = await ownRedis();
    b = await ownRedis();
  });

  afterAll(async () => {
    for (const server of servers) await server.kill();
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  it("on a replica: a retry is an error, not settled; a publish fails with READONLY after a few reconnects", async () => {
    const primary = await ownRedis();
    const replica = await ownRedis();
    const admin = new Redis(replica.port, "127.0.0.1");
    cleanups.push(async () => {
      admin.disconnect();
      await replica.kill();
      await primary.kill();
    });
    await admin.call("REPLICAOF", "127.0.0.1", String(primary.port));
    const broker = new RedisBroker({ url: primary.url, keyPrefix: "ro", env: {} });
    broker.bind({ codec: new MessageCodec() });
    await broker.connect();
    cleanups.push(() => broker.disconnect());
    const task = encodeTask(new MessageCodec());
    await broker.publish("q", { id: task.id, body: task.body });
    const consumer = broker.consumer({ queues: ["q"], consumerId: "c" });
    cleanups.push(() => consumer.close());
    const [delivery] = await consumer.fetch(1, AbortSignal.timeout(3000));
    expect(delivery).toBeDefined();
    const offset = async (client: Redis) =>
      /master_repl_offset:(\d+)/.exec(String(await client.call("INFO", "replication")))?.[1];
    const primaryAdmin = new Redis(primary.port, "127.0.0.1");
    cleanups.push(async () => primaryAdmin.disconnect());
    await eventually(async () => (await offset(admin)) === (await offset(primaryAdmin)), 10_000);

    // The settle script run where the old primary is now a replica: READONLY, not "settled".
    const raw = new Redis(replica.port, "127.0.0.1", { maxRetriesPerRequest: 0 });
    cleanups.push(async () => raw.disconnect());
    defineBrokerScripts(raw as unknown as RedisClientLike);
    const keys = queueKeys("ro", "q");
    const retried = runScript(
      raw as unknown as RedisClientLike,
      "chicoryRetry",
      [keys.stream, keys.delayed, keys.delayedData],
      [broker.settings.consumerGroup, delivery?.deliveryId ?? "", task.body, 0, task.id, "c"],
    );
    await expect(retried).rejects.toThrow(/^READONLY/);

    // A broker whose URL names the replica: its publish fails with READONLY (no endless loop).
    const onReplica = new RedisBroker({ url: replica.url, keyPrefix: "ro", env: {} });
    onReplica.bind({ codec: new MessageCodec() });
    await onReplica.connect();
    cleanups.push(() => onReplica.disconnect());
    await expect(onReplica.publish("q", { id: task.id, body: task.body })).rejects.toThrow(/READONLY/);

    // A worker whose broker or backend names the replica refuses to start, naming it and its
    // primary (it would start and then fail every fetch).
    const replicaAt = `127.0.0.1:${replica.port}`;
    const primaryAt = `127.0.0.1:${primary.port}`;
    for (const [broker, backend] of [
      [replica.url, null],
      ["memory", replica.url],
    ] as const) {
      const app = new Chicory({ broker, backend, config: { env: {} } });
      cleanups.push(() => app.disconnect());
      app.task({ name: "noop" }, async () => undefined);
      const worker = new Worker(app, { logger: silentLogger });
      const component = broker === "memory" ? "redis backend" : "redis broker";
      await expect(worker.start()).rejects.toThrow(
        `${component}: redis://${replicaAt}/0 is a replica of ${primaryAt}, which refuses writes (READONLY)`,
      );
    }
  });

  it("workers and producers carry on against the promoted replica", { timeout: 30_000 }, async () => {
    const adminA = new Redis(a.port, "127.0.0.1");
    const adminB = new Redis(b.port, "127.0.0.1");
    const proxy = new ChaosProxy(a.port);
    const port = await proxy.listen();
    cleanups.push(async () => {
      await proxy.close();
      adminA.disconnect();
      adminB.disconnect();
    });
    await replicate(adminB, a.port);

    const url = `redis://127.0.0.1:${port}/0`;
    const app = new Chicory({
      broker: new RedisBroker({ url, keyPrefix: "failover", env: {}, blockMs: 200 }),
      backend: new RedisBackend({ url, keyPrefix: "failover", env: {} }),
    });
    const double = app.task(async function double(n: number) {
      return n * 2;
    });
    const worker = new Worker(app, { logger: silentLogger, concurrency: 4, heartbeatInterval: 0.2 });
    await worker.start();
    cleanups.push(() => worker.stop(5));
    expect(await (await double.delay(1)).get({ timeout: 10 })).toBe(2);
    // Everything written so far is on B before the switch.
    await caughtUp(adminA, adminB);

    await adminB.call("REPLICAOF", "NO", "ONE");
    await adminA.call("REPLICAOF", "127.0.0.1", String(b.port));
    proxy.retarget(b.port);

    const results = await Promise.all(
      Array.from({ length: 20 }, async (_, i) => (await double.delay(i)).get({ timeout: 20 })),
    );
    expect(results).toEqual(Array.from({ length: 20 }, (_, i) => i * 2));
    expect(await adminB.call("XLEN", "failover:stream:{default}")).toBe(0);
  });

  it("a primary refusing writes for want of replicas (min-replicas-to-write): publishes fail naming it; jobs under way settle once the replica is back", {
    timeout: 30_000,
  }, async () => {
    const { primary, replica, adminP, adminR } = await primaryWithReplica();
    await adminP.call("CONFIG", "SET", "min-replicas-to-write", "1", "min-replicas-max-lag", "10");
    const goodReplicas = async () =>
      Number(/min_slaves_good_slaves:(\d+)/.exec(String(await adminP.call("INFO", "replication")))?.[1]);
    await eventually(async () => (await goodReplicas()) === 1, 10_000);

    const app = new Chicory({
      broker: new RedisBroker({ url: primary.url, keyPrefix: "norep", env: {}, blockMs: 200 }),
      backend: new RedisBackend({ url: primary.url, keyPrefix: "norep", env: {} }),
    });
    let open: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    const started: number[] = [];
    const held = app.task(async function held(n: number) {
      started.push(n);
      await gate;
      return n * 2;
    });
    const { logger, until } = capturingLogger();
    const worker = new Worker(app, { logger, concurrency: 4, heartbeatInterval: 0.2 });
    await worker.start();
    cleanups.push(() => worker.stop(5));
    const underWay = await Promise.all([1, 2, 3].map((n) => held.delay(n)));
    await eventually(async () => started.length === 3, 10_000);

    await replica.kill();
    await eventually(async () => (await goodReplicas()) === 0, 10_000);
    // nothing is published (the script's first write is refused)
    const refusal = await held.delay(9876).then(
      () => new Error("published, but it should have been refused"),
      (error: unknown) => error as Error,
    );
    expect(refusal).toBeInstanceOf(BrokerConnectionError);
    expect(refusal.message).toMatch(
      /publish failed .*NOREPLICAS Not enough good replicas to write\. \(this write was not applied: the primary refuses writes while fewer replicas than its min-replicas-to-write/,
    );
    // its cause is the reply without the command ioredis hangs on it (the job's body among its arguments)
    const shown = inspect(refusal, { depth: 8 });
    expect(shown).toMatch(/\[cause\]: .*NOREPLICAS/);
    expect(shown).not.toContain("9876");
    expect(await adminP.call("XLEN", "norep:stream:{default}")).toBe(3);
    open();
    // the results and acks are refused, and tried again
    const refused = await until(/settling step failed/);
    expect(String(refused.fields.err)).toMatch(/NOREPLICAS/);

    await replica.start();
    await replicate(adminR, primary.port);
    expect(await Promise.all(underWay.map((r) => r.get({ timeout: 20 })))).toEqual([2, 4, 6]);
    expect(await (await held.delay(4)).get({ timeout: 10 })).toBe(8);
    await eventually(async () => Number(await adminP.call("XLEN", "norep:stream:{default}")) === 0, 5000);
    expect(await adminP.call("XPENDING", "norep:stream:{default}", "chicory-workers")).toEqual([0, null, null, null]);
  });
  it("waitReplicas: a publish resolves once the replica holds it; with the replica gone it rejects after waitTimeoutMs, applied all the same, while the worker's acks go on", {
    timeout: 30_000,
  }, async () => {
    const { primary, replica, adminP, adminR } = await primaryWithReplica();
    const waitTimeoutMs = 3000;
    const app = new Chicory({
      broker: new RedisBroker({
        url: primary.url,
        keyPrefix: "wait",
        env: {},
        blockMs: 200,
        waitReplicas: 1,
        waitTimeoutMs,
      }),
      backend: new RedisBackend({ url: primary.url, keyPrefix: "wait", env: {} }),
    });
    cleanups.push(() => app.disconnect());
    const double = app.task(async function double(n: number) {
      return n * 2;
    });
    let open: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    const held = app.task(async function heldForWait(n: number) {
      await gate;
      return n * 3;
    });

    // a client blocked in WAIT (CLIENT LIST: flags with "b", last command wait)
    const blockedInWait = async () =>
      String(await adminP.call("CLIENT", "LIST"))
        .split("\n")
        .some((line) => /\bflags=\w*b/.test(line) && /\bcmd=wait\b/.test(line));
    const replicaPid = replica.pid ?? 0;
    const resumeReplica = () => {
      try {
        process.kill(replicaPid, "SIGCONT");
      } catch {
        // killed and started again since (a later step of this test)
      }
    };
    cleanups.push(resumeReplica);

    // no worker yet: once delay() resolves, the replica holds every message
    await Promise.all(Array.from({ length: 19 }, (_, i) => double.delay(i)));
    expect(await adminR.call("XLEN", "wait:stream:{default}")).toBe(19);
    // with the replica stopped, a publish in the primary's stream stays unresolved until it is back
    await acknowledged(adminP);
    process.kill(replicaPid, "SIGSTOP");
    let isResolved = false;
    const stalled = double.delay(19).then(() => {
      isResolved = true;
    });
    await eventually(async () => Number(await adminP.call("XLEN", "wait:stream:{default}")) === 20, 5000);
    await eventually(blockedInWait, 5000);
    expect(isResolved).toBe(false);
    resumeReplica();
    await stalled;
    expect(await adminR.call("XLEN", "wait:stream:{default}")).toBe(20);
    // a call Redis no longer knows by its SHA (NOSCRIPT, then EVAL) is waited for too: its WAIT
    // leaves after the EVAL's reply. The replica stops once it has acknowledged the SCRIPT
    // FLUSH: a WAIT sent before the EVAL ran would count that acknowledgement and confirm at once
    await adminP.call("SCRIPT", "FLUSH");
    await acknowledged(adminP);
    process.kill(replicaPid, "SIGSTOP");
    // a batched publish (EVALSHA sent first) and one with a task id (its own call)
    const afterNoscript = await Promise.all(
      [double.delay(20), double.applyAsync([20], { taskId: "wait-after-noscript" })].map((sent) =>
        sent.then(
          () => new Error("confirmed, but the replica was stopped"),
          (error: unknown) => error as Error,
        ),
      ),
    );
    for (const error of afterNoscript) {
      expect(error.message).toMatch(/only 0 of the 1 replicas asked for \(waitReplicas\) acknowledged it/);
    }
    resumeReplica();
    await caughtUp(adminP, adminR);
    expect(await adminR.call("XLEN", "wait:stream:{default}")).toBe(22);

    const worker = new Worker(app, { logger: silentLogger, concurrency: 4, heartbeatInterval: 0.2 });
    await worker.start();
    cleanups.push(() => worker.stop(5));
    const underWay = await held.delay(1);
    await eventually(async () => Number(await adminP.call("XLEN", "wait:stream:{default}")) === 1, 10_000);

    await replica.kill();
    const waiting = double.applyAsync([21], { taskId: "wait-unconfirmed" }).then(
      () => new Error("confirmed, but no replica was there"),
      (error: unknown) => error as Error,
    );
    // the publish waits on its own connection: the job under way settles meanwhile
    await eventually(blockedInWait, 5000);
    open();
    expect(await underWay.get({ timeout: 10 })).toBe(3);
    expect(await blockedInWait()).toBe(true); // acked before the WAIT ended
    const refusal = await waiting;
    expect(refusal).toBeInstanceOf(BrokerConnectionError);
    expect(refusal.message).toMatch(
      /publish failed .*only 0 of the 1 replicas asked for \(waitReplicas\) acknowledged it within 3000 ms \(waitTimeoutMs\): it is applied on the primary and runs/,
    );
    // applied on the primary: it runs
    expect(await new AsyncResult("wait-unconfirmed", app.backend).get({ timeout: 10 })).toBe(42);

    await replica.start();
    await replicate(adminR, primary.port);
    expect(await (await double.delay(50)).get({ timeout: 10 })).toBe(100);

    // a publish made while its connection is down waits in the client and leaves on the next
    // connection: confirmed there, not taken for a call of the old one
    const proxy = new ChaosProxy(primary.port);
    const port = await proxy.listen();
    cleanups.push(() => proxy.close());
    const viaProxy = new Chicory({
      broker: new RedisBroker({
        url: `redis://127.0.0.1:${port}/0`,
        keyPrefix: "wait",
        env: {},
        waitReplicas: 1,
        waitTimeoutMs,
      }),
    });
    cleanups.push(() => viaProxy.disconnect());
    const later = viaProxy.task(async function double(n: number) {
      return n * 2;
    });
    await viaProxy.connect();
    proxy.retarget(await freePort()); // nothing listens there: the reconnects fail
    proxy.cut();
    await eventually(async () => !(await viaProxy.broker.healthcheck()).connected, 10_000);
    const sent = later.delay(70).then(
      () => "resolved",
      (error: unknown) => String(error),
    );
    proxy.retarget(primary.port);
    expect(await sent).toBe("resolved");
  });
  it("waitReplicas: calls sent during a wait share the next one; messages a call did not add keep their own answer; a wait across a reconnect is not a confirmation", {
    timeout: 30_000,
  }, async () => {
    // a replica that stopped answering (SIGSTOP): every WAIT ends at its timeout with 0
    const { primary, replica, adminP: admin } = await primaryWithReplica();
    const stopped = replica.pid;
    if (stopped === undefined) throw new Error("the replica has no process");
    process.kill(stopped, "SIGSTOP");
    cleanups.push(async () => {
      process.kill(stopped, "SIGCONT");
    });
    const options = {
      url: primary.url,
      keyPrefix: "waits",
      env: {},
      waitReplicas: 1,
      waitTimeoutMs: 500,
      publishTimeoutMs: 2500,
    };
    const app = new Chicory({ broker: new RedisBroker(options) });
    const full = new Chicory({ broker: new RedisBroker({ ...options, maxStreamLength: 3 }) });
    cleanups.push(() => app.disconnect());
    cleanups.push(() => full.disconnect());
    const t = app.task(async function waited(n: number) {
      return n;
    });
    const unconfirmed = /only 0 of the 1 replicas asked for \(waitReplicas\) acknowledged it within 500 ms/;
    const outcome = (p: Promise<unknown>) =>
      p.then(
        () => "resolved",
        (error: unknown) => error as Error,
      );

    // six calls, each sent while a WAIT blocks: each waits for the one under way and the next
    // (three at most), not for one per call before it (one WAIT per call, each after the last,
    // would end the later ones at the publish time limit, "outcome unknown")
    const blockedInWait = async () =>
      String(await admin.call("CLIENT", "LIST"))
        .split("\n")
        .some((line) => /\bflags=\w*b/.test(line) && /\bcmd=wait\b/.test(line));
    const calls: Array<Promise<unknown>> = [];
    for (let i = 0; i < 6; i++) {
      if (i > 0) await eventually(blockedInWait, 5000);
      calls.push(outcome(t.delay(i)));
    }
    for (const answer of await Promise.all(calls)) {
      expect(answer).toBeInstanceOf(BrokerConnectionError);
      expect((answer as Error).message).toMatch(unconfirmed);
    }
    expect(await admin.call("XLEN", "waits:stream:{default}")).toBe(6);

    // a delayed publish waits too; applied, it is in the delayed set
    expect(String(await outcome(t.applyAsync([7], { countdown: 60 })))).toMatch(unconfirmed);
    expect(await admin.call("ZCARD", "waits:delayed:{default}")).toBe(1);

    const waits = async () =>
      Number(/cmdstat_wait:calls=(\d+)/.exec(String(await admin.call("INFO", "commandstats")))?.[1] ?? 0);
    // calls answered together share one WAIT: five queues, five script calls in one turn, one
    // WAIT (two when the replies arrive in two reads), not one per call
    let waitsBefore = await waits();
    const queues = ["q1", "q2", "q3", "q4", "q5"];
    const together = await Promise.all(queues.map((queue, i) => outcome(t.applyAsync([i], { queue }))));
    for (const answer of together) expect(String(answer)).toMatch(unconfirmed);
    expect((await waits()) - waitsBefore).toBeGreaterThanOrEqual(1);
    expect((await waits()) - waitsBefore).toBeLessThanOrEqual(2);
    for (const queue of queues) expect(await admin.call("XLEN", `waits:stream:{${queue}}`)).toBe(1);

    // a countdown's move is scheduled from the call's reply, not after its wait: with no worker
    // here to find it (their recheck), it is in its stream while delay() still waits
    const moving = new Chicory({
      broker: new RedisBroker({ ...options, waitTimeoutMs: 3000, publishTimeoutMs: 15_000 }),
    });
    cleanups.push(() => moving.disconnect());
    let settled = false;
    const countdown = outcome(
      moving
        .task(async function waited(n: number) {
          return n;
        })
        .applyAsync([11], { countdown: 0.1, queue: "soon" }),
    ).finally(() => {
      settled = true;
    });
    await eventually(async () => Number(await admin.call("XLEN", "waits:stream:{soon}")) === 1, 2500);
    expect(settled).toBe(false);
    expect(String(await countdown)).toMatch(
      /only 0 of the 1 replicas asked for \(waitReplicas\) acknowledged it within 3000 ms/,
    );

    // a unique publish: the first adds its message (unconfirmed); the second adds nothing, so
    // nothing waits for the replicas: an idempotent enqueue, as without waitReplicas
    expect(String(await outcome(t.applyAsync([8], { taskId: "waits-dup" })))).toMatch(unconfirmed);
    waitsBefore = await waits();
    expect(await outcome(t.applyAsync([8], { taskId: "waits-dup" }))).toBe("resolved");
    expect(await waits()).toBe(waitsBefore); // no WAIT for a call that added nothing
    // a publish over the backlog limit is refused as such, not "applied on the primary"
    const refused = await outcome(
      full
        .task(async function waited(n: number) {
          return n;
        })
        .delay(9),
    );
    expect(refused).toBeInstanceOf(QueueFullError);
    expect(await admin.call("XLEN", "waits:stream:{default}")).toBe(7);

    // the publish connection dropped while its WAIT is blocked: the WAIT ioredis sends again on
    // the new connection counts that connection's writes, not the call's
    const length = Number(await admin.call("XLEN", "waits:stream:{default}"));
    const dropped = outcome(t.delay(10));
    // the publish connection, blocked in the WAIT of this call (its message is in)
    const blockedPublisher = async () => {
      if (Number(await admin.call("XLEN", "waits:stream:{default}")) !== length + 1) return false;
      const line = String(await admin.call("CLIENT", "LIST"))
        .split("\n")
        .find((l) => /\bname=chicory-broker-publish\b/.test(l) && /\bflags=\w*b/.test(l) && /\bcmd=wait\b/.test(l));
      return line === undefined ? false : (/\bid=(\d+)\b/.exec(line)?.[1] ?? false);
    };
    const id = await eventually(blockedPublisher, 5000);
    await admin.call("CLIENT", "KILL", "ID", String(id));
    const answer = await dropped;
    expect(answer).toBeInstanceOf(BrokerConnectionError);
    expect((answer as Error).message).toMatch(
      /the connection to Redis was made again while waiting for the replicas|waiting for the replicas \(waitReplicas\) failed/,
    );
  });

  it("waitReplicas: the healthcheck reports the publishes' own connection when it is down", {
    timeout: 30_000,
  }, async () => {
    const server = await ownRedis();
    const admin = new Redis(server.port, "127.0.0.1");
    cleanups.push(async () => {
      await admin.config("SET", "maxclients", "10000").catch(() => undefined);
      admin.disconnect();
    });
    const broker = new RedisBroker({ url: server.url, keyPrefix: "health", env: {}, waitReplicas: 1 });
    cleanups.push(() => broker.disconnect());
    await broker.connect();
    expect(await broker.healthcheck()).toEqual(expect.objectContaining({ connected: true }));

    // the publishes' connection dropped and kept out (no new connection accepted); the main
    // one, which the healthcheck pings, stays up
    await admin.config("SET", "maxclients", "1");
    const line = String(await admin.call("CLIENT", "LIST"))
      .split("\n")
      .find((l) => /\bname=chicory-broker-publish\b/.test(l));
    const id = line === undefined ? undefined : /\bid=(\d+)\b/.exec(line)?.[1];
    if (id === undefined) throw new Error("no publish connection in CLIENT LIST");
    await admin.call("CLIENT", "KILL", "ID", id);
    let down: { readonly error?: string | undefined } = {};
    await eventually(async () => {
      const status = await broker.healthcheck();
      down = status;
      return !status.connected;
    }, 10_000);
    expect(down.error).toMatch(/^the publishes' connection is (connecting|reconnecting|connect|wait)/);

    await admin.config("SET", "maxclients", "10000");
    await eventually(async () => (await broker.healthcheck()).connected, 10_000);
  });

  it("waitReplicas with a given client: publishes wait on the broker's own copy of it, which disconnect closes, leaving the client open", {
    timeout: 30_000,
  }, async () => {
    const { primary, replica, adminP, adminR } = await primaryWithReplica();
    const client = new Redis(primary.port, "127.0.0.1");
    cleanups.push(() => client.disconnect());
    const app = new Chicory({
      broker: new RedisBroker({ client, keyPrefix: "waitgiven", env: {}, waitReplicas: 1, waitTimeoutMs: 500 }),
      backend: new RedisBackend({ url: primary.url, keyPrefix: "waitgiven", env: {} }),
    });
    cleanups.push(() => app.disconnect());
    const double = app.task(async function double(n: number) {
      return n * 2;
    });
    const publishConnections = async () =>
      String(await adminP.call("CLIENT", "LIST"))
        .split("\n")
        .filter((line) => /\bname=chicory-broker-publish\b/.test(line)).length;

    // once delay() resolves, the replica holds every message
    await Promise.all(Array.from({ length: 10 }, (_, i) => double.delay(i)));
    expect(await adminR.call("XLEN", "waitgiven:stream:{default}")).toBe(10);
    expect(await publishConnections()).toBe(1);
    // with the replica stopped, a publish is applied on the primary and rejects, saying so
    await acknowledged(adminP);
    const replicaPid = replica.pid ?? 0;
    process.kill(replicaPid, "SIGSTOP");
    cleanups.push(() => {
      try {
        process.kill(replicaPid, "SIGCONT");
      } catch {
        // already gone
      }
    });
    const refusal = await double.delay(10).then(
      () => new Error("confirmed, but the replica was stopped"),
      (error: unknown) => error as Error,
    );
    process.kill(replicaPid, "SIGCONT");
    expect(refusal).toBeInstanceOf(BrokerConnectionError);
    expect(refusal.message).toMatch(
      /only 0 of the 1 replicas asked for \(waitReplicas\) acknowledged it within 500 ms \(waitTimeoutMs\)/,
    );
    expect(await adminP.call("XLEN", "waitgiven:stream:{default}")).toBe(11);

    // the broker closes its copy; the caller's client stays open and usable
    await app.disconnect();
    await eventually(async () => (await publishConnections()) === 0, 5000);
    expect(client.status).toBe("ready");
    expect(await client.ping()).toBe("PONG");
  });
});

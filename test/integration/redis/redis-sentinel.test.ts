/**
 * Redis Sentinel: the broker and the backend given ioredis clients that find the primary through
 * sentinels (`client:` option, with `readonlyReconnector()`). Two redis-servers and the
 * sentinels this test starts. A forced failover (`SENTINEL FAILOVER`) promotes the replica and
 * demotes the old primary; a crash (SIGKILL of the primary, three sentinels agreeing) promotes
 * the replica. Either way the worker and the producer carry on against the new primary by
 * themselves.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { afterAll, describe, expect, it } from "vitest";
import { RedisBackend } from "../../../src/backends/redis/index.js";
import { RedisBroker } from "../../../src/brokers/redis/index.js";
import { Chicory, silentLogger, Worker } from "../../../src/index.js";
import { readonlyReconnector } from "../../../src/redis/redis-options.js";
import { eventually } from "../../contract/contract-helpers.js";
import { useCleanups } from "../../helpers/cleanups.js";
import { skipUnless } from "../../helpers/services.js";
import { freePort, OwnRedis, pingRedis } from "../../reliability/infra/redis-server.js";
import { caughtUp, replicate } from "./replication.js";

const skip = await skipUnless("redis");

const NAME = "chicory";

/** `redis-server --sentinel` monitoring `127.0.0.1:<primaryPort>` as {@link NAME}. */
async function startSentinel(
  dir: string,
  primaryPort: number,
  quorum: number,
): Promise<{ port: number; child: ChildProcess }> {
  const port = await freePort();
  const own = mkdtempSync(join(dir, "sentinel-"));
  const conf = join(own, "sentinel.conf");
  writeFileSync(
    conf,
    [
      `port ${port}`,
      "bind 127.0.0.1",
      `dir ${own}`,
      `sentinel monitor ${NAME} 127.0.0.1 ${primaryPort} ${quorum}`,
      `sentinel down-after-milliseconds ${NAME} 1000`,
      `sentinel failover-timeout ${NAME} 5000`,
      "",
    ].join("\n"),
  );
  const child = spawn("redis-server", [conf, "--sentinel"], { stdio: "ignore" });
  await eventually(async () => {
    if (child.exitCode !== null) throw new Error(`redis-sentinel exited with ${child.exitCode}`);
    return pingRedis(port);
  }, 10_000);
  return { port, child };
}

const role = async (admin: Redis) => String(((await admin.call("ROLE")) as unknown[])[0]);
const count = async (admin: Redis, ...command: string[]) =>
  ((await admin.call(...(command as [string]))) as unknown[]).length;

describe.skipIf(skip)("redis adapters: Sentinel", () => {
  const cleanups = useCleanups();
  const dir = mkdtempSync(join(tmpdir(), "chicory-sentinel-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /**
   * A primary A, its replica B, `sentinels` sentinels (quorum: a majority), and an app whose
   * broker and backend reach the primary through them (clients given, or a `redis+sentinel://`
   * URL), with a worker started.
   */
  async function setup(sentinels: number, form: "client" | "url") {
    const a = new OwnRedis(await freePort(), mkdtempSync(join(dir, "a-")), "none");
    const b = new OwnRedis(await freePort(), mkdtempSync(join(dir, "b-")), "none");
    cleanups.push(async () => {
      await a.kill();
      await b.kill();
    });
    await a.start();
    await b.start();
    const adminA = new Redis(a.port, "127.0.0.1", { maxRetriesPerRequest: 1 });
    const adminB = new Redis(b.port, "127.0.0.1");
    adminA.on("error", () => {}); // A may be killed
    cleanups.push(() => {
      adminA.disconnect();
      adminB.disconnect();
    });
    await replicate(adminB, a.port);
    const started: { port: number; child: ChildProcess }[] = [];
    for (let i = 0; i < sentinels; i++) started.push(await startSentinel(dir, a.port, Math.floor(sentinels / 2) + 1));
    const sentinel = new Redis((started[0] as { port: number }).port, "127.0.0.1");
    cleanups.push(() => {
      sentinel.disconnect();
      for (const s of started) s.child.kill("SIGKILL");
    });
    // the sentinels have found the replica and each other (they can fail over)
    await eventually(async () => (await count(sentinel, "SENTINEL", "replicas", NAME)) === 1, 15_000, 100);
    await eventually(async () => (await count(sentinel, "SENTINEL", "sentinels", NAME)) === sentinels - 1, 15_000, 100);

    const viaSentinel = () => {
      const client = new Redis({
        sentinels: started.map((s) => ({ host: "127.0.0.1", port: s.port })),
        name: NAME,
        reconnectOnError: readonlyReconnector(),
      });
      // the owner's listener (connections drop when the primary goes away or is demoted)
      client.on("error", () => {});
      cleanups.push(() => client.disconnect());
      return client;
    };
    const url = `redis+sentinel://${started.map((s) => `127.0.0.1:${s.port}`).join(",")}/${NAME}`;
    const via = () => (form === "url" ? { url } : { client: viaSentinel() });
    const broker = new RedisBroker({ ...via(), keyPrefix: "sentinel", blockMs: 200, env: {} });
    const backend = new RedisBackend({ ...via(), keyPrefix: "sentinel", env: {} });
    const app = new Chicory({ broker, backend });
    const double = app.task(async function double(n: number) {
      return n * 2;
    });
    const worker = new Worker(app, { logger: silentLogger, concurrency: 4, heartbeatInterval: 0.2 });
    await worker.start();
    cleanups.push(() => worker.stop(5));
    const run = async (from: number, n: number) =>
      Promise.all(Array.from({ length: n }, async (_, i) => (await double.delay(from + i)).get({ timeout: 30 })));
    return { a, b, adminA, adminB, sentinel, url, broker, backend, double, run };
  }

  /** Every entry of B's stream acknowledged and deleted, none pending, the worker's heartbeat there. */
  async function settledOn(adminB: Redis): Promise<void> {
    // (a result can be announced just before its entry's ack reaches Redis)
    await eventually(async () => Number(await adminB.call("XLEN", "sentinel:stream:{default}")) === 0, 5000);
    expect(await adminB.call("XPENDING", "sentinel:stream:{default}", "chicory-workers")).toEqual([
      0,
      null,
      null,
      null,
    ]);
    await eventually(async () => Number(await adminB.call("ZCARD", "sentinel:workers")) === 1, 5000);
  }

  it("workers and producers carry on after a forced failover and the old primary's demotion", {
    timeout: 60_000,
  }, async () => {
    const s = await setup(1, "client");
    // two clients of the same sentinels' primary: a result and its entry's ack are one script call
    expect(s.broker.attachResults(s.backend)).toBe(true);
    expect(await s.run(0, 1)).toEqual([0]);
    await caughtUp(s.adminA, s.adminB);

    // (NOGOODSLAVE until the sentinel has its own fresh view of the replica)
    await eventually(async () => (await s.sentinel.call("SENTINEL", "FAILOVER", NAME)) === "OK", 20_000, 200);
    await eventually(async () => {
      const [, port] = (await s.sentinel.call("SENTINEL", "get-master-addr-by-name", NAME)) as string[];
      return Number(port) === s.b.port;
    }, 20_000);
    // the old primary is a replica now, and the sentinel closed its clients' connections
    await eventually(async () => (await role(s.adminA)) === "slave", 20_000);
    expect(await role(s.adminB)).toBe("master");

    expect(await s.run(0, 20)).toEqual(Array.from({ length: 20 }, (_, i) => i * 2));
    await settledOn(s.adminB);
  });

  it("jobs published while the primary is down (SIGKILL) run when three sentinels have promoted the replica (redis+sentinel:// URL)", {
    timeout: 60_000,
  }, async () => {
    const s = await setup(3, "url");
    // a redis+sentinel:// URL: the same primary for both, so results and acks are one script call
    expect(s.broker.attachResults(s.backend)).toBe(true);
    // a name the sentinels do not know: connect fails at once, naming them (no endless wait)
    const unknown = new RedisBroker({ url: s.url.replace(`/${NAME}`, "/nosuch"), env: {} });
    await expect(unknown.connect()).rejects.toThrow(
      /cannot connect to redis\+sentinel:\/\/.*: no sentinel \(127\.0\.0\.1:\d+, .*\) led to the primary "nosuch"/,
    );
    expect(await s.run(0, 10)).toEqual(Array.from({ length: 10 }, (_, i) => i * 2));
    await caughtUp(s.adminA, s.adminB); // what was acknowledged before is on B (replication is asynchronous)

    await s.a.kill("SIGKILL");
    // published from the crash on, through the sentinels' agreement and the promotion
    const during = s.run(100, 50);
    await eventually(
      async () => {
        const [, port] = (await s.sentinel.call("SENTINEL", "get-master-addr-by-name", NAME)) as string[];
        return Number(port) === s.b.port;
      },
      30_000,
      100,
    );
    expect(await during).toEqual(Array.from({ length: 50 }, (_, i) => (100 + i) * 2));
    expect(await s.run(200, 20)).toEqual(Array.from({ length: 20 }, (_, i) => (200 + i) * 2));
    await settledOn(s.adminB);
  });
});

/**
 * Redis Sentinel: the broker and the backend given ioredis clients that find the primary through
 * a sentinel (`client:` option, with `readonlyReconnector()`). Two redis-servers and a sentinel
 * this test starts; a forced failover (`SENTINEL FAILOVER`) promotes the replica and demotes the
 * old primary: the worker and the producer carry on against the new primary by themselves.
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

/** `redis-server --sentinel` monitoring `127.0.0.1:<primaryPort>` as `name`, alone (quorum 1). */
async function startSentinel(
  dir: string,
  name: string,
  primaryPort: number,
): Promise<{ port: number; child: ChildProcess }> {
  const port = await freePort();
  const conf = join(dir, "sentinel.conf");
  writeFileSync(
    conf,
    [
      `port ${port}`,
      "bind 127.0.0.1",
      `dir ${dir}`,
      `sentinel monitor ${name} 127.0.0.1 ${primaryPort} 1`,
      `sentinel down-after-milliseconds ${name} 1000`,
      `sentinel failover-timeout ${name} 5000`,
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

describe.skipIf(skip)("redis adapters: Sentinel", () => {
  const cleanups = useCleanups();
  const dir = mkdtempSync(join(tmpdir(), "chicory-sentinel-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("workers and producers carry on after a failover, through clients that ask the sentinel", {
    timeout: 60_000,
  }, async () => {
    const a = new OwnRedis(await freePort(), mkdtempSync(join(dir, "a-")), "none");
    const b = new OwnRedis(await freePort(), mkdtempSync(join(dir, "b-")), "none");
    cleanups.push(async () => {
      await a.kill();
      await b.kill();
    });
    await a.start();
    await b.start();
    const adminA = new Redis(a.port, "127.0.0.1");
    const adminB = new Redis(b.port, "127.0.0.1");
    cleanups.push(() => {
      adminA.disconnect();
      adminB.disconnect();
    });
    await replicate(adminB, a.port);
    const sentinel = await startSentinel(dir, "chicory", a.port);
    const sentinelAdmin = new Redis(sentinel.port, "127.0.0.1");
    cleanups.push(() => {
      sentinelAdmin.disconnect();
      sentinel.child.kill("SIGKILL");
    });
    // the sentinel has found the replica (it can fail over to it)
    await eventually(
      async () => ((await sentinelAdmin.call("SENTINEL", "replicas", "chicory")) as unknown[]).length === 1,
      15_000,
    );

    const viaSentinel = () => {
      const client = new Redis({
        sentinels: [{ host: "127.0.0.1", port: sentinel.port }],
        name: "chicory",
        reconnectOnError: readonlyReconnector(),
      });
      // the owner's listener (the sentinel kills the old primary's clients when it demotes it)
      client.on("error", () => {});
      return client;
    };
    const brokerClient = viaSentinel();
    const backendClient = viaSentinel();
    cleanups.push(() => {
      brokerClient.disconnect();
      backendClient.disconnect();
    });
    const broker = new RedisBroker({ client: brokerClient, keyPrefix: "sentinel", blockMs: 200, env: {} });
    const backend = new RedisBackend({ client: backendClient, keyPrefix: "sentinel", env: {} });
    const app = new Chicory({ broker, backend });
    const double = app.task(async function double(n: number) {
      return n * 2;
    });
    const worker = new Worker(app, { logger: silentLogger, concurrency: 4, heartbeatInterval: 0.2 });
    await worker.start();
    cleanups.push(() => worker.stop(5));
    // two clients of the same sentinels' primary: a result and its entry's ack are one script call
    expect(broker.attachResults(backend)).toBe(true);
    expect(await (await double.delay(1)).get({ timeout: 10 })).toBe(2);
    // Everything written so far is on B before the failover.
    await caughtUp(adminA, adminB);

    // (NOGOODSLAVE until the sentinel has its own fresh view of the replica)
    await eventually(async () => (await sentinelAdmin.call("SENTINEL", "FAILOVER", "chicory")) === "OK", 20_000, 200);
    await eventually(async () => {
      const [, port] = (await sentinelAdmin.call("SENTINEL", "get-master-addr-by-name", "chicory")) as string[];
      return Number(port) === b.port;
    }, 20_000);
    // the old primary is a replica now: connections still open to it get READONLY
    await eventually(async () => (await role(adminA)) === "slave", 20_000);
    expect(await role(adminB)).toBe("master");

    const results = await Promise.all(
      Array.from({ length: 20 }, async (_, i) => (await double.delay(i)).get({ timeout: 30 })),
    );
    expect(results).toEqual(Array.from({ length: 20 }, (_, i) => i * 2));
    // every entry acknowledged and deleted there (the broker and the backend are two clients, so
    // a result can be announced just before its entry's ack reaches Redis)
    await eventually(async () => Number(await adminB.call("XLEN", "sentinel:stream:{default}")) === 0, 5000);
    expect(await adminB.call("XPENDING", "sentinel:stream:{default}", "chicory-workers")).toEqual([
      0,
      null,
      null,
      null,
    ]);
    // the worker's heartbeat goes on on the new primary
    const heartbeats = async () => Number(await adminB.call("ZCARD", "sentinel:workers"));
    await eventually(async () => (await heartbeats()) === 1, 5000);
  });
});

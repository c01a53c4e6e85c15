/**
 * A sharded server behind one address (a proxy, a managed "cluster" reached without the
 * Cluster API) refuses a command over keys of several slots with CROSSSLOT. Stood in for here
 * by a one-node cluster of the test's own, reached with a plain client: a worker of several
 * queues, whose single blocking read over all their streams is refused, reads them one at a
 * time instead and gets the jobs of each.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import { RedisBackend } from "../../../src/backends/redis/index.js";
import { RedisBroker } from "../../../src/brokers/redis/index.js";
import { MessageCodec } from "../../../src/core/message.js";
import { ConfigurationError } from "../../../src/errors.js";
import { encodeTask, eventually, fetchN } from "../../contract/contract-helpers.js";
import { capturingLogger } from "../../helpers/capturing-logger.js";
import { useCleanups } from "../../helpers/cleanups.js";
import { skipUnless } from "../../helpers/services.js";
import { freePort } from "../../reliability/infra/redis-server.js";

const skip = await skipUnless("redis");
const codec = new MessageCodec();

describe.skipIf(skip)("redis: a sharded server behind one address", () => {
  const cleanups = useCleanups();

  /** A one-node cluster of the test's own, every slot on it (stopped and removed after); its port. */
  async function shardedServer(): Promise<number> {
    const dir = mkdtempSync(join(tmpdir(), "chicory-sharded-"));
    const port = await freePort();
    const server: ChildProcess = spawn(
      "redis-server",
      [
        ...["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--appendonly", "no"],
        ...["--cluster-enabled", "yes", "--cluster-config-file", join(dir, "nodes.conf")],
      ],
      { stdio: "ignore" },
    );
    const admin = new Redis(port, "127.0.0.1", { lazyConnect: true, maxRetriesPerRequest: 0 });
    admin.on("error", () => undefined); // (refused until the server listens)
    cleanups.push(async () => {
      admin.disconnect();
      const exited = new Promise((resolve) => server.once("exit", resolve));
      server.kill("SIGKILL");
      await exited;
      rmSync(dir, { recursive: true, force: true });
    });
    await eventually(async () => {
      if (admin.status !== "ready") await admin.connect();
      expect(await admin.ping()).toBe("PONG");
    }, 10_000);
    await admin.call("CLUSTER", "ADDSLOTSRANGE", "0", "16383"); // every slot on this node
    await eventually(async () => expect(String(await admin.call("CLUSTER", "INFO"))).toMatch(/cluster_state:ok/));
    return port;
  }

  it("a consumer of several queues reads them one at a time when the server refuses a read over several slots", async () => {
    const port = await shardedServer();
    const { logger, lines } = capturingLogger();
    // (a URL naming a Cluster node is refused at connect; a plain client given is taken as it is,
    // as a proxy's would be)
    const plain = new Redis(port, "127.0.0.1");
    cleanups.push(async () => plain.disconnect());
    const broker = new RedisBroker({ client: plain, keyPrefix: "sharded", env: {}, logger });
    broker.bind({ codec });
    await broker.connect();
    cleanups.push(() => broker.disconnect());
    const queues = ["first", "second"]; // {first} and {second}: two slots
    const consumer = broker.consumer({ queues, consumerId: "c", logger });
    cleanups.push(() => consumer.close());
    expect(await consumer.fetch(1, AbortSignal.timeout(300))).toEqual([]); // refused, then one at a time
    expect(lines.map((line) => line.message)).toContainEqual(
      expect.stringMatching(/refuses one read over several queues' streams \(CROSSSLOT\); reading them one at a time/),
    );
    const bodies = new Map<string, string>();
    for (const queue of queues) {
      const task = encodeTask(codec);
      await broker.publish(queue, { id: task.id, body: task.body });
      bodies.set(task.body, queue);
    }
    const got = await fetchN(consumer, 2);
    expect(got.map((d) => [bodies.get(d.body), d.queue])).toEqual(
      expect.arrayContaining([
        ["first", "first"],
        ["second", "second"],
      ]),
    );
    for (const d of got) await d.ack();
    expect(lines.filter((line) => line.level === "warn" || line.level === "error")).toEqual([]);
  });

  it("the result backend refuses it at connect: its calls over several records' keys would each fail", async () => {
    const port = await shardedServer();
    const plain = new Redis(port, "127.0.0.1");
    cleanups.push(async () => plain.disconnect());
    const backend = new RedisBackend({ client: plain, keyPrefix: "sharded", env: {} });
    cleanups.push(() => backend.disconnect());
    // before, it connected, and every batch of records (and every ack with its record) failed
    await expect(backend.connect()).rejects.toThrow(ConfigurationError);
    await expect(backend.connect()).rejects.toThrow(/needs a single Redis node: .* several hash slots \(CROSSSLOT/);
    expect(plain.status).toBe("ready"); // a client given is left open
  });
});

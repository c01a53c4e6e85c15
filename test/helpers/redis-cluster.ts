/**
 * A throwaway Redis Cluster for tests: three master nodes (no replicas) started by the test on
 * free loopback ports, each in its own temporary directory, joined with
 * `redis-cli --cluster create`. Needs `redis-server` and `redis-cli` on PATH (a missing binary
 * throws: with CI=true the file fails rather than skips).
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { Cluster, Redis } from "ioredis";
import { canConnect } from "./services.js";

const run = promisify(execFile);

/** A running test cluster. */
export interface TestRedisCluster {
  /** The nodes' ports. */
  readonly ports: readonly number[];
  /** A new Cluster client of it (the caller disconnects it). */
  client(): Cluster;
  /** Deletes every key under `prefix:` on every node. */
  deletePrefix(prefix: string): Promise<void>;
  /** Kills the nodes and removes their directories. */
  stop(): Promise<void>;
}

function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

/**
 * A port for a cluster node: a node also listens on its port + 10000 (the cluster bus), so
 * both must be free, and the port at most 55535. Random in 10000..22000 (bus 20000..32000),
 * below the range Linux hands out for outgoing connections (32768 and up by default).
 */
async function freeNodePort(taken: readonly number[]): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = 10_000 + Math.floor(Math.random() * 12_000);
    const clashes = (p: number) =>
      [p, p + 10_000].some((q) => Math.abs(q - port) < 2 || Math.abs(q - port - 10_000) < 2);
    if (taken.some(clashes)) continue;
    if ((await isFree(port)) && (await isFree(port + 10_000))) return port;
  }
  throw new Error("test Redis Cluster: no free port pair (port, port + 10000) found");
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`test Redis Cluster: ${what} not within ${timeoutMs} ms`);
    await pause(50);
  }
}

/** Starts a three-node cluster and waits until every node reports `cluster_state:ok`. */
export async function startRedisCluster(): Promise<TestRedisCluster> {
  const ports: number[] = [];
  const dirs: string[] = [];
  const nodes: ChildProcess[] = [];
  const stop = async () => {
    await Promise.all(
      nodes.map(async (node) => {
        if (node.exitCode !== null || node.signalCode !== null) return;
        const exited = new Promise((resolve) => node.once("exit", resolve));
        node.kill("SIGKILL");
        await exited;
      }),
    );
    await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
  };
  try {
    for (let i = 0; i < 3; i++) {
      const port = await freeNodePort(ports);
      const dir = await mkdtemp(join(tmpdir(), "chicory-cluster-"));
      ports.push(port);
      dirs.push(dir);
      const node = spawn(
        "redis-server",
        [
          ...["--port", String(port), "--bind", "127.0.0.1", "--dir", dir],
          ...["--cluster-enabled", "yes", "--cluster-config-file", join(dir, "nodes.conf")],
          ...["--save", "", "--appendonly", "no", "--daemonize", "no"],
        ],
        { stdio: "ignore" },
      );
      node.once("error", () => undefined); // a missing binary: the port never opens
      nodes.push(node);
    }
    for (const port of ports) await waitFor(`node on port ${port} listening`, () => canConnect(port));
    await run("redis-cli", [
      "--cluster",
      "create",
      ...ports.map((port) => `127.0.0.1:${port}`),
      "--cluster-replicas",
      "0",
      "--cluster-yes",
    ]);
    for (const port of ports) {
      await waitFor(`node on port ${port} ready`, async () => {
        const node = new Redis(port, "127.0.0.1", { lazyConnect: true, maxRetriesPerRequest: 0 });
        try {
          return /cluster_state:ok/.test(String(await node.call("CLUSTER", "INFO")));
        } catch {
          return false;
        } finally {
          node.disconnect();
        }
      });
    }
  } catch (error) {
    await stop();
    throw error;
  }
  const client = () => new Cluster(ports.map((port) => ({ host: "127.0.0.1", port })));
  return {
    ports,
    client,
    stop,
    async deletePrefix(prefix: string): Promise<void> {
      for (const port of ports) {
        const node = new Redis(port, "127.0.0.1", { maxRetriesPerRequest: 0 });
        try {
          let cursor = "0";
          do {
            const [next, keys] = await node.scan(cursor, "MATCH", `${prefix}:*`, "COUNT", 1000);
            cursor = next;
            // one DEL per key: keys of different slots cannot share a command
            for (const key of keys) await node.del(key);
          } while (cursor !== "0");
        } finally {
          node.disconnect();
        }
      }
    },
  };
}

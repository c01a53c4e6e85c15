// Shared configuration, workloads, statistics, process helpers and clean-up for the RabbitMQ
// benchmarks (bench/rabbitmq/ only; of bench/lib, which belongs to the Redis bench, only the
// workloads are shared).
// Workloads and method follow ../shared/bench-peers/lib/common.mjs.
import { fork } from "node:child_process";
import { randomBytes } from "node:crypto";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(HERE, "..", "..");

export const AMQP_URL = process.env.AMQP_URL || "amqp://guest:guest@127.0.0.1:5672";
/** Result backend of the Chicory runs: logical DB 3 only (refuses 0). */
export const REDIS_DB = Number(process.env.BENCH_RMQ_REDIS_DB || 3);
if (REDIS_DB === 0) throw new Error("BENCH_RMQ_REDIS_DB=0 refused: the benchmarks never touch DB 0");
export const REDIS_URL = `redis://${process.env.REDIS_HOST || "127.0.0.1"}:${process.env.REDIS_PORT || 6379}/${REDIS_DB}`;
export const CONCURRENCY = Number(process.env.CONCURRENCY || 32);

/** A fresh, recognisable prefix for queues and keys of one benchmark run. */
export function runPrefix() {
  return `benchrmq-${randomBytes(4).toString("hex")}`;
}

/** The three workloads of Chicory's benchmark (one definition for every benchmark). */
export { runWorkload } from "../lib/common.mjs";

export const now = () => performance.now();

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  if (!n) return Number.NaN;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/** Rejects when `p` does not settle within `ms`, so every benchmark stops by itself. */
export function withTimeout(p, ms, what) {
  let t;
  return Promise.race([
    p,
    new Promise((_, rej) => {
      t = setTimeout(() => rej(new Error(`timeout after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

/** Hard wall-clock cap for a process; `onExpire` (sync, best effort) runs first. */
export function hardDeadline(ms, label, onExpire = () => {}) {
  setTimeout(() => {
    console.error(`[${label}] hard deadline of ${ms} ms reached, exiting`);
    try {
      onExpire();
    } catch {}
    process.exit(3);
  }, ms).unref();
}

export function parseArgs(argv = process.argv.slice(2)) {
  const out = {};
  for (const a of argv) {
    const m = /^--([^=]+)(?:=(.*))?$/.exec(a);
    if (m) out[m[1]] = m[2] === undefined ? true : m[2];
  }
  return out;
}

/** Every child process this process forked and that has not exited yet (killed by PID on exit). */
const children = new Set();
export function killChildren() {
  for (const c of children) {
    try {
      process.kill(c.pid, "SIGKILL");
    } catch {}
  }
}

/**
 * Forks `count` worker processes (`worker.mjs <system>`); resolves when each reported ready.
 * `stop()` asks each to stop over IPC and SIGKILLs (by its own PID) one that is still alive after 8 s.
 */
export async function startWorkers(system, count, env = {}, { nodeArgs = [], onMessage = () => {} } = {}) {
  const procs = [];
  for (let i = 0; i < count; i++) {
    const child = fork(path.join(HERE, "worker.mjs"), [system], {
      env: { ...process.env, ...env, WORKER_INDEX: String(i) },
      execArgv: nodeArgs,
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    children.add(child);
    child.once("exit", () => children.delete(child));
    child.on("message", (m) => {
      if (m !== "ready") onMessage(m, i);
    });
    procs.push(child);
  }
  const stop = () =>
    Promise.all(
      procs.map(
        (c) =>
          new Promise((res) => {
            if (c.exitCode !== null || c.signalCode !== null) return res();
            const t = setTimeout(() => {
              try {
                process.kill(c.pid, "SIGKILL");
              } catch {}
            }, 8000);
            c.once("exit", () => {
              clearTimeout(t);
              res();
            });
            try {
              c.send("stop");
            } catch {
              try {
                process.kill(c.pid, "SIGKILL");
              } catch {}
            }
          }),
      ),
    );
  try {
    await withTimeout(
      Promise.all(
        procs.map(
          (c) =>
            new Promise((res, rej) => {
              c.on("message", (m) => m === "ready" && res());
              c.once("exit", (code) => rej(new Error(`worker exited early (${code})`)));
            }),
        ),
      ),
      30000,
      `${system} workers ready`,
    );
  } catch (e) {
    await stop();
    throw e;
  }
  /** Total user+system CPU microseconds used so far by all the worker processes. */
  const cpu = () =>
    withTimeout(
      Promise.all(
        procs.map(
          (c) =>
            new Promise((res) => {
              const on = (m) => {
                if (m?.type !== "cpu") return;
                c.off("message", on);
                res(m.user + m.system);
              };
              c.on("message", on);
              c.send("cpu");
            }),
        ),
      ).then((xs) => xs.reduce((x, y) => x + y, 0)),
      5000,
      "worker cpu",
    );
  return { pids: procs.map((p) => p.pid), stop, cpu };
}

/** Deletes RabbitMQ queues by name (missing ones are fine). */
export async function deleteQueues(names) {
  if (!names.length) return;
  const amqp = (await import("amqplib")).default;
  const conn = await amqp.connect(AMQP_URL);
  try {
    for (const name of names) {
      const ch = await conn.createChannel();
      ch.on("error", () => {});
      try {
        await ch.deleteQueue(name);
        await ch.close();
      } catch {}
    }
  } finally {
    await conn.close().catch(() => {});
  }
}

/** Names of RabbitMQ queues starting with `prefix`, via rabbitmqctl (null when unavailable). */
export async function listQueues(prefix) {
  const { execFile } = await import("node:child_process");
  return new Promise((resolve) => {
    execFile("rabbitmqctl", ["list_queues", "-q", "--no-table-headers", "name"], { timeout: 30000 }, (err, stdout) => {
      if (err) return resolve(null);
      resolve(
        stdout
          .split("\n")
          .map((s) => s.trim())
          .filter((s) => s.startsWith(prefix)),
      );
    });
  });
}

/** Deletes every Redis key of DB REDIS_DB starting with `prefix` (SCAN + UNLINK); returns the count. */
export async function deleteRedisKeys(prefix) {
  const { Redis } = await import("ioredis");
  const r = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 2 });
  await r.connect();
  let n = 0;
  try {
    let cursor = "0";
    do {
      const [next, keys] = await r.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 1000);
      cursor = next;
      if (keys.length) n += await r.unlink(...keys);
    } while (cursor !== "0");
  } finally {
    r.disconnect();
  }
  return n;
}

/**
 * Waits until RabbitMQ accepts a connection (other work on this machine may restart it, e.g.
 * reliability tests with `rabbitmqctl stop_app`); polls every second, gives up after `maxMs`.
 */
export async function waitForRabbit(maxMs = 120000) {
  const amqp = (await import("amqplib")).default;
  const deadline = Date.now() + maxMs;
  let waited = false;
  for (;;) {
    try {
      const conn = await amqp.connect(AMQP_URL);
      await conn.close().catch(() => {});
      if (waited) console.log("RabbitMQ is back");
      return;
    } catch (e) {
      if (Date.now() > deadline) throw new Error(`RabbitMQ unreachable for ${maxMs} ms: ${e.message}`);
      if (!waited) console.log(`RabbitMQ unreachable (${e.message}); waiting`);
      waited = true;
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}

/**
 * An idle connection that notices a RabbitMQ restart or a dropped connection (`lost` turns
 * true), so a batch measured across a restart is discarded instead of reported.
 */
export async function watchRabbit() {
  const amqp = (await import("amqplib")).default;
  const conn = await amqp.connect(AMQP_URL);
  const state = {
    lost: false,
    async close() {
      closing = true;
      await conn.close().catch(() => {});
    },
  };
  let closing = false;
  conn.on("error", () => {});
  conn.on("close", () => {
    if (!closing) state.lost = true;
  });
  return state;
}

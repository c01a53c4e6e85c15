// Shared configuration, workloads, statistics and process helpers of the benchmarks.
// Adapted from ../shared/bench-peers/lib/common.mjs.
import { fork } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** The bench/ folder. */
export const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));

export const REDIS = {
  host: process.env.REDIS_HOST || "127.0.0.1",
  port: Number(process.env.REDIS_PORT || 6379),
  db: Number(process.env.REDIS_DB || 2), // benchmarks only ever touch this logical DB
};
if (REDIS.db === 0) throw new Error("refusing to benchmark on Redis DB 0; set REDIS_DB to a scratch database");
export const REDIS_URL = `redis://${REDIS.host}:${REDIS.port}/${REDIS.db}`;
export const CONCURRENCY = Number(process.env.CONCURRENCY || 32);

/**
 * `cpu_bound`: 10,000 iterations of x = (x * 31 + 17) % 1000000007.
 *
 * `async` so that V8 never inlines it into a driver's handler: inlined, the same loop ran up
 * to 25 % slower depending on the caller (2026-11-30: 138 µs per call on its own, 139-144 µs
 * in the bare loop's worker, 173-182 µs in Chicory's; see README "Method"). Every system
 * (Chicory, BullMQ, the bare loop) thus runs the same compiled loop, and the workload measures
 * the queue, not the inliner. The loop runs to completion before the call returns (there is no
 * `await` in it).
 */
async function cpuBound(v) {
  let x = v;
  for (let i = 0; i < 10000; i++) x = (x * 31 + 17) % 1000000007;
  return x;
}

/** The three workloads of Chicory's benchmark (plus `stamp`, the worker's clock: latency-split.mjs). */
export function runWorkload(w, v) {
  switch (w) {
    case "increment":
      return v + 1;
    case "cpu_bound":
      return cpuBound(v);
    case "stamp":
      return performance.timeOrigin + performance.now();
    case "io_bound":
      return new Promise((r) => setTimeout(() => r(v), 10));
    default:
      throw new Error(`unknown workload ${w}`);
  }
}

export const now = () => performance.now();
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  if (!n) return Number.NaN;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/** The `--order` of the parsed arguments `a`: "rotate" (default) or "fixed". */
export function orderArg(a) {
  const order = a.order || "rotate";
  if (order !== "rotate" && order !== "fixed") throw new Error(`--order must be rotate or fixed, not ${order}`);
  return order;
}

/**
 * The systems in the order rep `rep` (1-based) runs them: with `order` "rotate", the list
 * rotated by rep - 1, so that no system always runs first (A/B runs had seemed to favour a later
 * place; bench/PROFILE.md) and, with as many reps as systems, each takes each place once; with
 * "fixed", the list's order.
 */
export function orderFor(systems, rep, order) {
  if (order === "fixed") return systems;
  const k = (rep - 1) % systems.length;
  return [...systems.slice(k), ...systems.slice(0, k)];
}

export function percentile(xs, p) {
  const s = [...xs].sort((a, b) => a - b);
  if (!s.length) return Number.NaN;
  const idx = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[idx];
}

/** Rejects if a promise does not settle in time, so every benchmark stops by itself. */
export function withTimeout(p, ms, what) {
  let t;
  return Promise.race([
    p,
    new Promise((_, rej) => {
      t = setTimeout(() => rej(new Error(`timeout after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

const children = new Set();

/** Hard wall-clock cap for a whole script; kills the processes it forked first. */
export function hardDeadline(ms, label) {
  setTimeout(() => {
    console.error(`[${label}] hard deadline of ${ms} ms reached, exiting`);
    killChildren();
    process.exit(3);
  }, ms).unref();
}

/** SIGKILLs every still-running child forked by this process (by its own pid). */
export function killChildren() {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) {
      try {
        process.kill(c.pid, "SIGKILL");
      } catch {}
    }
  }
}
process.once("SIGINT", () => {
  killChildren();
  process.exit(130);
});
process.once("SIGTERM", () => {
  killChildren();
  process.exit(143);
});

export function parseArgs(argv = process.argv.slice(2)) {
  const out = {};
  for (const a of argv) {
    const m = /^--([^=]+)(?:=(.*))?$/.exec(a);
    if (m) out[m[1]] = m[2] === undefined ? true : m[2];
  }
  return out;
}

/** Resident set size of a process in MiB (Linux /proc). */
export function rssMiB(pid) {
  const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : Number.NaN;
}

/** CPU seconds (user + sys) of a process, from /proc (Linux; clock ticks of 10 ms, USER_HZ = 100). */
export function procCpuSeconds(pid) {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime
}

/** Writes a results file (creating its folder). */
export function writeJson(file, data) {
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(data, null, 1));
}

/**
 * Forks `count` worker processes (bench/worker.mjs) for a driver; resolves once every one has
 * reported ready. `nodeArgs` (space separated; default `BENCH_WORKER_NODE_ARGS`) adds node
 * flags, e.g. --cpu-prof.
 */
export async function startWorkers(driver, count, env = {}, nodeArgs = process.env.BENCH_WORKER_NODE_ARGS || "") {
  const procs = [];
  const execArgv = nodeArgs.split(" ").filter(Boolean);
  for (let i = 0; i < count; i++) {
    const child = fork(path.join(ROOT, "worker.mjs"), [driver], {
      env: { ...process.env, ...env, WORKER_INDEX: String(i) },
      execArgv,
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    children.add(child);
    child.once("exit", () => children.delete(child));
    procs.push(child);
  }
  try {
    await withTimeout(
      Promise.all(
        procs.map(
          (c) =>
            new Promise((res, rej) => {
              c.once("message", (m) => (m === "ready" ? res() : rej(new Error(String(m)))));
              c.once("exit", (code) => rej(new Error(`worker exited early (${code})`)));
            }),
        ),
      ),
      30000,
      `${driver} workers ready`,
    );
  } catch (e) {
    killChildren();
    throw e;
  }
  return {
    pids: procs.map((p) => p.pid),
    stop() {
      return Promise.all(
        procs.map(
          (c) =>
            new Promise((res) => {
              if (c.exitCode !== null || c.signalCode !== null) return res();
              const t = setTimeout(() => {
                try {
                  process.kill(c.pid, "SIGKILL"); // only ever the exact child we forked
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
    },
  };
}

/**
 * Calls `add(i)` for i = 0..n-1, at most `wave` at a time, awaiting each wave (the memory
 * benchmark's enqueue of many jobs without holding them all in flight).
 */
export async function inWaves(n, add, wave = 1000) {
  for (let i = 0; i < n; i += wave) {
    const k = Math.min(wave, n - i);
    await Promise.all(Array.from({ length: k }, (_, j) => add(i + j)));
  }
}

/** Worker-side helper: a bounded-concurrency executor with a local buffer (bare driver). */
export function makeExecutor(concurrency, onDone) {
  const queue = [];
  let inflight = 0;
  let waiters = [];
  const pump = () => {
    while (inflight < concurrency && queue.length) {
      const item = queue.shift();
      inflight++;
      Promise.resolve()
        .then(() => runWorkload(item.w, item.v))
        .then(
          (r) => onDone(item, r, null),
          (e) => onDone(item, null, e),
        )
        .finally(() => {
          inflight--;
          pump();
          const ws = waiters;
          waiters = [];
          for (const f of ws) f();
        });
    }
  };
  return {
    push(item) {
      queue.push(item);
      pump();
    },
    get load() {
      return queue.length + inflight;
    },
    waitForRoom() {
      return new Promise((r) => waiters.push(r));
    },
  };
}

/**
 * Load tests (RELIABILITY §3.7 L1/L3): real `chicory worker` processes (the built CLI) running
 * load-app.mjs, their RSS, and small statistics and reports. Everything started here is killed
 * by PID in the tests' `finally`.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createWriteStream, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { setTimeout as sleepMs } from "node:timers/promises";

/** Repository root (the workers run there). */
export const ROOT = resolve(import.meta.dirname, "../../..");
/** The built CLI. */
export const CLI = join(ROOT, "dist/cli/main.js");
/** The workers' app module (relative to ROOT). */
export const LOAD_APP = "test/reliability/load/load-app.mjs";
/** Full tier? */
export const FULL = process.env.CHICORY_RELIABILITY_FULL === "1";

/** A running worker process. */
export interface WorkerProcess {
  readonly name: string;
  readonly pid: number;
  readonly child: ChildProcess;
  /** Output lines at level >= 50 (error, fatal), mentioning an uncaught error, or not JSON after the start. */
  readonly errors: string[];
  /** Count of warn (level 40) lines. */
  warnings: number;
  /** `processed` of the "worker stopped" line, once logged. */
  processed: number | null;
  /** `[epoch ms, heapUsed MiB]` after a full GC, from the app's "test heap" lines (see load-app.mjs). */
  readonly heap: Array<[number, number]>;
  /** Exit code/signal once exited. */
  exit: { code: number | null; signal: NodeJS.Signals | null } | null;
  readonly exited: Promise<void>;
}

/** Environment of the children: ours minus every CHICORY_* variable, plus `env`. */
function childEnv(env: Record<string, string>): NodeJS.ProcessEnv {
  const base: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("CHICORY_")) base[k] = v;
  return { ...base, CHICORY_LOG_FORMAT: "json", ...env };
}

/**
 * Starts `node dist/cli/main.js worker <appModule> -c <concurrency>` (default load-app.mjs) and
 * resolves once it logged "worker started". stderr goes to `<logDir>/<name>.log`; only error lines are kept in memory.
 */
export async function startWorker(
  name: string,
  concurrency: number,
  env: Record<string, string>,
  logDir: string,
  extraArgs: readonly string[] = [],
  nodeArgs: readonly string[] = [],
  appModule: string = LOAD_APP,
): Promise<WorkerProcess> {
  const args = [
    ...nodeArgs,
    CLI,
    "worker",
    appModule,
    "-c",
    String(concurrency),
    "--heartbeat-interval",
    "1",
    "--heartbeat-ttl",
    "3",
    "--shutdown-timeout",
    "10",
    ...extraArgs,
  ];
  const child = spawn(process.execPath, args, { cwd: ROOT, env: childEnv(env), stdio: ["ignore", "pipe", "pipe"] });
  if (child.pid === undefined) throw new Error(`could not start ${name}`);
  const log = createWriteStream(join(logDir, `${name}-${child.pid}.log`));
  let ready!: () => void;
  const started = new Promise<void>((r) => {
    ready = r;
  });
  const handle: WorkerProcess = {
    name,
    pid: child.pid,
    child,
    errors: [],
    heap: [],
    warnings: 0,
    processed: null,
    exit: null,
    exited: new Promise<void>((r) => {
      child.on("exit", (code, signal) => {
        handle.exit = { code, signal };
        log.end();
        r();
      });
    }),
  };
  let partial = "";
  let isStarted = false;
  const onData = (chunk: Buffer) => {
    log.write(chunk);
    partial += chunk.toString();
    const lines = partial.split("\n");
    partial = lines.pop() ?? "";
    for (const line of lines) {
      if (line.includes('"msg":"worker started"')) {
        isStarted = true;
        ready();
      }
      if (line.includes('"msg":"test heap"')) {
        const m = /"at":(\d+),"heapUsed":(\d+)/.exec(line);
        if (m) handle.heap.push([Number(m[1]), Number(m[2]) / 1024 / 1024]);
        continue;
      }
      if (line.includes('"msg":"worker stopped"')) handle.processed = Number(/"processed":(\d+)/.exec(line)?.[1]);
      const level = /"level":(\d+)/.exec(line)?.[1];
      if (level === "40") handle.warnings++;
      // After the banner, every line is JSON: anything else (a Node warning, the CLI's report of
      // an unhandled rejection) counts as an error line too.
      const stray = isStarted && line.trim() !== "" && !line.startsWith("{");
      if (stray || (level !== undefined && Number(level) >= 50) || /uncaught|unhandled/i.test(line)) {
        if (handle.errors.length < 20) handle.errors.push(line.slice(0, 500));
      }
    }
  };
  child.stderr?.on("data", onData);
  child.stdout?.on("data", onData);
  const timeout = sleepMs(30_000, undefined, { ref: false }).then(() => "timeout" as const);
  const outcome = await Promise.race([started.then(() => "ready" as const), handle.exited.then(() => "exit"), timeout]);
  if (outcome !== "ready") {
    child.kill("SIGKILL");
    throw new Error(`${name} did not start (${outcome}); see ${logDir}`);
  }
  return handle;
}

/** SIGTERM, then waits for the exit (SIGKILL after `graceMs`). */
export async function stopWorker(worker: WorkerProcess, graceMs = 20_000): Promise<void> {
  if (worker.exit) return;
  worker.child.kill("SIGTERM");
  const done = await Promise.race([
    worker.exited.then(() => true),
    sleepMs(graceMs, undefined, { ref: false }).then(() => false),
  ]);
  if (!done) {
    worker.child.kill("SIGKILL");
    await worker.exited;
  }
}

/** SIGKILLs every worker still running (the tests' `finally`). */
export async function killWorkers(workers: readonly WorkerProcess[]): Promise<void> {
  for (const w of workers) if (!w.exit) w.child.kill("SIGKILL");
  await Promise.race([Promise.all(workers.map((w) => w.exited)), sleepMs(5000, undefined, { ref: false })]);
}

/** VmRSS of `pid` in MiB, or null when the process is gone. */
export function rssMiB(pid: number): number | null {
  try {
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) / 1024 : null;
  } catch {
    return null;
  }
}

/** The `q` quantile (0..1) of `sorted` (ascending), nearest rank. */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank] as number;
}

/** Least-squares slope of y over x. */
export function slope(points: ReadonlyArray<readonly [number, number]>): number {
  const n = points.length;
  if (n < 2) return 0;
  let sx = 0;
  let sy = 0;
  for (const [x, y] of points) {
    sx += x;
    sy += y;
  }
  const mx = sx / n;
  const my = sy / n;
  let num = 0;
  let den = 0;
  for (const [x, y] of points) {
    num += (x - mx) * (y - my);
    den += (x - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

/** Rounds for reports. */
export function round(value: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

/** Prints the figures and writes them to `.tmp/reliability-load/<test>.json` (git-ignored). */
export function writeReport(test: string, figures: Record<string, unknown>): void {
  const dir = join(ROOT, ".tmp/reliability-load");
  mkdirSync(dir, { recursive: true });
  const body = { test, at: new Date().toISOString(), node: process.version, full: FULL, ...figures };
  writeFileSync(join(dir, `${test}${FULL ? "-full" : ""}.json`), `${JSON.stringify(body, null, 2)}\n`);
  console.log(`[reliability] ${test} ${JSON.stringify(body)}`);
}

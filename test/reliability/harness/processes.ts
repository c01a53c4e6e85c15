/**
 * Child processes of the reliability harness: real `chicory worker` processes (the BUILT CLI,
 * dist/cli/main.js) and helper scripts. Every child is recorded (in memory and in a pidfile of
 * the sandbox) and killed by PID in {@link ProcessGroup.killAll}, which the tests call in
 * `finally`. stderr is kept in memory (to await log lines) and copied to a log file.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { appendFileSync, createWriteStream, existsSync, statSync, type WriteStream } from "node:fs";
import { join, resolve } from "node:path";

/**
 * Where the worker processes run from: the repository root, or `CHICORY_RELIABILITY_ROOT` (a copy
 * of the repository with a patched dist/, to check a fix before it lands).
 */
export const ROOT = process.env.CHICORY_RELIABILITY_ROOT ?? resolve(import.meta.dirname, "../../..");
/** The built CLI. */
export const CLI = join(ROOT, "dist/cli/main.js");
/** The app module the workers load (relative to ROOT). */
export const LEDGER_APP = "test/reliability/fixtures/ledger-app.mjs";
/** The producer script. */
export const PRODUCER_SCRIPT = join(ROOT, "test/reliability/fixtures/producer.mjs");

/** How a child ended. */
export interface ExitInfo {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  /** Epoch ms of the exit. */
  readonly at: number;
}

/** A running child. */
export interface ProcessHandle {
  readonly name: string;
  readonly pid: number;
  readonly child: ChildProcess;
  /** Epoch ms of the spawn. */
  readonly startedAt: number;
  /** Everything written to stderr / stdout so far. */
  readonly output: { stderr: string; stdout: string };
  /** Resolves at exit. */
  readonly exited: Promise<ExitInfo>;
  /** Null while running. */
  exit: ExitInfo | null;
  /** Resolves when `pattern` appears in stderr; rejects on timeout or exit. */
  waitForStderr(pattern: RegExp, timeoutMs?: number): Promise<void>;
  /** Sends `signal` by PID (no-op after exit). */
  signal(signal: NodeJS.Signals): void;
}

/** Throws when the CLI is not built. */
export function requireBuild(): void {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` first (npm test does)`);
  if (statSync(CLI).size === 0) throw new Error(`${CLI} is empty: run \`npm run build\``);
}

/** Spawns and tracks children; `killAll()` ends every one still alive (SIGCONT + SIGKILL by PID). */
export class ProcessGroup {
  readonly #handles: ProcessHandle[] = [];
  readonly #logDir: string;
  readonly #pidFile: string;
  readonly #logs: WriteStream[] = [];

  constructor(logDir: string) {
    this.#logDir = logDir;
    this.#pidFile = join(logDir, "pids.txt");
  }

  /** Every child started, in order. */
  get all(): readonly ProcessHandle[] {
    return this.#handles;
  }

  /** Children still running. */
  get alive(): ProcessHandle[] {
    return this.#handles.filter((h) => h.exit === null);
  }

  /** Starts `node <args>` in ROOT with `env` (added to this process's env). */
  spawnNode(name: string, args: readonly string[], env: Record<string, string>): ProcessHandle {
    const child = spawn(process.execPath, [...args], {
      cwd: ROOT,
      env: { ...process.env, CHICORY_LOG_FORMAT: "json", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    if (child.pid === undefined) throw new Error(`could not start ${name}`);
    const pid = child.pid;
    appendFileSync(this.#pidFile, `${pid} ${name}\n`);
    const log = createWriteStream(join(this.#logDir, `${name}-${pid}.log`));
    this.#logs.push(log);
    const output = { stderr: "", stdout: "" };
    const listeners = new Set<() => void>();
    child.stderr?.on("data", (chunk: Buffer) => {
      output.stderr += chunk.toString();
      log.write(chunk);
      for (const listener of [...listeners]) listener();
    });
    child.stdout?.on("data", (chunk: Buffer) => {
      output.stdout += chunk.toString();
      log.write(chunk);
    });
    const handle: ProcessHandle = {
      name,
      pid,
      child,
      startedAt: Date.now(),
      output,
      exit: null,
      exited: new Promise<ExitInfo>((resolveExit) => {
        child.on("exit", (code, signal) => {
          handle.exit = { code, signal, at: Date.now() };
          resolveExit(handle.exit);
          for (const listener of [...listeners]) listener();
        });
      }),
      waitForStderr: (pattern, timeoutMs = 20_000) =>
        new Promise<void>((resolveWait, reject) => {
          const timer = setTimeout(() => {
            cleanup();
            reject(
              new Error(`${name} (pid ${pid}): timed out waiting for ${pattern}; stderr tail:\n${tail(output.stderr)}`),
            );
          }, timeoutMs);
          const check = () => {
            if (pattern.test(output.stderr)) {
              cleanup();
              resolveWait();
            } else if (handle.exit !== null) {
              cleanup();
              reject(
                new Error(
                  `${name} (pid ${pid}) exited while waiting for ${pattern}; stderr tail:\n${tail(output.stderr)}`,
                ),
              );
            }
          };
          const cleanup = () => {
            clearTimeout(timer);
            listeners.delete(check);
          };
          listeners.add(check);
          check();
        }),
      signal: (signal) => {
        if (handle.exit !== null) return;
        try {
          process.kill(pid, signal);
        } catch {
          // already gone
        }
      },
    };
    this.#handles.push(handle);
    return handle;
  }

  /** Starts `chicory worker <app> -c <concurrency> ...` and waits until it logs "worker started". */
  async startWorker(options: WorkerSpawnOptions): Promise<ProcessHandle> {
    const args = [
      CLI,
      "worker",
      options.app ?? LEDGER_APP,
      "-c",
      String(options.concurrency),
      "--heartbeat-interval",
      "1",
      "--heartbeat-ttl",
      "3",
      "--shutdown-timeout",
      String(options.shutdownTimeoutSeconds ?? 10),
      "--log-level",
      "INFO",
      ...(options.extraArgs ?? []),
    ];
    const handle = this.spawnNode(options.name, args, options.env);
    await handle.waitForStderr(/"msg":"worker started"/, options.readyTimeoutMs ?? 20_000);
    return handle;
  }

  /** SIGKILLs (after SIGCONT, for stopped ones) every child still alive and waits for their exit. */
  async killAll(): Promise<void> {
    const alive = this.alive;
    for (const handle of alive) {
      handle.signal("SIGCONT");
      handle.signal("SIGKILL");
    }
    await Promise.race([Promise.all(alive.map((h) => h.exited)), new Promise((r) => setTimeout(r, 5000))]);
    await Promise.all(this.#logs.map((log) => new Promise<void>((r) => log.end(() => r()))));
  }

  /** The stderr tails of every child (for failure messages). */
  describe(): string {
    return this.#handles
      .map((h) => `--- ${h.name} pid ${h.pid} exit ${JSON.stringify(h.exit)}\n${tail(h.output.stderr, 1500)}`)
      .join("\n");
  }
}

/** Options of {@link ProcessGroup.startWorker}. */
export interface WorkerSpawnOptions {
  readonly name: string;
  readonly concurrency: number;
  /** Broker/backend/ledger variables. */
  readonly env: Record<string, string>;
  readonly shutdownTimeoutSeconds?: number;
  readonly extraArgs?: readonly string[];
  readonly readyTimeoutMs?: number;
  /** App module relative to ROOT (default {@link LEDGER_APP}). */
  readonly app?: string;
}

function tail(text: string, chars = 3000): string {
  return text.length > chars ? `…${text.slice(-chars)}` : text;
}

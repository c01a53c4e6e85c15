/**
 * `chicory worker -w N`: runs N worker processes (this CLI, forked with the same options),
 * restarts one that crashes (with a backoff and a cap on restarts per minute), forwards
 * SIGINT/SIGTERM for a graceful stop and exits 0 once every child stopped cleanly.
 *
 * Children run in their own process group, so a Ctrl-C in the terminal reaches them once,
 * through the supervisor, instead of twice (a second signal makes a worker exit at once).
 * A child whose supervisor disappears (IPC channel closed) stops gracefully by itself.
 * @module
 */
import { type ChildProcess, fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { Logger } from "../core/logger.js";
import { timerDelay } from "../core/sleep.js";
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE } from "./output.js";

/** Environment variable set in supervised children. */
export const SUPERVISED_ENV = "CHICORY_CLI_SUPERVISED";

/** Restarts allowed per rolling minute (over all children) before the supervisor gives up. */
export const MAX_RESTARTS_PER_MINUTE = 10;
const FIRST_BACKOFF_MS = 250;
const MAX_BACKOFF_MS = 10_000;
/** Extra time, after the workers' shutdown timeout, before stragglers are killed. */
const KILL_GRACE_MS = 10_000;

/** Options of {@link runSupervisor}. */
export interface SupervisorOptions {
  /** Number of worker processes. */
  readonly count: number;
  /** CLI arguments of each child (`worker <module> ...`, without `--workers`). */
  readonly args: readonly string[];
  /** The workers' shutdown timeout, in seconds. */
  readonly shutdownTimeoutSeconds: number;
  /** Where the supervisor logs. */
  readonly logger: Logger;
}

interface Child {
  readonly index: number;
  readonly process: ChildProcess;
  isReady: boolean;
}

/** Runs the supervisor; resolves to the exit code. */
export function runSupervisor(options: SupervisorOptions): Promise<number> {
  return new Supervisor(options).run();
}

class Supervisor {
  readonly #options: SupervisorOptions;
  readonly #script = fileURLToPath(new URL("./main.js", import.meta.url));
  readonly #children = new Map<number, Child>();
  readonly #restartTimers = new Set<NodeJS.Timeout>();
  #restartTimes: number[] = [];
  #isStopping = false;
  #hasEverBeenReady = false;
  #exitCode = EXIT_OK;
  #signals = 0;
  /** The signal sent to the children to stop them, once stopping. */
  #stopSignal: NodeJS.Signals | undefined;
  #killTimer: NodeJS.Timeout | undefined;
  #finish: (code: number) => void = () => {};

  constructor(options: SupervisorOptions) {
    this.#options = options;
  }

  run(): Promise<number> {
    const done = new Promise<number>((resolve) => {
      this.#finish = resolve;
    });
    const onSignal = (signal: NodeJS.Signals) => this.#onSignal(signal);
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
    this.#options.logger.info({ processes: this.#options.count }, "supervisor starting worker processes");
    for (let index = 0; index < this.#options.count; index++) this.#spawn(index);
    return done.finally(() => {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
      clearTimeout(this.#killTimer);
    });
  }

  #spawn(index: number): void {
    const child = fork(this.#script, [...this.#options.args], {
      execArgv: process.execArgv,
      env: { ...process.env, [SUPERVISED_ENV]: "1", CHICORY_WORKER_INDEX: String(index) },
      stdio: ["ignore", "inherit", "inherit", "ipc"],
      detached: true,
    });
    const entry: Child = { index, process: child, isReady: false };
    this.#children.set(index, entry);
    child.on("message", (message: unknown) => {
      if (typeof message === "object" && message !== null && (message as { type?: unknown }).type === "ready") {
        entry.isReady = true;
        this.#hasEverBeenReady = true;
        this.#options.logger.info({ index, pid: child.pid }, "worker process ready");
      }
    });
    child.on("error", (error) => {
      this.#options.logger.error({ index, err: error.message }, "worker process error");
    });
    child.on("exit", (code, signal) => this.#onExit(entry, code, signal));
  }

  #onExit(child: Child, code: number | null, signal: NodeJS.Signals | null): void {
    this.#children.delete(child.index);
    const { logger } = this.#options;
    const fields = { index: child.index, pid: child.process.pid, code, signal };
    if (this.#isStopping) {
      // A child the stop signal reached before it was ready (its handlers not yet set) dies of
      // that signal: stopped as asked, not a failure.
      const diedOfStop = code === null && signal === this.#stopSignal && !child.isReady;
      if (code !== 0 && !diedOfStop) this.#exitCode = EXIT_FAILURE;
      logger.info(fields, "worker process stopped");
      this.#finishIfIdle();
      return;
    }
    if (code === 0) {
      // Stopped on request (a signal sent to the child itself): do not restart it.
      logger.warn(fields, "worker process exited cleanly; not restarting it");
      this.#finishIfIdle();
      return;
    }
    // A usage error before any child was ready is the command's or the config's: stop. Once
    // one ran, a child that cannot load the app met a changed environment (a deploy rewriting
    // files, modules being reinstalled): restarted like a crash, within the crash-loop limit.
    if (code === EXIT_USAGE && !this.#hasEverBeenReady) {
      logger.error(fields, "worker process reported a usage or configuration error; stopping");
      this.#stopAll("SIGTERM", EXIT_USAGE);
      return;
    }
    if (!child.isReady && !this.#hasEverBeenReady) {
      logger.error(fields, "worker process failed to start; stopping");
      this.#stopAll("SIGTERM", EXIT_FAILURE);
      return;
    }
    const now = Date.now();
    this.#restartTimes = this.#restartTimes.filter((t) => now - t < 60_000);
    if (this.#restartTimes.length >= MAX_RESTARTS_PER_MINUTE) {
      logger.error({ ...fields, restartsLastMinute: this.#restartTimes.length }, "too many crashes; stopping");
      this.#stopAll("SIGTERM", EXIT_FAILURE);
      return;
    }
    this.#restartTimes.push(now);
    const delayMs = Math.min(MAX_BACKOFF_MS, FIRST_BACKOFF_MS * 2 ** (this.#restartTimes.length - 1));
    logger.warn({ ...fields, restartInMs: delayMs }, "worker process crashed; restarting it");
    const timer = setTimeout(() => {
      this.#restartTimers.delete(timer);
      if (!this.#isStopping) this.#spawn(child.index);
    }, delayMs);
    this.#restartTimers.add(timer);
  }

  #onSignal(signal: NodeJS.Signals): void {
    this.#signals++;
    if (this.#signals === 1) {
      this.#options.logger.info({ signal }, "signal received: stopping worker processes gracefully");
      this.#stopAll(signal, EXIT_OK);
      return;
    }
    // A second signal: forward it too, which makes every worker exit at once.
    this.#options.logger.warn({ signal }, "second signal: stopping worker processes now");
    this.#exitCode = EXIT_FAILURE;
    for (const child of this.#children.values()) child.process.kill(signal);
  }

  #stopAll(signal: NodeJS.Signals, exitCode: number): void {
    if (exitCode !== EXIT_OK) this.#exitCode = exitCode;
    if (this.#isStopping) return;
    this.#isStopping = true;
    this.#stopSignal = signal;
    for (const timer of this.#restartTimers) clearTimeout(timer);
    this.#restartTimers.clear();
    for (const child of this.#children.values()) child.process.kill(signal);
    const graceMs = this.#options.shutdownTimeoutSeconds * 1000 + KILL_GRACE_MS;
    this.#killTimer = setTimeout(() => {
      for (const child of this.#children.values()) {
        this.#options.logger.error(
          { index: child.index, pid: child.process.pid },
          "worker process did not stop; killing it",
        );
        child.process.kill("SIGKILL");
      }
    }, timerDelay(graceMs)); // (a timeout past 24.8 days would fire at once)
    this.#killTimer.unref();
    this.#finishIfIdle();
  }

  #finishIfIdle(): void {
    if (this.#children.size > 0 || this.#restartTimers.size > 0) return;
    this.#finish(this.#exitCode);
  }
}

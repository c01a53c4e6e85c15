/**
 * Runs the BUILT `chicory` binary (dist/cli/main.js) as a subprocess. `npm test` builds first;
 * when running these files alone, run `npm run build` before (a missing build fails loudly, a
 * build older than the sources only warns).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const ROOT = resolve(import.meta.dirname, "../../..");
export const CLI = join(ROOT, "dist/cli/main.js");
export const FIXTURES = "test/fixtures";
/** TypeScript app importing src/ (loaded through tsx): module-loading tests. */
export const APP_TS = `${FIXTURES}/cli-app.ts`;
/** JavaScript app importing dist/ (fast to load): multi-process tests. */
export const APP_JS = `${FIXTURES}/cli-app.mjs`;

function newestMtime(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(path) : statSync(path).mtimeMs);
  }
  return newest;
}

/** Throws when the CLI is not built; warns when the build is older than src/. */
export function requireBuild(): void {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` first (npm test does)`);
  if (statSync(CLI).mtimeMs < newestMtime(join(ROOT, "src"))) {
    console.warn("dist/ is older than src/: the CLI tests run the last build (run `npm run build`)");
  }
}

/** Environment of a CLI subprocess: the test's env without CI noise, plus `extra`. */
export function cliEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, CHICORY_LOG_FORMAT: "json", ...extra };
  for (const key of Object.keys(env)) if (env[key] === undefined) delete env[key];
  return env;
}

/** Outcome of a finished CLI run. */
export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** A running CLI process. */
export interface CliProcess {
  readonly child: ChildProcess;
  readonly output: { stdout: string; stderr: string };
  /** Resolves when `pattern` appears in stderr (or rejects after `timeoutMs`). */
  waitForStderr(pattern: RegExp, timeoutMs?: number): Promise<void>;
  /** Resolves with the outcome once the process exited. */
  readonly exited: Promise<CliResult>;
}

/** Starts `chicory ...args` (in `ROOT` unless `cwd` is given). */
export function startCli(
  args: readonly string[],
  env: NodeJS.ProcessEnv = cliEnv(),
  cwd = ROOT,
  closeStdout = false,
): CliProcess {
  const child = spawn(process.execPath, [CLI, ...args], { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
  const output = { stdout: "", stderr: "" };
  const listeners = new Set<() => void>();
  // closed at once, as by a reader gone (`| head`): the CLI's writes fail with EPIPE
  if (closeStdout) child.stdout?.destroy();
  child.stdout?.on("data", (chunk: Buffer) => {
    output.stdout += chunk.toString();
  });
  child.stderr?.on("data", (chunk: Buffer) => {
    output.stderr += chunk.toString();
    for (const listener of listeners) listener();
  });
  const exited = new Promise<CliResult>((resolveExit) => {
    child.on("close", (code, signal) => resolveExit({ code, signal, ...output }));
  });
  const waitForStderr = (pattern: RegExp, timeoutMs = 15_000) =>
    new Promise<void>((resolveWait, reject) => {
      const check = () => {
        if (!pattern.test(output.stderr)) return;
        cleanup();
        resolveWait();
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`timed out waiting for ${pattern} in stderr:\n${output.stderr}`));
      }, timeoutMs);
      const onExit = () => {
        cleanup();
        reject(new Error(`process exited while waiting for ${pattern}; stderr:\n${output.stderr}`));
      };
      const cleanup = () => {
        clearTimeout(timer);
        listeners.delete(check);
        child.off("exit", onExit);
      };
      listeners.add(check);
      child.once("exit", onExit);
      check();
    });
  return { child, output, waitForStderr, exited };
}

/** Runs `chicory ...args` to completion. */
export function runCli(
  args: readonly string[],
  env?: NodeJS.ProcessEnv,
  options: { timeoutMs?: number; cwd?: string; closeStdout?: boolean } = {},
): Promise<CliResult> {
  const cli = startCli(args, env, options.cwd, options.closeStdout);
  const timeoutMs = options.timeoutMs ?? 20_000;
  const timer = setTimeout(() => cli.child.kill("SIGKILL"), timeoutMs);
  return cli.exited.finally(() => clearTimeout(timer));
}

/** A temporary directory with a SQLite file URL in it; `remove()` deletes everything. */
export function sqliteTarget(): { dir: string; url: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), "chicory-cli-test-"));
  return { dir, url: `sqlite:${join(dir, "cli.db")}`, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Polls `probe` until it returns a value other than undefined, or throws after `timeoutMs`. */
export async function eventually<T>(probe: () => Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 100));
  }
}

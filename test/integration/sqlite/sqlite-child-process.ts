/**
 * Starts `fixtures/sqlite-child.ts` in a separate Node process (through tsx) and collects
 * the JSON lines it prints.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const FIXTURE = fileURLToPath(new URL("./fixtures/sqlite-child.ts", import.meta.url));

/** A running child and what it printed so far. */
export interface SqliteChild {
  readonly process: ChildProcess;
  /** Parsed stdout lines, in order. */
  readonly lines: Array<Record<string, unknown>>;
  /** Resolves with the first line matching `predicate` (already printed or to come). */
  waitFor(predicate: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** Resolves with the exit code once the process ended. */
  readonly exited: Promise<number | null>;
}

/** Spawns the fixture with `command` (see the fixture's header). */
export function startChild(command: Record<string, unknown>): SqliteChild {
  const child = spawn(process.execPath, ["--import", "tsx", FIXTURE, JSON.stringify(command)], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: Array<Record<string, unknown>> = [];
  const listeners = new Set<() => void>();
  let stderr = "";
  child.stderr?.on("data", (chunk: Buffer) => {
    stderr += chunk.toString("utf8");
  });
  createInterface({ input: child.stdout! }).on("line", (line) => {
    lines.push(JSON.parse(line) as Record<string, unknown>);
    for (const listener of [...listeners]) listener();
  });
  const exited = new Promise<number | null>((resolve) => child.once("close", (code) => resolve(code)));
  const waitFor = (predicate: (line: Record<string, unknown>) => boolean, timeoutMs = 20_000) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const check = () => {
        const found = lines.find(predicate);
        if (!found) return;
        cleanup();
        resolve(found);
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`child did not print the expected line within ${timeoutMs} ms; stderr: ${stderr}`));
      }, timeoutMs);
      const onExit = () => {
        check();
        cleanup();
        reject(new Error(`child exited before printing the expected line; stderr: ${stderr}`));
      };
      const cleanup = () => {
        clearTimeout(timer);
        listeners.delete(check);
        child.off("close", onExit);
      };
      listeners.add(check);
      child.once("close", onExit);
      check();
    });
  return { process: child, lines, waitFor, exited };
}

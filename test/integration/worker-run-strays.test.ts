/**
 * `worker.run()` in a process of its own: an error nobody caught in a task (a promise nobody
 * awaited, a throw from a timer) does not end the process and the jobs beside it.
 */
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { requireBuild } from "./cli/cli-process.js";

const FIXTURE = fileURLToPath(new URL("../fixtures/worker-run-strays.mjs", import.meta.url));

/** The fixture's exit code, its step lines (without "> ") and all it printed. */
function runFixture(...args: string[]): Promise<{ code: number | null; steps: string[]; output: string }> {
  return runFixtureWith([], ...args);
}

/** {@link runFixture} with options for `node` itself. */
function runFixtureWith(
  nodeOptions: string[],
  ...args: string[]
): Promise<{ code: number | null; steps: string[]; output: string }> {
  requireBuild();
  return new Promise((resolve) => {
    execFile(process.execPath, [...nodeOptions, FIXTURE, ...args], { timeout: 20_000 }, (error, stdout, stderr) => {
      const steps = stdout
        .split("\n")
        .filter((line) => line.startsWith("> "))
        .map((line) => line.slice(2));
      const code = error ? (typeof error.code === "number" ? error.code : null) : 0;
      resolve({ code, steps, output: stdout + stderr });
    });
  });
}

describe("worker.run() and errors nobody caught", () => {
  it("logs an unhandled rejection of a task and goes on", async () => {
    const r = await runFixture("rejection");
    expect(r.steps).toEqual(["stray returned", "neighbour ran", "run resolved", "listeners left: 0"]);
    expect(r.output).toContain("unhandled promise rejection");
    expect(r.output).toContain("a promise nobody awaits");
    expect(r.code).toBe(0);
  });

  it("stops gracefully at an uncaught exception, and run() rejects with it", async () => {
    const r = await runFixture("exception");
    expect(r.steps).toEqual(["run rejected: thrown from a timer", "listeners left: 0"]);
    expect(r.output).toContain("uncaught exception");
    expect(r.code).toBe(0);
  });

  it("a task whose uncaught exception stops every worker that runs it is dead-lettered after maxDeliveries (its release counts the delivery)", async () => {
    const r = await runFixture("poison");
    // before: released uncounted, run by every worker (5 of 5), never dead-lettered
    expect(r.steps).toEqual(["runs 2, DEAD_LETTERED, dlq 1"]);
    expect(r.code).toBe(0);
  });

  it("an uncaught exception while the worker connects: run() rejects with it", async () => {
    const r = await runFixture("connecting");
    expect(r.steps).toEqual(["run rejected: thrown while connecting", "listeners left: 0"]);
    expect(r.output).not.toContain("worker started");
    expect(r.code).toBe(0);
  });

  it("two workers running in one process: a stray rejection is logged once, both go on", async () => {
    const r = await runFixture("two");
    expect(r.steps).toEqual(["stray returned", "neighbour ran", "run resolved", "run resolved", "listeners left: 0"]);
    expect(r.output.match(/unhandled promise rejection/g)).toHaveLength(1);
    expect(r.code).toBe(0);
  });

  it("two workers running in one process: an uncaught exception is logged once and stops both", async () => {
    const r = await runFixture("two-exception");
    expect(r.steps).toEqual([
      "other run rejected: thrown from a timer",
      "run rejected: thrown from a timer",
      "listeners left: 0",
    ]);
    expect(r.output.match(/uncaught exception \(thrown outside/g)).toHaveLength(1);
  });

  it("under --unhandled-rejections=strict a rejection stops the worker, logged once", async () => {
    const r = await runFixtureWith(["--unhandled-rejections=strict"], "rejection");
    expect(r.output.match(/a promise nobody awaits/g)).toHaveLength(1);
    expect(r.output).toMatch(/uncaught exception \(thrown outside/);
    expect(r.output).not.toContain("unhandled promise rejection");
  });

  it("with handleStrayErrors: false, leaves them to Node (the process ends)", async () => {
    const r = await runFixture("rejection", "off");
    expect(r.code).toBe(1);
    expect(r.output).toContain("a promise nobody awaits");
    expect(r.steps).not.toContain("neighbour ran");
  });
});

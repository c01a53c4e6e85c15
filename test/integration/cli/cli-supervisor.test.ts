/**
 * `chicory worker -w 2`: the supervisor starts two worker processes, restarts one that
 * crashes (a task calls process.exit(1) once), and on SIGTERM stops them all gracefully and
 * exits 0. Runs on the embedded SQLite broker with a 1 s lease, so the crashed job is
 * redelivered quickly.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { APP_JS, cliEnv, ROOT, requireBuild, runCli, sqliteTarget, startCli } from "./cli-process.js";

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function readyPids(stderr: string): number[] {
  return [...stderr.matchAll(/"pid":(\d+),"msg":"worker process ready"/g)].map((m) => Number(m[1]));
}

describe("chicory worker -w 2 (supervisor)", () => {
  const target = sqliteTarget();
  const env = cliEnv({
    CHICORY_BROKER_URL: target.url,
    CHICORY_BROKER_SQLITE_CLAIM_MIN_IDLE_MS: "1000",
    CHICORY_TEST_CRASH_FLAG: join(target.dir, "crashed.flag"),
  });

  beforeAll(() => requireBuild());
  afterAll(() => target.remove());

  it("starts 2 children, restarts a crashed one, and exits 0 after SIGTERM", async () => {
    const supervisor = startCli(["worker", APP_JS, "-w", "2", "-c", "1", "--shutdown-timeout", "5"], env);
    try {
      await supervisor.waitForStderr(/(worker process ready[\s\S]*){2}/, 20_000);
      expect(supervisor.output.stderr).toMatch(/concurrency\s+1 per process x 2 processes/);
      const first = readyPids(supervisor.output.stderr);
      expect(new Set(first).size).toBe(2);

      const r = await runCli(["enqueue", APP_JS, "crash_once", "[]", "--wait", "--timeout", "20"], env, {
        timeoutMs: 25_000,
      });
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/survived in \d+/);
      await supervisor.waitForStderr(/crashed; restarting it/);
      await supervisor.waitForStderr(/(worker process ready[\s\S]*){3}/, 20_000);
      const all = readyPids(supervisor.output.stderr);
      expect(all).toHaveLength(3);

      supervisor.child.kill("SIGTERM");
      const exit = await supervisor.exited;
      expect(exit.code).toBe(0);
      expect(exit.stderr.match(/"msg":"worker stopped"/g)).toHaveLength(2);
      for (const pid of all) expect(isAlive(pid)).toBe(false);
    } finally {
      if (supervisor.child.exitCode === null) supervisor.child.kill("SIGKILL");
    }
  });

  it("a shutdown timeout past what a timer holds (24.8 days) still stops the children gracefully (exit 0)", async () => {
    const supervisor = startCli(["worker", APP_JS, "-w", "2", "-c", "1", "--shutdown-timeout", "3000000"], env);
    try {
      await supervisor.waitForStderr(/(worker process ready[\s\S]*){2}/, 20_000);
      supervisor.child.kill("SIGTERM");
      const exit = await supervisor.exited;
      // before: the timer that kills children that do not stop fired at once (SIGKILL, exit 1)
      expect(exit.stderr).not.toContain("killing it");
      expect(exit.stderr.match(/"msg":"worker stopped"/g)).toHaveLength(2);
      expect(exit.code).toBe(0);
    } finally {
      if (supervisor.child.exitCode === null) supervisor.child.kill("SIGKILL");
    }
  });

  it("a SIGTERM while the children are still starting is a clean stop (exit 0)", async () => {
    const supervisor = startCli(["worker", APP_JS, "-w", "2", "-c", "1"], env);
    try {
      // logged once the supervisor handles signals, right before it forks the children: they
      // get the stop signal while they load, before their own handlers are set
      await supervisor.waitForStderr(/supervisor starting worker processes/);
      supervisor.child.kill("SIGTERM");
      const exit = await supervisor.exited;
      expect(exit.code).toBe(0);
    } finally {
      if (supervisor.child.exitCode === null) supervisor.child.kill("SIGKILL");
    }
  });

  it("a restarted child that finds the app module broken (a deploy midway) is restarted, not a reason to stop", async () => {
    const module = join(target.dir, "deployed-app.mjs");
    const good = `import { Chicory } from ${JSON.stringify(pathToFileURL(join(ROOT, "dist/index.js")).href)};\nexport const app = new Chicory();\n`;
    writeFileSync(module, good);
    const supervisor = startCli(["worker", module, "-w", "2", "-c", "1"], env);
    try {
      await supervisor.waitForStderr(/(worker process ready[\s\S]*){2}/, 20_000);
      writeFileSync(module, "export const app = ;\n"); // half-written by a deploy
      const [victim] = readyPids(supervisor.output.stderr);
      process.kill(victim ?? 0, "SIGKILL");
      // its replacement cannot load the module (a usage error, exit 2), and is restarted again
      await supervisor.waitForStderr(/"code":2,[^\n]*worker process crashed; restarting it/, 20_000);
      writeFileSync(module, good);
      await supervisor.waitForStderr(/(worker process ready[\s\S]*){3}/, 20_000);
      supervisor.child.kill("SIGTERM");
      expect((await supervisor.exited).code).toBe(0);
    } finally {
      if (supervisor.child.exitCode === null) supervisor.child.kill("SIGKILL");
    }
  });

  it("a child that cannot start stops the supervisor with exit code 1", async () => {
    const bad = cliEnv({ CHICORY_BROKER_URL: "redis://127.0.0.1:1/0" });
    const r = await runCli(["worker", APP_JS, "-w", "2"], bad, { timeoutMs: 25_000 });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("worker process failed to start");
  });
});

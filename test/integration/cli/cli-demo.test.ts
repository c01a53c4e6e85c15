/**
 * `chicory demo`: an end-to-end run on the embedded default that needs no server, prints the
 * results (with a retried task) and the dead-letter queue, exits 0 and leaves no files behind.
 */
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cliEnv, requireBuild, runCli } from "./cli-process.js";

describe("chicory demo", () => {
  const cwd = mkdtempSync(join(tmpdir(), "chicory-demo-cwd-"));
  const tmp = mkdtempSync(join(tmpdir(), "chicory-demo-tmp-"));

  beforeAll(() => requireBuild());
  afterAll(() => {
    rmSync(cwd, { recursive: true, force: true });
    rmSync(tmp, { recursive: true, force: true });
  });

  it("runs a worker and a producer on SQLite in a temp dir, prints results and the DLQ, exits 0", async () => {
    const env = cliEnv({ TMPDIR: tmp, CHICORY_BROKER_URL: undefined, CHICORY_BACKEND_URL: undefined });
    const r = await runCli(["demo"], env, { cwd, timeoutMs: 30_000 });
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`broker sqlite:${tmp}`);
    expect(r.stdout).toMatch(/add\(2, 3\)\s+SUCCESS\s+[\d.]+ s\s+= 5/);
    expect(r.stdout).toMatch(/slow_square\(7\)\s+SUCCESS\s+[\d.]+ s\s+= 49/);
    expect(r.stdout).toMatch(/flaky_fetch.*SUCCESS.*"attempts":3.*after 2 retries/);
    expect(r.stdout).toMatch(/charge_card.*DEAD_LETTERED.*CardDeclinedError.*moved to the dead-letter queue/);
    expect(r.stdout).toContain('Dead-letter queue "default": 1 message(s)');
    expect(r.stdout).toMatch(/task\s+charge_card\("4242424242424242", 42\)/);
    expect(r.stdout).toContain("Worker stopped");
    expect(readdirSync(cwd)).toEqual([]);
    expect(readdirSync(tmp)).toEqual([]);
  });
});

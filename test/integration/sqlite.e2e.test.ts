import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Chicory } from "../../src/index.js";
import { runWorkerE2E } from "./worker-e2e.js";

const dirs = new WeakMap<Chicory, string>();

runWorkerE2E({
  name: "sqlite broker + sqlite backend (embedded default)",
  createApp: () => {
    const dir = mkdtempSync(join(tmpdir(), "chicory-e2e-"));
    const app = new Chicory({
      config: {
        env: {
          CHICORY_BROKER_URL: `sqlite:${join(dir, "chicory.db")}`,
          CHICORY_BROKER_SQLITE_CLAIM_MIN_IDLE_MS: "1000",
        },
      },
    });
    dirs.set(app, dir);
    return app;
  },
  destroy: async (app) => rmSync(dirs.get(app) ?? "/nonexistent", { recursive: true, force: true }),
});

describe("results on the SQLite default, awaited in another process", () => {
  it("get() sees a result when the worker's commit changes the file, not at the next poll", async () => {
    const dir = mkdtempSync(join(tmpdir(), "chicory-e2e-"));
    const env = {
      CHICORY_BROKER_URL: `sqlite:${join(dir, "chicory.db")}`,
      CHICORY_RESULT_POLL_INTERVAL: "60", // a poll would come too late for the timeouts below
    };
    const producer = new Chicory({ config: { env } });
    const echo = producer.task(async function echo(n: number) {
      return n;
    });
    await producer.connect();
    // the worker in a process of its own (the built package, as the CLI tests use it)
    const code = `
      const { Chicory, Worker, silentLogger } = await import(${JSON.stringify(join(process.cwd(), "dist/index.js"))});
      const app = new Chicory();
      app.task(async function echo(n) { return n; });
      await new Worker(app, { logger: silentLogger, concurrency: 2 }).run();`;
    const child = spawn(process.execPath, ["--input-type=module", "-e", code], {
      env: { ...process.env, ...env },
      stdio: "ignore",
    });
    try {
      expect(await (await echo.delay(0)).get({ timeout: 20 })).toBe(0); // the worker is up
      // aborted, not timed out: a wait that times out reads once more, which would hide a late wake-up
      for (let n = 1; n <= 3; n++) {
        expect(await (await echo.delay(n)).get({ timeout: null, signal: AbortSignal.timeout(3000) })).toBe(n);
      }
    } finally {
      child.kill("SIGTERM");
      await new Promise((resolve) => child.once("exit", resolve));
      await producer.disconnect();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// Runs every example as a user would (against the built package), each in a temp directory.
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { Redis } from "ioredis";
import { afterAll, describe, expect, it } from "vitest";
import { SERVICES, skipUnless, uniqueName } from "../helpers/services.js";

const run = promisify(execFile);
const root = fileURLToPath(new URL("../../", import.meta.url));
const tsx = import.meta.resolve("tsx");
const dir = mkdtempSync(join(tmpdir(), "chicory-examples-"));
const prefix = uniqueName("ex");
const skipRedis = await skipUnless("redis");

afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  if (skipRedis) return;
  const redis = new Redis(SERVICES.redis);
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length) await redis.del(...keys);
  redis.disconnect();
});

async function example(name: string, env: Record<string, string> = {}): Promise<string> {
  const { stdout } = await run(process.execPath, ["--import", tsx, join(root, "examples", name)], {
    cwd: dir,
    timeout: 60_000,
    env: {
      ...process.env,
      CHICORY_BROKER_REDIS_KEY_PREFIX: prefix,
      CHICORY_BACKEND_REDIS_KEY_PREFIX: prefix,
      ...env,
    },
  });
  return stdout;
}

describe("examples", () => {
  it("01-quickstart", async () => {
    expect(await example("01-quickstart.ts")).toContain("2 + 3 = 5");
  });
  it("02-retries-and-dlq", async () => {
    const out = await example("02-retries-and-dlq.ts");
    expect(out).toContain("state: DEAD_LETTERED");
    expect(out).toContain("after replay: { orderId: 'order-1', charged: true }");
  });
  it("03-validation", async () => {
    const out = await example("03-validation.ts");
    expect(out).toContain("2030-01-01T09:00:00.000Z");
    expect(out).toContain("rejected before publishing");
    expect(out).toContain("0: Invalid email address");
  });
  it.skipIf(skipRedis)("04-redis", async () => {
    expect(await example("04-redis.ts", { CHICORY_BROKER_URL: SERVICES.redis })).toContain(
      "resized 100 images on Redis",
    );
  });
  it("tasks.ts + producer.ts in two processes", async () => {
    const worker = execFile(
      process.execPath,
      [join(root, "dist/cli/main.js"), "worker", join(root, "examples/tasks.ts")],
      {
        cwd: dir,
      },
    );
    try {
      const out = await example("producer.ts");
      expect(out).toContain("-> 5");
      expect(out).toContain("Hello, Chicory!");
      expect(out).toContain("flaky job succeeded after 2 retries");
    } finally {
      worker.kill("SIGTERM");
    }
  });
});

/**
 * `chicory result <id> --wait` without `--timeout` while the result backend's Redis is down:
 * it says so on stderr (the backend's warning, a process warning since the app's backend has no
 * logger of its own) and goes on waiting; once Redis is back and the record written, it prints
 * the record and exits 0. On a redis-server of the test's own. Runs the BUILT CLI.
 */
import { Redis } from "ioredis";
import { beforeAll, describe, expect, it } from "vitest";
import { RedisBackend } from "../../../src/backends/redis/index.js";
import { successRecord } from "../../contract/contract-helpers.js";
import { useCleanups } from "../../helpers/cleanups.js";
import { skipUnless, uniqueName } from "../../helpers/services.js";
import { useOwnRedis } from "../redis/own-redis.js";
import { APP_JS, cliEnv, eventually, requireBuild, startCli } from "./cli-process.js";

const skip = await skipUnless("redis");

describe.skipIf(skip)("chicory result --wait during a Redis outage", () => {
  const own = useOwnRedis("cli-outage");
  const cleanups = useCleanups();

  beforeAll(() => {
    requireBuild();
  });

  it("warns on stderr while Redis is down, keeps waiting, and prints the record once it is there", async () => {
    const keyPrefix = uniqueName("cli-outage");
    const env = cliEnv({ CHICORY_BROKER_URL: own.server.url, CHICORY_BACKEND_REDIS_KEY_PREFIX: keyPrefix });
    const taskId = uniqueName("outage-task");
    const cli = startCli(["result", APP_JS, taskId, "--wait"], env);
    cleanups.push(() => {
      if (cli.child.exitCode === null) cli.child.kill("SIGKILL");
    });
    // connected and waiting (its first read found nothing) before Redis goes
    const probe = new RedisBackend({ url: own.server.url, keyPrefix, env: {} });
    await probe.connect();
    const channel = probe.doneChannel;
    await probe.disconnect();
    await waitForSubscriber(own.server.url, channel);

    await own.server.kill();
    await cli.waitForStderr(/results cannot be read \(backend unreachable\?\); waits go on/, 20_000);
    expect(cli.output.stderr).toContain(`redis backend redis://127.0.0.1:${own.server.port}/0`);
    expect(cli.output.stderr).toMatch(/ECONNREFUSED/);
    expect(cli.child.exitCode).toBeNull();

    await own.server.start();
    const writer = new RedisBackend({ url: own.server.url, keyPrefix, env: {} });
    cleanups.push(() => writer.disconnect());
    await writer.connect();
    await writer.storeResult(successRecord(taskId, 42));
    const done = await cli.exited;
    expect(done.code).toBe(0);
    expect(JSON.parse(done.stdout)).toMatchObject({ taskId, state: "SUCCESS", result: 42 });
  });
});

/** Resolves once a client subscribes to `channel` on the server of `url` (the CLI's wait began). */
async function waitForSubscriber(url: string, channel: string): Promise<void> {
  const raw = new Redis(url);
  try {
    await eventually(async () => {
      const counts = (await raw.call("PUBSUB", "NUMSUB", channel)) as Array<string | number>;
      return Number(counts[1]) > 0 ? true : undefined;
    });
  } finally {
    raw.disconnect();
  }
}

/**
 * Infrastructure fault: a redis-server the test starts itself (never the shared :6379) is
 * frozen (SIGSTOP): its connections stay open and nothing answers. Inspection calls must not
 * hang for the whole outage: `AsyncResult.state()` and the broker's counts reject with a
 * connection error naming the deadline (10 s), and answer again once the server resumes.
 * And a server that is down (SIGKILL): a publish still waiting for it when the app disconnects
 * ends then ("outcome unknown"), not at its 10 s time limit, nor never.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { BackendConnectionError, BrokerConnectionError, Chicory } from "../../src/index.js";
import { RedisBackend, RedisBroker } from "../../src/redis.js";
import { freePort, OwnRedis } from "./infra/redis-server.js";

const hasRedisServer = await (async () => {
  const { spawnSync } = await import("node:child_process");
  return spawnSync("redis-server", ["--version"]).status === 0;
})();

/** A redis-server of the test's own, an app on it (with a Redis backend or none), and its cleanup. */
async function ownRedisApp(withBackend: boolean) {
  const dir = mkdtempSync(join(tmpdir(), "chicory-frozen-"));
  const server = new OwnRedis(await freePort(), dir, "none");
  await server.start();
  const app = new Chicory({
    broker: new RedisBroker({ url: server.url, keyPrefix: "frozen", env: {} }),
    backend: withBackend ? new RedisBackend({ url: server.url, keyPrefix: "frozen", env: {} }) : null,
  });
  const noop = app.task(async function noop() {});
  const close = async () => {
    await app.disconnect().catch(() => undefined);
    await server.kill();
    rmSync(dir, { recursive: true, force: true });
  };
  return { server, app, noop, close };
}

describe.skipIf(!hasRedisServer && process.env.CI !== "true")("infra: own redis-server frozen (SIGSTOP)", () => {
  it("state() and the broker's counts reject after their 10 s deadline instead of hanging", {
    timeout: 60_000,
  }, async () => {
    const { server, app, noop, close } = await ownRedisApp(true);
    try {
      await app.connect();
      const result = await noop.delay();
      expect(await result.state()).toBe("PENDING");
      process.kill(server.pid as number, "SIGSTOP");
      const started = performance.now();
      const [state, size] = await Promise.allSettled([result.state(), app.broker.getQueueSize("default")]);
      const tookMs = performance.now() - started;
      expect(state.status === "rejected" && state.reason).toBeInstanceOf(BackendConnectionError);
      expect(String(state.status === "rejected" && state.reason)).toMatch(/no answer from .* within 10 s/);
      expect(size.status === "rejected" && size.reason).toBeInstanceOf(BrokerConnectionError);
      expect(tookMs).toBeGreaterThanOrEqual(9_900);
      expect(tookMs).toBeLessThan(20_000);
      process.kill(server.pid as number, "SIGCONT");
      expect(await result.state()).toBe("PENDING");
      expect(await app.broker.getQueueSize("default")).toBe(1);
    } finally {
      if (server.pid !== undefined) process.kill(server.pid, "SIGCONT");
      await close();
    }
  });

  it("a publish pending while Redis is down ends at once when the app disconnects (outcome unknown)", {
    timeout: 60_000,
  }, async () => {
    const { server, app, noop, close } = await ownRedisApp(false);
    try {
      await app.connect();
      await server.kill("SIGKILL");
      const pending = noop.send().then(
        () => "published",
        (error: unknown) => error,
      );
      const started = performance.now();
      await app.disconnect();
      const outcome = await pending;
      expect(outcome).toBeInstanceOf(BrokerConnectionError);
      expect(String(outcome)).toMatch(/disconnected before .* answered; its outcome is unknown/);
      expect(performance.now() - started).toBeLessThan(5_000); // not the 10 s publish time limit
    } finally {
      await close();
    }
  });
});

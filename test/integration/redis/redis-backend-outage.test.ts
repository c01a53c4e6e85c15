/**
 * `get()` without a timeout while the result backend's Redis is down: it still waits, and
 * resolves once Redis is back and the record is there, but the outage is no longer silent: the
 * backend's logger gets one warning naming the backend and the reason (one for a thousand
 * waiting `get()`s), and one info line when Redis answers again. On a redis-server of the
 * test's own (killed and restarted on the same port).
 */
import { describe, expect, it } from "vitest";
import { RedisBackend } from "../../../src/backends/redis/index.js";
import { AsyncResult } from "../../../src/index.js";
import { successRecord } from "../../contract/contract-helpers.js";
import { capturingLogger } from "../../helpers/capturing-logger.js";
import { useCleanups } from "../../helpers/cleanups.js";
import { skipUnless, uniqueName } from "../../helpers/services.js";
import { useOwnRedis } from "./own-redis.js";

const skip = await skipUnless("redis");

describe.skipIf(skip)("redis backend: get() without a timeout during an outage", () => {
  const own = useOwnRedis("outage");
  const cleanups = useCleanups();

  it("warns once while Redis is down, keeps waiting, and resolves every get() once Redis and the records are back", async () => {
    const { logger, lines, until } = capturingLogger();
    const keyPrefix = uniqueName("outage");
    const backend = new RedisBackend({ url: own.server.url, keyPrefix, env: {}, logger });
    cleanups.push(() => backend.disconnect());
    await backend.connect();
    // a get() while Redis is up: the result subscription is open when Redis goes
    await backend.storeResult(successRecord("before", 0));
    expect(await new AsyncResult("before", backend).get()).toBe(0);

    await own.server.kill();
    const ids = Array.from({ length: 1000 }, (_, i) => `down-${i}`);
    let settled = 0;
    const gets = ids.map((id) =>
      new AsyncResult<number>(id, backend).get().finally(() => {
        settled++;
      }),
    );
    const values = Promise.all(gets);
    values.catch(() => undefined); // awaited below; a failure before that is the test's
    const warning = await until(/results cannot be read/);
    expect(warning.level).toBe("warn");
    expect(warning.message).toContain(`redis backend redis://127.0.0.1:${own.server.port}/0`);
    expect(String(warning.fields.err)).toMatch(/no answer for \d+\.\d s; last error: .*ECONNREFUSED/);
    expect(warning.fields.waitingTaskIds).toBe(ids.length);
    expect(settled).toBe(0); // still waiting: no TimeoutError, no rejection

    await own.server.start();
    const recovered = until(/results can be read again/);
    // the restart is said once the backend's own connection is back (its run_id read again):
    // awaited before the records are written, which would end the waits and leave none to name
    const restarted = await until(/the server behind it changed/);
    expect(restarted.fields.waiting).toBe(ids.length);
    // the records come from another process (here: another backend instance)
    const writer = new RedisBackend({ url: own.server.url, keyPrefix, env: {} });
    cleanups.push(() => writer.disconnect());
    await writer.connect();
    await Promise.all(ids.map((id, i) => writer.storeResult(successRecord(id, i))));
    expect(await values).toEqual(ids.map((_, i) => i));
    expect((await recovered).level).toBe("info");
    // one warning for the outage, whatever the number of waits, and one for the restart (a new
    // run_id: this server keeps nothing across restarts), no other
    expect(lines.filter((line) => line.level === "warn" || line.level === "error")).toEqual([warning, restarted]);
  });

  it("a restart too short for the outage warning is said when results are awaited", async () => {
    const { logger, lines, until } = capturingLogger();
    const backend = new RedisBackend({ url: own.server.url, keyPrefix: uniqueName("outage"), env: {}, logger });
    cleanups.push(() => backend.disconnect());
    await backend.connect();
    const lost = new AsyncResult("lost-in-restart", backend);
    const unserved = new AsyncResult("lost-in-restart", backend, { countConsumers: async () => 0 }, "q");
    const waiting = lost.get({ timeout: 30 });
    waiting.catch(() => undefined); // ends at the disconnect in the cleanups
    // (the wait is under way once its subscription is: a record announced now would reach it)
    await backend.storeResult(successRecord("seen", 1));
    expect(await new AsyncResult("seen", backend).get({ timeout: 10 })).toBe(1);
    await own.server.kill();
    await own.server.start();
    const said = await until(/the server behind it changed \(its run_id: a restart.*\) while the results of 1 task id/);
    expect(said.level).toBe("warn");
    expect(said.fields.waiting).toBe(1);
    expect(lines.some((line) => /results cannot be read/.test(line.message))).toBe(false);
    // a get() that times out on a result made before the restart says it; one made after does not
    const note = /the backend.s server restarted or failed over since this result was made: .*lost the results it held/;
    await expect(lost.get({ timeout: 0.2 })).rejects.toThrow(note);
    // with no worker for its queue, that is said instead (the job may be waiting in the broker)
    await expect(unserved.get({ timeout: 0.2 })).rejects.toThrow(/counts no consumer of queue "q"/);
    const after = new AsyncResult("made-after-restart", backend).get({ timeout: 0.2 });
    await expect(after).rejects.toThrow(/no result after 0.2 s$/);
  });

  it("a first wait whose subscription cannot open (Redis down) keeps its own timeout and abort", async () => {
    const backend = new RedisBackend({ url: own.server.url, keyPrefix: uniqueName("outage"), env: {} });
    cleanups.push(() => backend.disconnect());
    await backend.connect();
    await own.server.kill(); // before any wait: the subscription opens with the first one
    cleanups.push(() => own.server.start());
    const timed = async (wait: () => Promise<unknown>): Promise<[unknown, number]> => {
      const start = performance.now();
      const value = await wait();
      return [value, performance.now() - start];
    };
    // before: each of these took the subscription's full second (SUBSCRIBE_WAIT_MS)
    const [value, ms] = await timed(() => backend.waitForResult("a", { timeoutMs: 100 }));
    expect(value).toBeNull();
    expect(ms).toBeLessThan(700);
    const [aborted, abortedMs] = await timed(() => backend.waitForResult("b", { signal: AbortSignal.timeout(50) }));
    expect(aborted).toBeNull();
    expect(abortedMs).toBeLessThan(700);
  });
});

/**
 * `chicory worker` in one process, producers and admin commands in others, on a real
 * multi-process broker: the embedded SQLite default (a file in a temp dir), and Redis with a
 * random key prefix.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MessageCodec } from "../../../src/core/message.js";
import { encodeTask } from "../../contract/contract-helpers.js";
import { type Cleanups, runCleanups } from "../../helpers/cleanups.js";
import { skipUnless, uniqueName } from "../../helpers/services.js";
import { idleWorkerStats } from "../../helpers/worker-stats.js";
import { aclUser, deletePrefix, rawRedis } from "../redis/redis-test-keys.js";
import {
  APP_JS,
  type CliProcess,
  cliEnv,
  eventually,
  requireBuild,
  runCli,
  sqliteTarget,
  startCli,
} from "./cli-process.js";

const WORKER_ARGS = ["worker", APP_JS, "-c", "2", "--dlq", "--heartbeat-interval", "1", "--heartbeat-ttl", "5"];

describe("chicory CLI on the embedded SQLite broker (multi-process)", () => {
  const target = sqliteTarget();
  const env = cliEnv({ CHICORY_BROKER_URL: target.url });
  let worker: CliProcess;
  let earlyId = "";

  beforeAll(async () => {
    requireBuild();
    const early = await runCli(["enqueue", APP_JS, "add", "[2, 3]"], env);
    expect(early.code).toBe(0);
    earlyId = early.stdout.trim();
    worker = startCli(WORKER_ARGS, env);
    await worker.waitForStderr(/"msg":"worker started"/);
  });

  afterAll(async () => {
    if (worker.child.exitCode === null) worker.child.kill("SIGKILL");
    target.remove();
  });

  it("prints a banner with the app, tasks, queues, concurrency and broker", () => {
    const banner = worker.output.stderr;
    expect(banner).toContain("chicory worker v");
    expect(banner).toMatch(/app\s+test\/fixtures\/cli-app\.mjs:app/);
    expect(banner).toMatch(/tasks\s+5 registered: add, boom, crash_once, slow, stray/);
    expect(banner).toMatch(/queues\s+default/);
    expect(banner).toMatch(/concurrency\s+2/);
    expect(banner).toMatch(/dead letters\s+on/);
    expect(banner).toContain(`broker        ${target.url}`);
  });

  it("a task enqueued by another process runs; result prints it as JSON", async () => {
    const r = await runCli(["result", APP_JS, earlyId, "--wait", "--timeout", "10"], env);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ taskId: earlyId, state: "SUCCESS", taskName: "add", result: 5 });
  });

  it("enqueue --wait prints the id and the result; a remote failure exits 1 with one line", async () => {
    const ok = await runCli(["enqueue", APP_JS, "add", "[4, 5]", "--wait", "--timeout", "10"], env);
    expect(ok.code).toBe(0);
    const [id, value] = ok.stdout.trim().split("\n");
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    expect(value).toBe("9");
    const failed = await runCli(["enqueue", APP_JS, "boom", '["kaput"]', "--wait", "--timeout", "10"], env);
    expect(failed.code).toBe(1);
    expect(failed.stderr.trim()).toMatch(/^chicory: task [0-9a-f-]{36} failed: TypeError: kaput$/);
    const json = await runCli(["enqueue", APP_JS, "add", "[1, 1]", "--wait", "--timeout", "10", "--json"], env);
    expect(JSON.parse(json.stdout)).toMatchObject({ task: "add", state: "SUCCESS", result: 2 });
    // a wait that fails still prints one JSON object (the record as it is), then the failure line
    const late = await runCli(["enqueue", APP_JS, "slow", "[1500]", "--wait", "--timeout", "0.2", "--json"], env);
    expect(late.code).toBe(1);
    expect(JSON.parse(late.stdout)).toMatchObject({
      task: "slow",
      state: expect.stringMatching(/^(PENDING|STARTED)$/),
    });
    expect(late.stderr.trim()).toMatch(/^chicory: task [0-9a-f-]{36}: no result after 0.2 s/);
  });

  it("enqueue --wait without a timeout says once, on stderr, that no worker consumes the queue", async () => {
    const waiting = startCli(["enqueue", APP_JS, "add", "[1, 2]", "--wait", "--queue", "nobody_here"], env);
    await waiting.waitForStderr(/no worker consumes queue "nobody_here" now: waiting until one runs the task/);
    waiting.child.kill("SIGINT");
    const ended = await waiting.exited;
    expect(ended.stdout.trim()).toMatch(/^[0-9a-f-]{36}$/); // the id first, as always
    // a queue a worker consumes: no such line
    const served = await runCli(["enqueue", APP_JS, "add", "[1, 2]", "--wait"], env);
    expect([served.code, served.stderr]).toEqual([0, ""]);
  });

  it("workers lists the live worker (table and --json)", async () => {
    const json = await runCli(["workers", APP_JS, "--json"], env);
    expect(json.code).toBe(0);
    const workers = JSON.parse(json.stdout) as Array<{ pid: number; isRunning: boolean; workerId: string }>;
    const mine = workers.find((w) => w.pid === worker.child.pid);
    expect(mine?.isRunning).toBe(true);
    const table = await runCli(["workers", APP_JS], env);
    expect(table.stdout).toMatch(/^WORKER ID\s+HOST\s+PID/);
    expect(table.stdout).toContain(mine?.workerId ?? "?");
  });

  it("workers --min is a health probe: exit 1 with a line on stderr when fewer are running", async () => {
    const json = await runCli(["workers", APP_JS, "--json"], env);
    const [only] = JSON.parse(json.stdout) as Array<{ hostname: string; pid: number }>;
    expect(only?.pid).toBe(worker.child.pid);
    const host = only?.hostname ?? "?";
    const ok = await runCli(["workers", APP_JS, "--host", host, "--min", "1"], env);
    expect([ok.code, ok.stderr]).toEqual([0, ""]);
    expect(ok.stdout).toContain(String(worker.child.pid));
    const few = await runCli(["workers", APP_JS, "--min", "2", "--json"], env);
    expect(few.code).toBe(1);
    expect(JSON.parse(few.stdout)).toHaveLength(1);
    expect(few.stderr).toBe("chicory: 1 running worker(s), fewer than --min 2\n");
    const elsewhere = await runCli(["workers", APP_JS, "--host", "no-such-host", "--min", "1"], env);
    expect(elsewhere.code).toBe(1);
    expect(elsewhere.stdout).toContain("no live workers on host no-such-host");
    expect(elsewhere.stderr).toBe("chicory: 0 running worker(s) on host no-such-host, fewer than --min 1\n");
    const zero = await runCli(["workers", APP_JS, "--min", "0"], env);
    expect(zero.code).toBe(2);
    expect(zero.stderr).toMatch(/--min.*expected a whole number >= 1, got "0"/);
  });

  it("dlq list/count/replay/delete/purge", async () => {
    const count = await runCli(["dlq", "count", APP_JS], env);
    expect(count.stdout.trim()).toBe("1");
    const list = await runCli(["dlq", "list", APP_JS, "--json"], env);
    const [entry] = JSON.parse(list.stdout) as Array<{ messageId: string; taskName: string; error: string }>;
    expect(entry).toMatchObject({ taskName: "boom", error: expect.stringContaining("kaput") });
    const table = await runCli(["dlq", "list", APP_JS], env);
    expect(table.stdout).toMatch(/QUEUE\s+MESSAGE ID\s+TASK\s+TASK ID\s+RETRIES\s+FAILED AT\s+ERROR/);
    expect(table.stdout).toContain("TypeError: kaput");

    const replay = await runCli(["dlq", "replay", APP_JS, entry?.messageId ?? "", "--no-reset-retries"], env);
    expect(replay.code).toBe(0);
    expect(replay.stdout).toContain(`replayed ${entry?.messageId} to queue default`);
    // The worker runs the replayed message, which fails into the DLQ again under a new entry id.
    const again = await eventually(async () => {
      const r = await runCli(["dlq", "list", APP_JS, "--json"], env);
      const entries = JSON.parse(r.stdout) as Array<{ messageId: string }>;
      return entries.length === 1 && entries[0]?.messageId !== entry?.messageId ? entries[0] : undefined;
    });
    const missing = await runCli(["dlq", "delete", APP_JS, "no-such-entry"], env);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^chicory: no dead-letter entry no-such-entry/);
    // nobody to ask (stdin is not a terminal): refused without --yes, nothing deleted
    const unconfirmed = await runCli(["dlq", "purge", APP_JS], env);
    expect(unconfirmed.code).toBe(2);
    expect(unconfirmed.stderr).toBe(
      "chicory: dlq purge deletes messages for good: pass --yes to confirm (stdin is not a terminal)\n",
    );
    const purge = await runCli(["dlq", "purge", APP_JS, "--yes"], env);
    expect(purge.stdout).toContain("purged 1 dead-letter message(s)");
    expect(again.messageId).toBeTruthy();
    // an empty listing says which queues it read
    const empty = await runCli(["dlq", "list", APP_JS], env);
    expect(empty.stdout).toBe('no dead letters in queue "default" (another queue: name it with -q)\n');
  });

  it("result --wait of a failed task prints its record and exits 1 with one line, as enqueue --wait; without --wait it exits 0", async () => {
    const enqueued = await runCli(["enqueue", APP_JS, "boom", '["late"]'], env);
    const id = enqueued.stdout.trim();
    const waited = await runCli(["result", APP_JS, id, "--wait", "--timeout", "10"], env);
    expect(waited.code).toBe(1);
    expect(JSON.parse(waited.stdout)).toMatchObject({
      taskId: id,
      state: "DEAD_LETTERED",
      taskName: "boom",
      error: { type: "TypeError", message: "late", code: "ERR_BOOM" },
    });
    expect(waited.stderr.trim()).toBe(`chicory: task ${id} failed: TypeError: late`);
    const read = await runCli(["result", APP_JS, id, "--json"], env); // always JSON; --json accepted
    expect(read.code).toBe(0);
    expect(JSON.parse(read.stdout)).toMatchObject({ taskId: id, state: "DEAD_LETTERED" });
    expect(read.stderr).toBe("");
  });

  it("result --wait that times out exits 1 with one line, as enqueue --wait; the app's resultDefaultTimeout applies", async () => {
    const id = "never-enqueued";
    const timedOut = await runCli(["result", APP_JS, id, "--wait", "--timeout", "0.5"], env);
    expect(timedOut.code).toBe(1);
    expect(timedOut.stdout).toBe("");
    expect(timedOut.stderr.trim()).toBe(`chicory: task ${id}: no result after 0.5 s`);
    const byDefault = await runCli(
      ["result", APP_JS, id, "--wait"],
      { ...env, CHICORY_RESULT_DEFAULT_TIMEOUT: "0.5" },
      {
        timeoutMs: 10_000,
      },
    );
    expect(byDefault.code).toBe(1);
    expect(byDefault.stderr.trim()).toBe(`chicory: task ${id}: no result after 0.5 s`);
    const read = await runCli(["result", APP_JS, id, "--json"], env); // always JSON; --json accepted
    expect(read.code).toBe(0);
    expect(JSON.parse(read.stdout)).toEqual({ taskId: id, state: "PENDING" });
  });

  it("queue stats shows the consumer; SIGTERM stops the worker gracefully (exit 0)", async () => {
    const stats = await runCli(["queue", "stats", APP_JS, "--json"], env);
    const [row] = JSON.parse(stats.stdout) as Array<{ queue: string; consumers: number }>;
    expect(row?.queue).toBe("default");
    expect(row?.consumers).toBeGreaterThanOrEqual(1);
    worker.child.kill("SIGTERM");
    const exit = await worker.exited;
    expect(exit.code).toBe(0);
    expect(exit.stderr).toContain('"msg":"worker stopped"');
  });

  it("queue purge removes waiting (delayed) messages; cleanup runs", async () => {
    for (let i = 0; i < 2; i++) {
      expect((await runCli(["enqueue", APP_JS, "slow", "[1]", "--countdown", "60"], env)).code).toBe(0);
    }
    const before = JSON.parse((await runCli(["queue", "stats", APP_JS, "--json"], env)).stdout) as Array<{
      size: number;
    }>;
    expect(before[0]?.size).toBe(2);
    const unconfirmed = await runCli(["queue", "purge", APP_JS], env);
    expect(unconfirmed.code).toBe(2);
    expect(unconfirmed.stderr).toContain("pass --yes to confirm");
    const purge = await runCli(["queue", "purge", APP_JS, "-y"], env);
    expect(purge.stdout).toContain("purged 2 waiting message(s)");
    const cleanup = await runCli(["cleanup", APP_JS, "--stale-seconds", "3600", "--json"], env);
    expect(cleanup.code).toBe(0);
    expect(JSON.parse(cleanup.stdout)).toMatchObject({ staleSeconds: 3600, removedWorkers: 0 });
    // shorter than a heartbeat interval would remove live workers: refused
    const tooShort = await runCli(["cleanup", APP_JS, "--stale-seconds", "0.5"], env);
    expect(tooShort.code).toBe(2);
    expect(tooShort.stderr).toContain("expected at least 10 s");
  });
});

describe("chicory worker and errors nobody caught in a task (SQLite)", () => {
  const target = sqliteTarget();
  const env = cliEnv({ CHICORY_BROKER_URL: target.url });
  afterAll(() => target.remove());

  it("an unhandled rejection is logged and the worker goes on; an uncaught exception stops it gracefully (running jobs finish), exit 1", async () => {
    requireBuild();
    const worker = startCli(["worker", APP_JS, "-c", "2", "--shutdown-timeout", "10", "--log-level", "INFO"], env);
    try {
      await worker.waitForStderr(/"msg":"worker started"/);
      const rejected = await runCli(["enqueue", APP_JS, "stray", '["rejection"]', "--wait", "--timeout", "10"], env);
      expect(rejected.stdout.trim().split("\n")[1]).toBe('"ok"');
      await worker.waitForStderr(/unhandled promise rejection .*the worker goes on/);
      expect(worker.output.stderr).toContain("late stray rejection");
      const after = await runCli(["enqueue", APP_JS, "add", "[1, 2]", "--wait", "--timeout", "10"], env);
      expect(after.stdout.trim().split("\n")[1]).toBe("3");
      // a job running when the exception comes finishes before the worker exits
      const slow = await runCli(["enqueue", APP_JS, "slow", "[1500]"], env);
      const slowId = slow.stdout.trim();
      await runCli(["enqueue", APP_JS, "stray", '["exception"]'], env);
      const exit = await worker.exited;
      expect(exit.code).toBe(1);
      expect(exit.stderr).toMatch(/"level":50,.*uncaught exception .*stopping gracefully/);
      expect(exit.stderr).toContain("late stray exception");
      expect(exit.stderr).toContain('"msg":"worker stopped"');
      expect(exit.stderr).not.toContain("logLevel applies to the default logger only"); // (--log-level is the CLI's own)
      const read = await runCli(["result", APP_JS, slowId], env);
      expect(JSON.parse(read.stdout)).toMatchObject({ taskId: slowId, state: "SUCCESS", result: 1500 });
    } finally {
      if (worker.child.exitCode === null) worker.child.kill("SIGKILL");
    }
  });
});

const skipRedis = await skipUnless("redis");

describe.skipIf(skipRedis)("chicory CLI on Redis (multi-process)", () => {
  const prefix = uniqueName("clitest");
  const env = cliEnv({
    CHICORY_BROKER_URL: "redis://127.0.0.1:6379/0",
    CHICORY_BROKER_REDIS_KEY_PREFIX: prefix,
    CHICORY_BACKEND_REDIS_KEY_PREFIX: prefix,
  });

  afterAll(() => deletePrefix(prefix));

  it("enqueue without --wait needs only the broker: an unreachable backend does not stop it", async () => {
    requireBuild();
    const queue = uniqueName("q-");
    const down = { ...env, CHICORY_BACKEND_URL: "redis://127.0.0.1:1/0" };
    const r = await runCli(["enqueue", APP_JS, "add", "[1, 2]", "-q", queue], down);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toMatch(/^[0-9a-f-]{36}$/);
    expect(await rawRedisLength(`${prefix}:stream:{${queue}}`)).toBe(1);
    const waited = await runCli(["enqueue", APP_JS, "add", "[1, 2]", "-q", queue, "--wait", "--timeout", "5"], down);
    expect(waited.code).toBe(1);
    expect(waited.stderr).toMatch(/cannot connect to redis:\/\/127\.0\.0\.1:1\/0/);
  });

  it("enqueue --wait is answered by a worker process; SIGTERM exits 0", async () => {
    requireBuild();
    const worker = startCli(["worker", APP_JS, "-c", "2"], env);
    try {
      await worker.waitForStderr(/"msg":"worker started"/);
      expect(worker.output.stderr).toMatch(/broker\s+redis:\/\/127\.0\.0\.1:6379\/0/);
      const r = await runCli(["enqueue", APP_JS, "add", "[20, 22]", "--wait", "--timeout", "10"], env);
      expect(r.code).toBe(0);
      expect(r.stdout.trim().split("\n")[1]).toBe("42");
      worker.child.kill("SIGTERM");
      expect((await worker.exited).code).toBe(0);
    } finally {
      if (worker.child.exitCode === null) worker.child.kill("SIGKILL");
    }
  });

  it("dlq replay --all replays what the DLQ held once, while a worker keeps failing them, and names the entry it cannot replay", async () => {
    requireBuild();
    const queue = uniqueName("replayall");
    const qEnv = { ...env, CHICORY_WORKER_QUEUE: queue };
    const worker = startCli(["worker", APP_JS, "-c", "2", "--dlq", "-q", queue], qEnv);
    const raw = rawRedis();
    try {
      await worker.waitForStderr(/"msg":"worker started"/);
      for (let i = 0; i < 3; i++) {
        expect((await runCli(["enqueue", APP_JS, "boom", `["again ${i}"]`, "-q", queue], qEnv)).code).toBe(0);
      }
      const count = async () => Number((await runCli(["dlq", "count", APP_JS, "-q", queue], qEnv)).stdout.trim());
      await eventually(async () => ((await count()) === 3 ? true : undefined));
      const bad = (await raw.xadd(
        `${prefix}:dlq:{${queue}}`,
        "*",
        "data",
        "not json",
        "error",
        "x",
        "failed_at",
        1,
      )) as string;
      const r = await runCli(["dlq", "replay", APP_JS, "--all", "-q", queue], qEnv);
      expect(r.stdout).toContain("replayed 3 message(s) from the dead-letter queue");
      expect(r.stdout).toContain(`not replayed: ${queue} ${bad}: cannot replay dead-lettered message: decode_error`);
      expect(r.stdout).not.toContain("deleteFromDlq"); // the library's API, not a command
      expect(r.stderr).toMatch(/1 entry left in the dead-letter queue .*chicory dlq delete/);
      expect(r.code).toBe(1);
      // the three run again and die again: the DLQ ends with them and the bad entry
      await eventually(async () => ((await count()) === 4 ? true : undefined));
      const one = await runCli(["dlq", "replay", APP_JS, bad, "-q", queue], qEnv);
      expect(one.code).toBe(1);
      expect(one.stderr).toContain(`${queue} ${bad}: cannot replay dead-lettered message`);
    } finally {
      raw.disconnect();
      if (worker.child.exitCode === null) worker.child.kill("SIGKILL");
    }
  });

  it("dlq replay --all stopped by SIGINT ends once the replays under way have ended and says how far it got", async () => {
    requireBuild();
    const queue = uniqueName("replaystop");
    const dlq = `${prefix}:dlq:{${queue}}`;
    const stream = `${prefix}:stream:{${queue}}`;
    const raw = rawRedis();
    try {
      const codec = new MessageCodec();
      const total = 5000;
      const fill = raw.pipeline();
      for (let i = 0; i < total; i++) {
        fill.xadd(dlq, "*", "data", encodeTask(codec).body, "error", "x", "failed_at", 1);
      }
      await fill.exec();
      const replaying = startCli(["dlq", "replay", APP_JS, "--all", "-q", queue], {
        ...env,
        CHICORY_WORKER_QUEUE: queue,
      });
      await eventually(async () => ((await raw.xlen(stream)) > 0 ? true : undefined)); // under way
      replaying.child.kill("SIGINT");
      const exit = await replaying.exited;
      expect(exit.code).toBe(130);
      const said =
        /interrupted by SIGINT: replayed (\d+) message\(s\); (\d+) left in the dead-letter queue \(.*\): run the command again to go on/.exec(
          exit.stderr,
        );
      expect(said).not.toBeNull();
      const [replayed, left] = [Number(said?.[1]), Number(said?.[2])];
      expect(left).toBeGreaterThan(0); // stopped before the end
      expect([replayed + left, await raw.xlen(stream), await raw.xlen(dlq)]).toEqual([total, replayed, left]);
    } finally {
      raw.disconnect();
    }
  });

  it("cleanup that fails on the backend after the broker's consumers were cleaned says what it removed", async () => {
    requireBuild();
    const cleanups: Cleanups = [];
    try {
      // the queues' keys (hash-tagged) and read-only on the worker list: the backend's
      // cleanup script is refused, the broker's is not
      const { url } = await aclUser(cleanups, `~${prefix}:*{*`, `%R~${prefix}:workers`, "&*", "+@all");
      const r = await runCli(["cleanup", APP_JS, "--stale-seconds", "3600"], { ...env, CHICORY_BROKER_URL: url });
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(
        "removed 0 stale consumer(s) before the failure below (queues cleaned: default; the worker records' cleanup failed, some may be removed)",
      );
      expect(r.stderr).toMatch(/NOPERM/);
    } finally {
      await runCleanups(cleanups);
    }
  });

  it("workers --min counts a stopping worker's heartbeat as not running", async () => {
    requireBuild();
    const raw = rawRedis();
    const host = uniqueName("probe-host");
    const stopping = uniqueName("stopping");
    const running = uniqueName("running");
    try {
      for (const [workerId, isRunning] of [
        [stopping, false],
        [running, true],
      ] as const) {
        const stats = idleWorkerStats(workerId, new Date(), { hostname: host, isRunning });
        await raw.set(`${prefix}:heartbeat:${workerId}`, JSON.stringify(stats), "EX", 30);
        await raw.zadd(`${prefix}:workers`, Date.now(), workerId);
      }
      const one = await runCli(["workers", APP_JS, "--host", host, "--min", "1"], env);
      expect([one.code, one.stderr]).toEqual([0, ""]);
      const two = await runCli(["workers", APP_JS, "--host", host, "--min", "2"], env);
      expect(two.code).toBe(1);
      expect(two.stderr).toBe(`chicory: 1 running worker(s) on host ${host}, fewer than --min 2\n`);
      expect(two.stdout).toMatch(new RegExp(`${stopping}.*stopped`));
    } finally {
      await raw.del(`${prefix}:heartbeat:${stopping}`, `${prefix}:heartbeat:${running}`);
      await raw.zrem(`${prefix}:workers`, stopping, running);
      raw.disconnect();
    }
  });

  it("workers shows a heartbeat stamped by a clock ahead of this host as such, not as 0s ago", async () => {
    requireBuild();
    const raw = rawRedis();
    const workerId = uniqueName("skewed");
    try {
      const stamp = Date.now() + 120_000;
      const stats = idleWorkerStats(workerId, new Date(stamp));
      await raw.set(`${prefix}:heartbeat:${workerId}`, JSON.stringify(stats), "EX", 30);
      await raw.zadd(`${prefix}:workers`, Date.now(), workerId);
      const before = Date.now();
      const r = await runCli(["workers", APP_JS], env);
      const after = Date.now();
      expect(r.code).toBe(0);
      const line = r.stdout.split("\n").find((l) => l.startsWith(workerId));
      // the CLI reads its clock somewhere between `before` and `after` (a slow start on a busy
      // machine takes seconds)
      const ahead = Number(/\b(\d+)s ahead \(clock skew\)/.exec(line ?? "")?.[1]);
      expect(ahead).toBeGreaterThanOrEqual(Math.floor((stamp - after) / 1000) - 1);
      expect(ahead).toBeLessThanOrEqual(Math.ceil((stamp - before) / 1000) + 1);
    } finally {
      raw.disconnect();
    }
  });
});

/** XLEN of `key` on the test Redis. */
async function rawRedisLength(key: string): Promise<number> {
  const raw = rawRedis();
  try {
    return await raw.xlen(key);
  } finally {
    raw.disconnect();
  }
}

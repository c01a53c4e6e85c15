/**
 * `chicory dlq replay|delete <id>` without `-q`, over several queues. On Redis a DLQ entry id
 * (`<ms>-<seq>`) is unique only within one queue's DLQ stream: two queues' DLQs can hold the
 * same id, and the command must refuse rather than act on whichever queue it looks at first.
 * On SQLite ids are unique, and the entry goes back to the queue whose DLQ holds it.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import Database from "better-sqlite3";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { MessageCodec } from "../../../src/core/message.js";
import { encodeTask } from "../../contract/contract-helpers.js";
import { skipUnless, uniqueName } from "../../helpers/services.js";
import { deletePrefix, rawRedis } from "../redis/redis-test-keys.js";
import { APP_JS, cliEnv, FIXTURES, requireBuild, runCli, sqliteTarget } from "./cli-process.js";

const skipRedis = await skipUnless("redis");

describe.skipIf(skipRedis)("chicory dlq replay|delete <id> on Redis, an id held by two queues' DLQs", () => {
  const prefix = uniqueName("clidlq");
  const codec = new MessageCodec();
  let raw: Redis;
  let qa = "";
  let qb = "";
  let env: NodeJS.ProcessEnv = {};
  const dlqKey = (queue: string) => `${prefix}:dlq:{${queue}}`;
  const streamKey = (queue: string) => `${prefix}:stream:{${queue}}`;

  /** Writes a dead letter of task `add` with entry id `id` into `queue`'s DLQ, as the broker does. */
  async function deadLetter(queue: string, id: string): Promise<void> {
    const task = encodeTask(codec, { name: "add", args: [1, 2] });
    await raw.xadd(
      dlqKey(queue),
      id,
      "data",
      task.body,
      "error",
      `died on ${queue}`,
      "failed_at",
      Date.now(),
      "retry_count",
      0,
      "id",
      task.id,
    );
  }

  beforeAll(() => {
    requireBuild();
    raw = rawRedis();
  });

  beforeEach(() => {
    qa = uniqueName("qa");
    qb = uniqueName("qb");
    env = cliEnv({
      CHICORY_BROKER_URL: "redis://127.0.0.1:6379/0",
      CHICORY_BROKER_REDIS_KEY_PREFIX: prefix,
      CHICORY_BACKEND_REDIS_KEY_PREFIX: prefix,
      CHICORY_WORKER_QUEUE: `${qa},${qb}`,
    });
  });

  afterEach(() => deletePrefix(prefix));

  afterAll(() => {
    raw.disconnect();
  });

  it("dlq replay and delete print one JSON object with --json, as the other commands do, and take -y", async () => {
    await deadLetter(qa, "1700000000000-1");
    await deadLetter(qa, "1700000000000-2");
    await raw.xadd(dlqKey(qa), "1700000000000-3", "data", "not json", "error", "bad", "failed_at", 1, "retry_count", 0);
    // -y asks nothing of these two, and is taken (scripts pass it to every command)
    const one = await runCli(["dlq", "replay", APP_JS, "1700000000000-1", "-q", qa, "--json", "-y"], env);
    expect([one.code, JSON.parse(one.stdout)]).toEqual([
      0,
      { queue: qa, messageId: "1700000000000-1", replayed: true, retriesReset: true },
    ]);
    const all = await runCli(["dlq", "replay", APP_JS, "--all", "-q", qa, "--json"], env);
    expect(all.code).toBe(1); // the unreadable entry stays
    expect(JSON.parse(all.stdout)).toMatchObject({
      replayed: 1,
      queues: [qa],
      notReplayed: [{ queue: qa, messageId: "1700000000000-3" }],
    });
    const deleted = await runCli(["dlq", "delete", APP_JS, "1700000000000-3", "-q", qa, "--json", "--yes"], env);
    expect([deleted.code, JSON.parse(deleted.stdout)]).toEqual([
      0,
      { queue: qa, messageId: "1700000000000-3", deleted: true },
    ]);
    expect(await raw.xlen(streamKey(qa))).toBe(2);
    expect(await raw.xlen(dlqKey(qa))).toBe(0);
  });

  it("dlq count and purge of a queue named __proto__ report its entries (no object prototype swallows the name)", async () => {
    const queue = "__proto__";
    await deadLetter(queue, "1700000000000-1");
    await deadLetter(queue, "1700000000000-2");
    const counted = await runCli(["dlq", "count", APP_JS, "-q", queue], env);
    expect([counted.code, counted.stdout.trim()]).toEqual([0, "2"]);
    const json = await runCli(["dlq", "count", APP_JS, "-q", queue, "--json"], env);
    expect(Object.entries(JSON.parse(json.stdout))).toEqual([["__proto__", 2]]);
    const purged = await runCli(["dlq", "purge", APP_JS, "-q", queue, "-y", "--json"], env);
    expect(purged.code).toBe(0);
    expect(Object.entries(JSON.parse(purged.stdout))).toEqual([["__proto__", 2]]);
    expect(await raw.xlen(dlqKey(queue))).toBe(0);
  });

  it("dlq list masks passwords in URLs among a task's arguments, id and error, in the table and the JSON (SPEC: never in CLI output)", async () => {
    const task = encodeTask(codec, {
      id: "sftp://backup:L0ngSecret@host/x",
      name: "add",
      args: ["postgres://admin:Hunter2Pw@db.example/app", { dsn: "x?password=S3cr3t&a=1" }],
    });
    // a quoted URL in the error: masked as text after JSON's escaping, it broke the JSON
    const error = 'hook failed: "https://api.example/hook?user=a&password=Qu0ted"';
    await raw.xadd(dlqKey(qa), "1700000000000-1", "data", task.body, "error", error, "failed_at", 1, "retry_count", 7);
    const json = await runCli(["dlq", "list", APP_JS, "-q", qa, "--json"], env);
    expect(json.code).toBe(0);
    expect(json.stdout).not.toMatch(/Hunter2Pw|S3cr3t|L0ngSecret|Qu0ted/);
    const [entry] = JSON.parse(json.stdout) as Array<{ args: unknown; taskId: string; error: string }>;
    expect(entry?.args).toEqual(["postgres://admin:***@db.example/app", { dsn: "x?password=***&a=1" }]);
    expect(entry?.taskId).toBe("sftp://backup:***@host/x");
    expect(entry?.error).toBe('hook failed: "https://api.example/hook?user=a&password=***"');
    const table = await runCli(["dlq", "list", APP_JS, "-q", qa], env);
    expect(table.code).toBe(0);
    expect(table.stdout).not.toMatch(/Hunter2Pw|S3cr3t|L0ngSecret|Qu0ted/);
    // the columns stay aligned: the masked task id is padded as shown
    const [header = "", row = ""] = table.stdout.split("\n");
    expect(row.slice(header.indexOf("RETRIES")).startsWith("7 ")).toBe(true);
  });

  it("dlq replay --all, several replays at once, lists the entries it left in DLQ order", async () => {
    const total = 300; // more than the replays run at once
    const bad: string[] = [];
    const fill = raw.pipeline();
    for (let i = 1; i <= total; i++) {
      const id = `1700000000000-${i}`;
      if (i % 25 === 0) {
        // refused: its task id is live (three round trips), before an unreadable body (one)
        const refused = encodeTask(codec, { name: "add", args: [i, 0] });
        fill.sadd(`${prefix}:unique:{${qa}}`, refused.id);
        fill.xadd(dlqKey(qa), id, "data", refused.body, "error", "x", "id", refused.id);
        bad.push(id);
      } else if (i % 25 === 1 && i > 1) {
        fill.xadd(dlqKey(qa), id, "data", "not json", "error", "bad", "failed_at", 1, "retry_count", 0);
        bad.push(id);
      } else {
        fill.xadd(dlqKey(qa), id, "data", encodeTask(codec, { name: "add", args: [i, 0] }).body, "error", "x");
      }
    }
    await fill.exec();
    const all = await runCli(["dlq", "replay", APP_JS, "--all", "-q", qa, "--json"], env);
    expect(all.code).toBe(1);
    const out = JSON.parse(all.stdout) as { replayed: number; notReplayed: { messageId: string; reason: string }[] };
    expect(out.replayed).toBe(total - bad.length);
    expect(out.notReplayed.map((e) => e.messageId)).toEqual(bad);
    expect(out.notReplayed[0]?.reason).toMatch(/already queued, delayed or running/);
    expect(out.notReplayed[1]?.reason).toMatch(/decode_error/);
    expect(await raw.xlen(streamKey(qa))).toBe(total - bad.length);
    expect((await raw.xrange(dlqKey(qa), "-", "+")).map(([id]) => id)).toEqual(bad);
  });

  it("dlq replay of an entry that cannot be replayed says how to remove it with the CLI, once", async () => {
    const id = "1700000000000-9";
    await raw.xadd(dlqKey(qa), id, "data", "not json", "error", "bad", "failed_at", Date.now(), "retry_count", 0);
    const r = await runCli(["dlq", "replay", APP_JS, id, "-q", qa], env);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toMatch(
      new RegExp(
        `^chicory: ${qa} ${id}: cannot replay .*\\(the entry stays in the DLQ\\) \\(remove it with: chicory dlq delete `,
      ),
    );
    expect(r.stderr).not.toContain("deleteFromDlq");
  });

  it("dlq list says on stderr how many entries --limit left out, per queue", async () => {
    for (let i = 1; i <= 3; i++) await deadLetter(qa, `1700000000000-${i}`);
    await deadLetter(qb, "1700000000000-1");
    const r = await runCli(["dlq", "list", APP_JS, "--limit", "2", "--json"], env);
    expect(r.code).toBe(0);
    expect((JSON.parse(r.stdout) as unknown[]).length).toBe(3); // 2 of qa, 1 of qb
    expect(r.stderr.trim()).toBe(
      `chicory: ${qa}: 1 more dead letters not listed (raise --limit, or list on with --after 1700000000000-2)`,
    );
    // closed by its reader (`| head`): no EPIPE stack trace, a quiet end
    const piped = await runCli(["dlq", "list", APP_JS, "--json"], env, { closeStdout: true });
    expect(piped.stderr).not.toMatch(/EPIPE|Unhandled/);
    expect(piped.code).toBe(0);
  });

  it("dlq list --after lists on past an entry id, of one queue", async () => {
    for (let i = 1; i <= 3; i++) await deadLetter(qa, `1700000000000-${i}`);
    const ids = (r: { stdout: string }) => (JSON.parse(r.stdout) as { messageId: string }[]).map((e) => e.messageId);
    const page = await runCli(
      ["dlq", "list", APP_JS, "-q", qa, "--after", "1700000000000-1", "--limit", "1", "--json"],
      env,
    );
    expect([page.code, ids(page)]).toEqual([0, ["1700000000000-2"]]);
    expect(page.stderr.trim()).toBe(
      `chicory: ${qa}: more dead letters not listed (raise --limit, or list on with --after 1700000000000-2)`,
    );
    const last = await runCli(["dlq", "list", APP_JS, "-q", qa, "--after", "1700000000000-2", "--json"], env);
    expect([last.code, ids(last), last.stderr]).toEqual([0, ["1700000000000-3"], ""]);
    const manyQueues = await runCli(["dlq", "list", APP_JS, "--after", "1700000000000-1"], env);
    expect(manyQueues.code).toBe(2);
    expect(manyQueues.stderr).toMatch(
      /^chicory: dlq list --after: entry ids belong to one queue's DLQ; name it with -q/,
    );
    const malformed = await runCli(["dlq", "list", APP_JS, "-q", qa, "--after", "1700000000000"], env);
    expect(malformed.code).toBe(2);
    expect(malformed.stderr).toMatch(/is not a Redis stream entry id/);
  });

  it("dlq replay --all reads each entry it leaves once: every listing goes on from the last one", async () => {
    const left = 600; // more than two listings' worth, before the entries it can replay
    const good = 40;
    const fill = raw.pipeline();
    for (let i = 1; i <= left; i++) fill.xadd(dlqKey(qa), `1700000000000-${i}`, "data", "not json", "error", "bad");
    for (let i = 1; i <= good; i++) {
      fill.xadd(dlqKey(qa), `1700000000001-${i}`, "data", encodeTask(codec, { name: "add", args: [i, 0] }).body);
    }
    await fill.exec();
    const log = path.join(mkdtempSync(path.join(os.tmpdir(), "chicory-listing-")), "calls.json");
    try {
      const app = path.join(FIXTURES, "cli-listing-app.mjs");
      const r = await runCli(["dlq", "replay", app, "--all", "-q", qa, "--json"], {
        ...env,
        CHICORY_TEST_LISTING_LOG: log,
      });
      expect(r.code).toBe(1);
      const out = JSON.parse(r.stdout) as { replayed: number; notReplayed: unknown[] };
      expect([out.replayed, out.notReplayed.length]).toEqual([good, left]);
      type Call = { method: string; after: string | null; count: number; listed: number; last: string | null };
      const calls = JSON.parse(readFileSync(log, "utf8")) as Call[];
      // the first listing from the start, every later one past the last entry listed before it
      expect(calls[0]?.method).toBe("getDlqMessages");
      for (let i = 1; i < calls.length; i++) {
        expect(calls[i]?.method, `listing ${i}`).toBe("getDlqMessagesAfter");
        expect(calls[i]?.after, `listing ${i}`).toBe(calls[i - 1]?.last);
      }
      // so each entry was read once
      expect(calls.reduce((sum, c) => sum + c.listed, 0)).toBe(left + good);
    } finally {
      rmSync(path.dirname(log), { recursive: true, force: true });
    }
  });

  it.each(["replay", "delete"])(
    "dlq %s without -q refuses (exit 2), names both queues, and touches neither",
    async (command) => {
      const id = "1700000000000-7";
      await deadLetter(qa, id);
      await deadLetter(qb, id);
      const r = await runCli(["dlq", command, APP_JS, id], env);
      expect(r.code).toBe(2);
      expect(r.stderr.trim()).toBe(
        `chicory: dead-letter entry ${id} is in the DLQ of several queues (${qa}, ${qb}): pass -q <queue> to say which`,
      );
      expect(r.stdout).toBe("");
      expect(await raw.xlen(dlqKey(qa))).toBe(1);
      expect(await raw.xlen(dlqKey(qb))).toBe(1);
      expect(await raw.xlen(streamKey(qa))).toBe(0);
      expect(await raw.xlen(streamKey(qb))).toBe(0);
      // several -q that each hold it are as ambiguous
      const both = await runCli(["dlq", command, APP_JS, id, "-q", qa, "-q", qb], env);
      expect(both.code).toBe(2);
      expect(await raw.xlen(dlqKey(qa))).toBe(1);
      expect(await raw.xlen(dlqKey(qb))).toBe(1);
    },
  );

  it("with -q it acts on that queue's entry only; once one queue holds the id, no -q is needed", async () => {
    const id = "1700000000000-3";
    await deadLetter(qa, id);
    await deadLetter(qb, id);
    const deleted = await runCli(["dlq", "delete", APP_JS, id, "-q", qa], env);
    expect(deleted.code).toBe(0);
    expect(deleted.stdout.trim()).toBe(`deleted ${id} from the dead-letter queue of ${qa}`);
    expect(await raw.xlen(dlqKey(qa))).toBe(0);
    expect(await raw.xlen(dlqKey(qb))).toBe(1);

    const replayed = await runCli(["dlq", "replay", APP_JS, id], env);
    expect(replayed.code).toBe(0);
    expect(replayed.stdout.trim()).toBe(`replayed ${id} to queue ${qb} (retries reset)`);
    expect(await raw.xlen(dlqKey(qb))).toBe(0);
    expect(await raw.xlen(streamKey(qb))).toBe(1);
    expect(await raw.xlen(streamKey(qa))).toBe(0);
  });

  it("an unknown id is a failure (exit 1); an id of another form a usage error (exit 2)", async () => {
    await deadLetter(qa, "1700000000000-1");
    const unknown = await runCli(["dlq", "delete", APP_JS, "1700000000000-2"], env);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/^chicory: no dead-letter entry 1700000000000-2 in queue\(s\) /);
    const malformed = await runCli(["dlq", "replay", APP_JS, "1700000000000"], env);
    expect(malformed.code).toBe(2);
    expect(malformed.stderr).toMatch(/is not a Redis stream entry id/);
    expect(await raw.xlen(dlqKey(qa))).toBe(1);
  });
});

describe("chicory dlq replay <id> on SQLite, the entry in the second queue's DLQ", () => {
  const target = sqliteTarget();
  const codec = new MessageCodec();

  afterAll(() => target.remove());

  /** Writes a dead letter of task `add` that died on `queue` (the schema created first); returns its id. */
  async function deadLetter(env: NodeJS.ProcessEnv, queue: string): Promise<string> {
    expect((await runCli(["dlq", "count", APP_JS], env)).code).toBe(0); // creates the schema
    const task = encodeTask(codec, { name: "add", args: [1, 2] });
    const db = new Database(target.url.slice("sqlite:".length));
    try {
      const row = db
        .prepare(
          "INSERT INTO chicory_dlq (queue, task_id, body, error, failed_at, retry_count) VALUES (?, ?, ?, ?, ?, 0)",
        )
        .run(queue, task.id, task.body, `died on ${queue}`, Date.now());
      return String(row.lastInsertRowid);
    } finally {
      db.close();
    }
  }

  it("goes back to the queue whose DLQ holds it, not to the first queue", async () => {
    requireBuild();
    const env = cliEnv({ CHICORY_BROKER_URL: target.url, CHICORY_WORKER_QUEUE: "qa,qb" });
    const id = await deadLetter(env, "qb");
    const r = await runCli(["dlq", "replay", APP_JS, id], env);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe(`replayed ${id} to queue qb (retries reset)`);
    const stats = JSON.parse((await runCli(["queue", "stats", APP_JS, "--json"], env)).stdout) as Array<{
      queue: string;
      size: number;
      dlq: number;
    }>;
    expect(stats.find((s) => s.queue === "qb")).toMatchObject({ size: 1, dlq: 0 });
    expect(stats.find((s) => s.queue === "qa")).toMatchObject({ size: 0, dlq: 0 });
  });

  it("dlq replay --all counts an entry whose old record could not be deleted as replayed, and lists it", async () => {
    requireBuild();
    const env = cliEnv({ CHICORY_BROKER_URL: target.url, CHICORY_WORKER_QUEUE: "kept" });
    const ids = [await deadLetter(env, "kept"), await deadLetter(env, "kept")];
    const app = `${FIXTURES}/cli-record-kept-app.mjs`;
    const r = await runCli(["dlq", "replay", app, "--all", "-q", "kept"], env);
    expect(r.code).toBe(0); // replayed: only the old record stays
    const lines = r.stdout.trim().split("\n");
    expect(lines[0]).toBe("replayed 2 message(s) from the dead-letter queue (kept)");
    expect(lines.slice(1)).toEqual(
      ids.map((id) => expect.stringMatching(new RegExp(`^replayed, old record kept: kept ${id}: .*connection reset`))),
    );
    const stats = JSON.parse((await runCli(["queue", "stats", APP_JS, "--json", "-q", "kept"], env)).stdout);
    expect(stats).toMatchObject([{ queue: "kept", size: 2, dlq: 0 }]);
  });

  it("dlq replay <id> of an entry whose old record could not be deleted says it replayed it, and the record kept (exit 0, as --all)", async () => {
    requireBuild();
    const env = cliEnv({ CHICORY_BROKER_URL: target.url, CHICORY_WORKER_QUEUE: "kept1" });
    const [plain, json] = [await deadLetter(env, "kept1"), await deadLetter(env, "kept1")];
    const app = `${FIXTURES}/cli-record-kept-app.mjs`;
    // before: exit 1, nothing on stdout, though the entry had left the DLQ
    const r = await runCli(["dlq", "replay", app, plain, "-q", "kept1"], env);
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split("\n");
    expect(lines[0]).toBe(`replayed ${plain} to queue kept1 (retries reset)`);
    expect(lines[1]).toMatch(/^old record kept: .*connection reset/);
    const j = await runCli(["dlq", "replay", app, json, "-q", "kept1", "--json"], env);
    expect(j.code).toBe(0);
    expect(JSON.parse(j.stdout)).toMatchObject({
      queue: "kept1",
      messageId: json,
      replayed: true,
      retriesReset: true,
      recordKept: expect.stringMatching(/connection reset/),
    });
    const stats = JSON.parse((await runCli(["queue", "stats", APP_JS, "--json", "-q", "kept1"], env)).stdout);
    expect(stats).toMatchObject([{ queue: "kept1", size: 2, dlq: 0 }]);
  });

  it("with -q naming another queue, or with no queue of the app holding it, the entry stays (exit 1)", async () => {
    requireBuild();
    const env = cliEnv({ CHICORY_BROKER_URL: target.url, CHICORY_WORKER_QUEUE: "qa,qb" });
    const id = await deadLetter(env, "other");
    const statsNow = async () =>
      JSON.parse((await runCli(["queue", "stats", APP_JS, "--json", "-q", "qa,qb,other"], env)).stdout) as Array<{
        queue: string;
        size: number;
        dlq: number;
      }>;
    const before = await statsNow();
    const named = await runCli(["dlq", "replay", APP_JS, id, "-q", "qa"], env);
    expect(named.code).toBe(1);
    expect(named.stderr).toMatch(new RegExp(`^chicory: no dead-letter entry ${id} in queue\\(s\\) qa`));
    const unnamed = await runCli(["dlq", "replay", APP_JS, id], env);
    expect(unnamed.code).toBe(1);
    expect(unnamed.stderr).toMatch(new RegExp(`^chicory: no dead-letter entry ${id} in queue\\(s\\) qa, qb`));
    // nothing moved: the entry is still in the DLQ of the queue it died on
    expect(await statsNow()).toEqual(before);
    expect(before.find((q) => q.queue === "other")).toMatchObject({ size: 0, dlq: 1 });
  });
});

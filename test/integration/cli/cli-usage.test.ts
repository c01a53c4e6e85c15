/**
 * The built `chicory` binary: version, help, usage errors (exit 2), module loading (.ts with an
 * enum, .mts default export, .mjs), masked passwords in the banner and in errors.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { APP_JS, APP_TS, cliEnv, FIXTURES, ROOT, requireBuild, runCli, sqliteTarget } from "./cli-process.js";

const target = sqliteTarget();
const env = cliEnv({ CHICORY_BROKER_URL: target.url });

beforeAll(() => requireBuild());
afterAll(() => target.remove());

function oneLineError(stderr: string): string {
  const lines = stderr.trim().split("\n");
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^chicory: /);
  return lines[0] ?? "";
}

describe("chicory CLI basics", () => {
  it("--version prints the package version", async () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string };
    const r = await runCli(["--version"], env);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe(pkg.version);
  });

  it("--help lists every command; subcommand help shows its options", async () => {
    const r = await runCli(["--help"], env);
    expect(r.code).toBe(0);
    for (const command of ["worker", "workers", "cleanup", "dlq", "queue", "enqueue", "result", "demo"]) {
      expect(r.stdout).toContain(command);
    }
    const worker = await runCli(["worker", "--help"], env);
    expect(worker.code).toBe(0);
    for (const option of [
      "--workers",
      "--concurrency",
      "--queue",
      "--no-dlq",
      "--heartbeat-ttl",
      "--shutdown-timeout",
    ]) {
      expect(worker.stdout).toContain(option);
    }
  });

  it.each([
    [["frobnicate"], /unknown command 'frobnicate'/],
    [["worker", APP_TS, "-c", "abc"], /concurrency.*abc/],
    [["worker", APP_TS, "-w", "0"], /workers.*0/],
    [["worker", APP_TS, "--heartbeat-interval", "soon"], /heartbeat-interval.*soon/],
    [["worker", APP_TS, "--log-level", "loud"], /log-level.*loud/],
    [["worker", `${FIXTURES}/no-such-app.ts`], /module not found: test\/fixtures\/no-such-app\.ts/],
    [["worker", `${APP_TS}:nope`], /has no export "nope"; exports found: .*\badd\b.*\bapp\b/],
    [["worker", `${APP_TS}:notAnApp`], /export "notAnApp" of .* is not a Chicory app/],
    [["worker", `${FIXTURES}/cli-not-app.ts`], /export "app" of .* is not a Chicory app \(it is a number\)/],
    [["worker", APP_TS, "--heartbeat-interval", "10", "--heartbeat-ttl", "5"], /heartbeatTtl.*must exceed/],
    [["enqueue", APP_TS, "add", "[1, 2"], /arguments must be a JSON array/],
    [["enqueue", APP_TS, "add", '{"a": 1}'], /arguments must be a JSON array/],
    [
      ["enqueue", APP_TS, "add", "1", "2"],
      /arguments must be one JSON array, quoted as one shell word: '\[1, 2\]' \(got 2 words: 1 2\)/,
    ],
    [["enqueue", APP_TS, "nope"], /task "nope" is not registered .*tasks: add, boom/],
    [["dlq", "replay", APP_TS], /pass a message id, or --all/],
    // a typo must not fork hundreds of processes
    [["worker", APP_TS, "-w", "500"], /workers.*from 1 to 256.*500/],
    [["result", APP_TS, ""], /task id: expected 1-255 characters, got ""/],
    [["result", APP_TS, "some-id", "--timeout", "5"], /--timeout needs --wait/],
    [["enqueue", APP_TS, "add", "[1, 2]", "--timeout", "5"], /--timeout needs --wait/],
  ])("usage error %j exits 2 with one line", async (args, pattern) => {
    const r = await runCli(args, env);
    expect(r.code).toBe(2);
    expect(oneLineError(r.stderr)).toMatch(pattern);
  });

  it("a module that does not parse or link is a usage error (2); one that throws while it runs is a failure (1)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "chicory-cli-modules-"));
    try {
      const modules: Array<[string, string, number, RegExp]> = [
        ["syntax.ts", "export const app = { a: 1 ;\n", 2, /cannot load .*syntax\.ts: .*Expected/],
        ["syntax.mjs", "export const app = ;\n", 2, /cannot load .*syntax\.mjs: Unexpected token/],
        ["missing.mjs", 'import "./nope.js";\n', 2, /cannot load .*missing\.mjs: Cannot find module/],
        ["link.mjs", 'import { nope } from "node:fs";\nexport const app = nope;\n', 2, /does not provide an export/],
        ["throws.mjs", 'throw new Error("config server down");\n', 1, /cannot load .*throws\.mjs: config server down/],
        ["json.mjs", 'JSON.parse("{bad");\n', 1, /cannot load .*json\.mjs: .*JSON/],
        ["json.ts", 'JSON.parse("{bad");\nexport const app = 1;\n', 1, /cannot load .*json\.ts: .*JSON/],
      ];
      for (const [name, source, code, pattern] of modules) {
        writeFileSync(join(dir, name), source);
        const r = await runCli(["queue", "stats", join(dir, name)], env);
        expect([name, r.code]).toEqual([name, code]);
        expect(oneLineError(r.stderr)).toMatch(pattern);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("no command prints the help and exits 2", async () => {
    const r = await runCli([], env);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("Usage: chicory");
  });

  it("loads a .ts module with an enum, a .mts default export and a .mjs module, with no build step", async () => {
    const ts = await runCli(["enqueue", APP_TS, "paint", '["green"]'], env);
    expect(ts.stderr).toBe("");
    expect(ts.code).toBe(0);
    expect(ts.stdout.trim()).toMatch(/^[0-9a-f-]{36}$/);
    const mts = await runCli(["queue", "stats", `${FIXTURES}/cli-default-app.mts`, "--json"], env);
    expect(mts.code).toBe(0);
    expect(JSON.parse(mts.stdout)).toEqual([{ queue: "default", size: 1, pending: 0, consumers: 0, dlq: 0 }]);
    const mjs = await runCli(["queue", "purge", APP_JS, "--yes"], env);
    expect(mjs.code).toBe(0);
    expect(mjs.stdout).toContain("purged 1 waiting message(s)");
  });

  it("a named export selects another app; its task queues are covered by default", async () => {
    const r = await runCli(["queue", "stats", `${APP_TS}:mailApp`, "--json"], env);
    expect(r.code).toBe(0);
    const queues = (JSON.parse(r.stdout) as Array<{ queue: string }>).map((row) => row.queue);
    expect(queues).toEqual(["default", "mail"]);
  });

  it("a command that needs results, on an app with no result backend, is a usage error (2)", async () => {
    const r = await runCli(["result", APP_JS, "some-task-id"], cliEnv({ CHICORY_BROKER_URL: "amqp://127.0.0.1:1" }));
    expect(oneLineError(r.stderr)).toMatch(/needs a result backend, and this app has none/);
    expect(r.code).toBe(2);
  });

  it("dlq list --after on RabbitMQ is a usage error (2) said before anything else, without connecting", async () => {
    const r = await runCli(
      ["dlq", "list", APP_JS, "--after", "x"],
      cliEnv({ CHICORY_BROKER_URL: "amqp://127.0.0.1:1" }),
    );
    expect(oneLineError(r.stderr)).toBe(
      "chicory: dlq list --after: the rabbitmq broker cannot list a DLQ past an entry id",
    );
    expect(r.code).toBe(2);
  });

  it("a command on an in-process broker or backend (memory://) is a usage error (2): nothing is enqueued where no one reads", async () => {
    const memory = cliEnv({ CHICORY_BROKER_URL: "memory://" });
    const enqueue = await runCli(["enqueue", APP_TS, "add", "[1, 2]"], memory);
    expect(enqueue.stdout).toBe("");
    expect(oneLineError(enqueue.stderr)).toMatch(/broker \(memory:\/\/\) lives in this process only/);
    expect(enqueue.code).toBe(2);
    const stats = await runCli(["queue", "stats", APP_TS], memory);
    expect(oneLineError(stats.stderr)).toMatch(/lives in this process only/);
    expect(stats.code).toBe(2);
    const result = await runCli(
      ["result", APP_TS, "some-task-id"],
      cliEnv({ ...env, CHICORY_BACKEND_URL: "memory://" }),
    );
    expect(oneLineError(result.stderr)).toMatch(
      /result backend other processes share.*\(memory:\/\/\) lives in this process only/,
    );
    expect(result.code).toBe(2);
    const sqliteMemory = await runCli(
      ["result", APP_TS, "some-task-id"],
      cliEnv({ ...env, CHICORY_BACKEND_URL: "sqlite::memory:" }),
    );
    expect(oneLineError(sqliteMemory.stderr)).toMatch(/\(sqlite::memory:\) lives in this process only/);
    expect(sqliteMemory.code).toBe(2);
  });

  it("masks passwords in the banner and in the unreachable-broker error (exit 1)", async () => {
    const secret = "s3cr3t-Pa55";
    const url = `redis://user:${secret}@127.0.0.1:1/0`;
    const r = await runCli(["worker", APP_TS, "--log-level", "ERROR"], cliEnv({ CHICORY_BROKER_URL: url }));
    expect(r.code).toBe(1);
    expect(r.stdout + r.stderr).not.toContain(secret);
    expect(r.stderr).toContain("redis://user:***@127.0.0.1:1/0");
    const errorLines = r.stderr.split("\n").filter((line) => line.startsWith("chicory: "));
    expect(errorLines).toHaveLength(1);
    expect(errorLines[0]).toContain("127.0.0.1:1");
    const stats = await runCli(["queue", "stats", APP_TS], cliEnv({ CHICORY_BROKER_URL: url }));
    expect(stats.code).toBe(1);
    expect(stats.stderr).not.toContain(secret);
    expect(oneLineError(stats.stderr)).toContain("user:***@");
  });

  it("prints a stack only at --log-level DEBUG", async () => {
    const url = "redis://127.0.0.1:1/0";
    const quiet = await runCli(["queue", "stats", APP_JS], cliEnv({ CHICORY_BROKER_URL: url }));
    expect(quiet.stderr).not.toMatch(/\n\s+at /);
    const debug = await runCli(["queue", "stats", APP_JS, "--log-level", "DEBUG"], cliEnv({ CHICORY_BROKER_URL: url }));
    expect(debug.code).toBe(1);
    expect(debug.stderr).toMatch(/\n\s+at /);
  });
});

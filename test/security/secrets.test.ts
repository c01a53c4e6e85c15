/**
 * Secrets never leak (RELIABILITY §2.10 A10, SPEC §8): a canary password in broker and backend
 * URLs (unreachable ports) and a DSN inside a thrown task error. Everything observable is
 * captured and grepped: every log line of an in-process worker, error messages, stacks and
 * causes, `displayUrl`, `getStats()`, `healthcheck()`, stored results, DLQ entries, and the
 * stdout/stderr of the `chicory worker` CLI.
 */
import { inspect } from "node:util";
import { afterEach, describe, expect, it } from "vitest";
import { Chicory, MemoryBackend, MemoryBroker, Worker } from "../../src/index.js";
import { CLI, cliEnv, requireBuild, runCli } from "../integration/cli/cli-process.js";
import { eventually, recordingLogger } from "./security-helpers.js";

const CANARY = "Canary7pw9Xq";
const TASK_CANARY = "TaskCanary3zz";

const URLS = {
  redisBroker: `redis://user:${CANARY}@127.0.0.1:1/0`,
  rabbitBroker: `amqp://user:${CANARY}@127.0.0.1:1/vh`,
  postgresBackend: `postgres://u:${CANARY}@127.0.0.1:1/db`,
  mysqlBackend: `mysql://u:${CANARY}@127.0.0.1:1/db`,
  redisBackend: `rediss://:${CANARY}@127.0.0.1:1/2`,
  encodedPassword: `redis://user:${CANARY}%40%2F%3Ax@127.0.0.1:1/0`,
};

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()?.();
});

/** Everything an error shows: message, stack, causes, util.inspect. */
function errorText(error: unknown): string {
  const parts: string[] = [inspect(error, { depth: 6 })];
  let current: unknown = error;
  for (let i = 0; i < 6 && current instanceof Error; i++) {
    parts.push(current.message, current.stack ?? "");
    current = current.cause;
  }
  return parts.join("\n");
}

function expectNoCanary(text: string, secret: string, where: string): void {
  const at = text.indexOf(secret);
  if (at >= 0) throw new Error(`${where} leaks the secret: ...${text.slice(Math.max(0, at - 120), at + 40)}...`);
}

describe("A10: DSN passwords never appear", () => {
  const cases: Array<[string, { broker?: string; backend?: string }]> = [
    ["redis broker", { broker: URLS.redisBroker }],
    ["rabbitmq broker", { broker: URLS.rabbitBroker }],
    ["postgres backend", { backend: URLS.postgresBackend }],
    ["mysql backend", { backend: URLS.mysqlBackend }],
    ["redis backend (TLS)", { backend: URLS.redisBackend }],
    ["url-encoded password", { broker: URLS.encodedPassword }],
  ];

  for (const [label, spec] of cases) {
    it(`${label}: logs, start error, displayUrl, stats and healthcheck`, async () => {
      const logger = recordingLogger();
      const seen: string[] = [];
      const env = {
        CHICORY_BROKER_REDIS_CONNECT_TIMEOUT: "1",
        CHICORY_BROKER_RABBITMQ_RECONNECT_DELAY: "0.1",
      };
      const app = new Chicory({
        broker: spec.broker ?? new MemoryBroker(),
        backend: spec.backend ?? new MemoryBackend(),
        config: { env },
      });
      cleanups.push(() => app.disconnect().catch(() => undefined));
      seen.push(app.broker.displayUrl, JSON.stringify(app.config.worker));
      const worker = new Worker(app, { logger, heartbeatInterval: 1, heartbeatTtl: 2 });
      const started = await Promise.race([
        worker.start().then(
          () => "started",
          (error: unknown) => errorText(error),
        ),
        new Promise<string>((r) => setTimeout(() => r("still connecting"), 8000)),
      ]);
      seen.push(started);
      seen.push(JSON.stringify(worker.getStats()));
      seen.push(JSON.stringify(await worker.healthcheck()));
      seen.push(JSON.stringify(await app.broker.healthcheck()));
      if (app.backend) seen.push(JSON.stringify(await app.backend.healthcheck()));
      await worker.stop(1).catch((error: unknown) => seen.push(errorText(error)));
      await app.disconnect().catch((error: unknown) => seen.push(errorText(error)));
      seen.push(...logger.lines);
      for (const [i, text] of seen.entries()) expectNoCanary(text, CANARY, `${label} output #${i}`);
      expect(seen.join("\n")).not.toContain(CANARY);
    }, 20_000);
  }

  it("a mistyped URL (not scheme://user:password@) keeps its password out of the configuration error", () => {
    const typos = [
      `redis:/app:${CANARY}@127.0.0.1:1/0`,
      `redis//app:${CANARY}@127.0.0.1:1`,
      `app:${CANARY}@127.0.0.1:1`,
      `redis:app:${CANARY}@127.0.0.1:1`,
      `redis ://app:${CANARY}@127.0.0.1:1`,
      `postgres//u:${CANARY}@127.0.0.1:1/db`,
    ];
    for (const url of typos) {
      for (const role of ["broker", "backend"] as const) {
        let error: unknown;
        try {
          new Chicory({ broker: role === "broker" ? url : "memory", backend: role === "backend" ? url : null });
        } catch (caught) {
          error = caught;
        }
        expect(error, `${role} ${url}`).toBeInstanceOf(Error);
        expect(inspect(error).toLowerCase(), `${role} ${url}`).not.toContain(CANARY.toLowerCase());
      }
    }
  });

  /** The error building an app on `url` (as its broker or backend) throws; the test fails without one. */
  function buildError(url: string, role: "broker" | "backend"): Error {
    let error: unknown;
    try {
      new Chicory({ broker: role === "broker" ? url : "memory", backend: role === "backend" ? url : null });
    } catch (caught) {
      error = caught;
    }
    expect(error, url).toBeInstanceOf(Error);
    return error as Error;
  }

  it("a password with an unencoded / is refused before any connection, and no part of it is shown", () => {
    // The parser ends the host at the `/`: "pa" would be the password, "Canary7" the host (an
    // ENOTFOUND naming it) and the rest the path (a database error quoting it).
    const [head, tail] = [CANARY.slice(0, 7), CANARY.slice(7)];
    const urls: Array<[string, "broker" | "backend"]> = [
      [`redis://:pa@${head}/${tail}:x@127.0.0.1:6379/0`, "broker"],
      [`amqp://u:pa@${head}/${tail}:x@127.0.0.1:5672/`, "broker"],
      [`postgres://u:pa@${head}/${tail}:x@127.0.0.1:5432/test`, "backend"],
      [`mysql://u:pa@${head}/${tail}:x@127.0.0.1:3306/test`, "backend"],
      [`rediss://:pa@${head}/${tail}@127.0.0.1:6379/0`, "backend"],
    ];
    for (const [url, role] of urls) {
      const error = buildError(url, role);
      expect(error.message, url).toMatch(/an "@" after the host; percent-encode/);
      for (const part of [head, tail]) expect(errorText(error), url).not.toContain(part);
    }
    // a database or vhost named with an "@" is no such URL
    for (const [broker, backend] of [
      ["amqp://u:p@127.0.0.1:5672/team@prod", null],
      ["memory", "postgres://u:p@127.0.0.1:5432/my@db"],
    ] as const) {
      expect(() => new Chicory({ broker, backend })).not.toThrow();
    }
  });

  it("a password with an unencoded ? or # is refused before any connection, and no part of it is shown", () => {
    // The parser ends the authority at the `?`/`#`: the user name would be the host, the rest of
    // the password the port, and the remainder a query or fragment, dropped silently.
    const [head, tail] = [CANARY.slice(0, 7), CANARY.slice(7)];
    const urls: Array<[string, "broker" | "backend", string]> = [
      [`amqp://u:${head}#${tail}@127.0.0.1:5672/`, "broker", 'a "#" in the user name or password ends it there'],
      [`amqp://u:${head}?${tail}@127.0.0.1:5672/`, "broker", 'a "?" in the user name or password ends it there'],
      [`postgres://u:${head}#${tail}@127.0.0.1:5432/test`, "backend", 'a "#" in the user name'],
      [`mysql://u:${head}?${tail}@127.0.0.1:3306/test`, "backend", 'a "?" in the user name'],
      // in the user name; an "=" after the "#" (a base64 password); a "/" before the "?"
      [`amqp://${head}#${tail}:p@127.0.0.1:5672/`, "broker", 'a "#" in the user name'],
      [`amqp://u:${head}#${tail}=@127.0.0.1:5672/`, "broker", 'a "#" in the user name'],
      [`amqp://u:${head}/${tail}?x@127.0.0.1:5672/`, "broker", 'an "@" after the host'],
    ];
    for (const [url, role, reason] of urls) {
      const error = buildError(url, role);
      expect(error.message, url).toContain(reason);
      expect(error.message, url).toContain("percent-encode @ : / ? # % in a user name or password");
      for (const part of [head, tail]) expect(errorText(error), url).not.toContain(part);
    }
    // a query (key=value) that holds an "@", an IPv6 host, a user without a password, escapes
    for (const [broker, backend] of [
      ["amqp://u:p@127.0.0.1:5672?heartbeat=5&name=a@b", null],
      ["amqp://127.0.0.1:5672?name=a@b", null],
      ["amqp://[::1]:5672?name=a@b", null],
      ["amqp://u@127.0.0.1:5672?heartbeat=5", null],
      ["amqp://u:p%23q%3Fr%2Fs%40t@127.0.0.1:5672/", null],
      ["memory", "postgres://u:p@127.0.0.1:5432/db?application_name=a@b"],
      ["memory", "postgres://u:p@[::1]:5432/db"],
    ] as const) {
      expect(() => new Chicory({ broker, backend }), `${broker} ${backend}`).not.toThrow();
    }
  });

  it("a DSN inside a thrown task error is masked in logs, the stored result and the DLQ", async () => {
    const logger = recordingLogger();
    const broker = new MemoryBroker();
    const backend = new MemoryBackend();
    const app = new Chicory({ broker, backend, config: { env: {} } });
    cleanups.push(() => app.disconnect());
    const leaky = app.task({ name: "leaky" }, async () => {
      throw new Error(`cannot reach postgres://app:${TASK_CANARY}@db.internal:5432/x (redis://:${TASK_CANARY}@r:6379)`);
    });
    const worker = new Worker(app, { logger, useDeadLetterQueue: true, concurrency: 2 });
    await worker.start();
    cleanups.push(() => worker.stop(1));
    const r = await leaky.delay();
    const error = await r.get({ timeout: 5 }).catch((e: unknown) => e);
    await eventually(async () => (await broker.getDlqCount("default")) === 1);
    const seen = [
      errorText(error),
      JSON.stringify(await backend.getResult(r.taskId)),
      JSON.stringify(await broker.getDlqMessages("default")),
      ...logger.lines,
    ];
    for (const [i, text] of seen.entries()) expectNoCanary(text, TASK_CANARY, `task error output #${i}`);
    expect(seen.join("\n")).toContain("postgres://app:***@db.internal:5432/x");
  });
});

describe("A10: the chicory CLI", () => {
  const runs: Array<[string, Record<string, string>]> = [
    ["unreachable redis broker", { CHICORY_BROKER_URL: URLS.redisBroker }],
    ["unreachable rabbitmq broker", { CHICORY_BROKER_URL: URLS.rabbitBroker }],
    ["unreachable postgres backend", { CHICORY_BROKER_URL: "memory", CHICORY_BACKEND_URL: URLS.postgresBackend }],
  ];
  for (const [label, env] of runs) {
    it(`worker with ${label}: stdout and stderr never show the password`, async () => {
      requireBuild();
      const result = await runCli(
        ["worker", "test/fixtures/cli-app.mjs", "-c", "1"],
        cliEnv({ ...env, CHICORY_WORKER_LOG_LEVEL: "DEBUG", CHICORY_BROKER_REDIS_CONNECT_TIMEOUT: "1" }),
        { timeoutMs: 15_000 },
      );
      const output = `${result.stdout}\n${result.stderr}`;
      expectNoCanary(output, CANARY, `${CLI} ${label}`);
      expect(output.length).toBeGreaterThan(0);
      // it did say what went wrong, with the URL masked
      expect(output).toMatch(/\*\*\*|unreachable|connect|ECONNREFUSED/i);
    }, 20_000);
  }
});

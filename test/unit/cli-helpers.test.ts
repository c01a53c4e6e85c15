/** Pure helpers of the CLI: module spec parsing, secret masking, error lines, tables, child args. */
import { resolve } from "node:path";
import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import { Chicory } from "../../src/app.js";
import { RedisBackend } from "../../src/backends/redis/index.js";
import { RabbitMqBroker } from "../../src/brokers/rabbitmq/index.js";
import { RedisBroker } from "../../src/brokers/redis/index.js";
import { bannerLines } from "../../src/cli/banner.js";
import { confirmDeletion, requireConfirmable } from "../../src/cli/confirm.js";
import { parseModuleSpec } from "../../src/cli/load-app.js";
import {
  CliFailure,
  CliUsageError,
  errorLine,
  exitCodeFor,
  formatTable,
  maskSecrets,
  printable,
  truncate,
} from "../../src/cli/output.js";
import { childArgs } from "../../src/cli/worker.js";
import { silentLogger } from "../../src/core/logger.js";
import { ConfigurationError } from "../../src/errors.js";
import { Worker } from "../../src/worker/worker.js";

describe("CLI helpers", () => {
  it.each([
    ["app.ts", { file: "app.ts", exportName: undefined }],
    ["./src/app.ts:myApp", { file: "./src/app.ts", exportName: "myApp" }],
    ["C:\\work\\app.ts", { file: "C:\\work\\app.ts", exportName: undefined }],
    ["C:\\work\\app.ts:app", { file: "C:\\work\\app.ts", exportName: "app" }],
    ["dir:with:colons/app.mjs", { file: "dir:with:colons/app.mjs", exportName: undefined }],
  ])("parseModuleSpec(%j)", (spec, expected) => {
    expect(parseModuleSpec(spec)).toEqual(expected);
  });

  it("masks every URL password and password= parameter", () => {
    const text = "a redis://u:p4ss@h:1/0 and amqp://:x@y and postgres://h/db?password=zz&x=1";
    expect(maskSecrets(text)).toBe("a redis://u:***@h:1/0 and amqp://:***@y and postgres://h/db?password=***&x=1");
    // an unencoded @ in the user name or the password
    expect(maskSecrets("to amqp://us@er:Sup3rSecret@127.0.0.1:5672/ failed")).toBe(
      "to amqp://us@er:***@127.0.0.1:5672/ failed",
    );
    expect(maskSecrets("to amqp://guest:s3cr@t@127.0.0.1:5672/ failed")).toBe(
      "to amqp://guest:***@127.0.0.1:5672/ failed",
    );
  });

  it("errorLine joins causes on one line, masks secrets, and maps codes to exit codes", () => {
    const cause = new Error("connect ECONNREFUSED\n  at redis://u:pw@h:1");
    const error = new Error("broker unreachable", { cause });
    expect(errorLine(error)).toBe("broker unreachable: connect ECONNREFUSED; at redis://u:***@h:1");
    expect(exitCodeFor(error)).toBe(1);
    expect(exitCodeFor(new ConfigurationError("bad"))).toBe(2);
    expect(exitCodeFor({ code: "VALIDATION_ERROR" })).toBe(2);
  });

  it("formats tables and truncates", () => {
    expect(formatTable(["A", "BB"], [["xxx", "y"]])).toBe("A    BB\nxxx  y");
    expect(truncate("abcdef", 4)).toBe("abc…");
  });

  it("childArgs repeats the worker options without --workers", () => {
    expect(
      childArgs("app.ts:app", { workers: 3, concurrency: 2, queue: ["a", "b"], dlq: false, heartbeatInterval: 1 }),
    ).toEqual([
      "worker",
      "app.ts:app",
      "--concurrency",
      "2",
      "--queue",
      "a",
      "--queue",
      "b",
      "--no-dlq",
      "--heartbeat-interval",
      "1",
    ]);
  });
});

describe("CLI output of text from queues and stored errors", () => {
  it("shows control characters (terminal escape sequences, carriage returns) as \\xHH escapes, in tables and error lines", () => {
    const hostile = "boom\u001b]0;PWNED\u0007\u001b[2K\rfake row";
    const table = formatTable(["TASK", "ERROR"], [["t\u001b[41mx", hostile]]);
    expect([...table].filter((c) => c !== "\n" && (c < " " || (c >= "\u007f" && c <= "\u009f")))).toEqual([]);
    expect(table).toContain("\\x1b]0;PWNED\\x07\\x1b[2K\\x0dfake row");
    expect(truncate(hostile, 80)).toBe("boom\\x1b]0;PWNED\\x07\\x1b[2K\\x0dfake row");
    expect(errorLine(new Error(hostile))).toBe("boom\\x1b]0;PWNED\\x07\\x1b[2K\\x0dfake row");
    expect(printable("tab\tstays")).toBe("tab\tstays");
    // a newline or tab in a cell (a task id, say) would break the table's rows and columns
    expect(formatTable(["ID", "TASK"], [["a\nb\tc", "add"]])).toBe("ID       TASK\na\\nb\\tc  add");
  });

  it("an error line does not repeat a cause the message already quotes", () => {
    const cause = new Error('Unknown RESP type 72 "H". Please report this.');
    const error = new Error('Unknown RESP type 72 "H". (the server does not speak the Redis protocol)', { cause });
    expect(errorLine(error)).toBe('Unknown RESP type 72 "H". (the server does not speak the Redis protocol)');
  });
});

describe("purge confirmation", () => {
  /** A terminal-like input that answers `lines`, and the text written as the question. */
  function io(lines: string | null, isTTY = true) {
    const input = Object.assign(new PassThrough(), { isTTY });
    const output = new PassThrough();
    let asked = "";
    output.on("data", (chunk: Buffer) => {
      asked += chunk.toString();
    });
    if (lines === null) input.end();
    else input.end(lines);
    return { io: { input, output }, asked: () => asked };
  }

  it("asks on a terminal and goes on only on yes", async () => {
    for (const answer of ["y\n", "YES\n", " yes \n"]) {
      const t = io(answer);
      await expect(confirmDeletion("delete the 3 waiting message(s) of default?", false, t.io)).resolves.toBe(
        undefined,
      );
      expect(t.asked()).toBe("delete the 3 waiting message(s) of default? [y/N] ");
    }
    for (const answer of ["\n", "n\n", "yess\n", null]) {
      await expect(confirmDeletion("delete?", false, io(answer).io)).rejects.toThrow(
        new CliFailure("nothing deleted (not confirmed)"),
      );
    }
  });

  it("--yes asks nothing; without it, a script (stdin not a terminal) is refused before anything runs", async () => {
    const t = io(null, false);
    await confirmDeletion("delete?", true, t.io);
    expect(t.asked()).toBe("");
    expect(() => requireConfirmable("queue purge", true, t.io)).not.toThrow();
    expect(() => requireConfirmable("queue purge", undefined, io(null, true).io)).not.toThrow();
    const refused = (() => {
      try {
        requireConfirmable("queue purge", undefined, t.io);
      } catch (error) {
        return error;
      }
    })();
    expect(refused).toBeInstanceOf(CliUsageError);
    expect(exitCodeFor(refused)).toBe(2);
    expect(String(refused)).toContain("queue purge deletes messages for good: pass --yes to confirm");
  });
});

describe("worker banner", () => {
  it("names the file a relative SQLite path resolves to, and the task queues this worker leaves to others", () => {
    const app = new Chicory({ broker: "sqlite:rel/jobs.db", backend: "sqlite:/abs/results.db" });
    app.task(async function add(a: number) {
      return a;
    });
    app.task({ name: "send_email", queue: "mail" }, async (to: string) => to);
    const worker = new Worker(app, { queue: "default", logger: silentLogger });
    const lines = bannerLines({ appDisplay: "app.ts:app", app, config: worker.config, processes: 1 });
    expect(lines).toContainEqual(`  broker        sqlite:rel/jobs.db (${resolve("rel/jobs.db")})`);
    expect(lines).toContainEqual('  backend       sqlite:/abs/results.db; table prefix "chicory_"');
    expect(lines).toContainEqual("  queues        default; not consumed here: mail (send_email)");
  });

  it("shows the prefixes that decide what the broker and backend reach", () => {
    const app = new Chicory({
      broker: new RedisBroker({ url: "redis://:secret@127.0.0.1:6379/3", keyPrefix: "shop", consumerGroup: "g1" }),
      backend: new RedisBackend({ url: "redis://127.0.0.1:6379/4", keyPrefix: "shop-results" }),
    });
    const worker = new Worker(app, { queue: "default", logger: silentLogger });
    const lines = bannerLines({ appDisplay: "app.ts:app", app, config: worker.config, processes: 1 });
    expect(lines).toContainEqual(
      '  broker        redis://:***@127.0.0.1:6379/3; key prefix "shop", consumer group "g1"',
    );
    expect(lines).toContainEqual('  backend       redis://127.0.0.1:6379/4; key prefix "shop-results"');
    const rabbit = new Chicory({
      broker: new RabbitMqBroker({ url: "amqp://guest:guest@127.0.0.1:5672/", prefix: "shop", queueType: "quorum" }),
    });
    const rabbitWorker = new Worker(rabbit, { queue: "default", logger: silentLogger });
    const rabbitLines = bannerLines({
      appDisplay: "app.ts:app",
      app: rabbit,
      config: rabbitWorker.config,
      processes: 1,
    });
    expect(rabbitLines).toContainEqual(
      '  broker        amqp://guest:***@127.0.0.1:5672/; prefix "shop", quorum queues',
    );
  });
});

/**
 * `CHICORY_*` variables that are no Chicory setting (a misspelling, most likely): reported with
 * the closest known name, and warned of once by a worker. The list of known names is checked
 * against what the readers of every broker, backend and the app's configuration ask for.
 */
import { describe, expect, it } from "vitest";
import { consultedEnvNames, unknownEnvNames } from "../../src/core/env.js";
import { KNOWN_ENV_NAMES } from "../../src/core/env-names.js";
import { createBackend, createBroker } from "../../src/drivers.js";
import { Chicory, resolveConfig, Worker } from "../../src/index.js";
import { capturingLogger } from "../helpers/capturing-logger.js";

describe("unknown CHICORY_* variables", () => {
  it("every variable the readers of each broker, backend and the configuration ask for is a known one", () => {
    const env = {};
    resolveConfig({ env });
    for (const url of [
      "memory://",
      "sqlite::memory:",
      "redis://127.0.0.1:6379/0",
      "amqp://127.0.0.1:5672",
      "redis",
      "rabbitmq",
    ]) {
      createBroker(url, { env });
    }
    for (const url of [
      "redis://127.0.0.1:6379/0",
      "redis",
      "postgres://u@127.0.0.1/db",
      "mysql://u@127.0.0.1/db",
      "mssql://u@127.0.0.1/db",
      "sqlite::memory:",
      "postgres",
      "mysql",
      "mssql",
      "sqlite",
    ]) {
      createBackend(url, { env });
    }
    const consulted = [...consultedEnvNames()];
    expect(consulted.length).toBeGreaterThan(60);
    expect(consulted.filter((name) => !KNOWN_ENV_NAMES.has(name))).toEqual([]);
  });

  it("an unknown variable is reported with the closest known name (a few typos, or a segment left out); known ones are not", () => {
    const env = {
      CHICORY_WORKER_CONCURENCY: "8", // one letter short
      CHICORY_BROKER_REDIS_CLAIM_MIN_IDLE: "10", // the unit suffix left out
      CHICORY_REDIS_URL: "redis://h", // a segment left out
      CHICORY_SOMETHING_ELSE: "1", // like nothing known
      CHICORY_BACKEND_MSSQL_PORT: "1433", // known: another backend's, not reported
      CHICORY_LOG_FORMAT: "json",
      CHICORY_TEST_ANYTHING: "1", // this project's test suites' own
      CHICORY_RELIABILITY_FULL: "1",
      NOT_CHICORY_WORKER_CONCURENCY: "1", // not ours
    };
    expect(unknownEnvNames(env)).toEqual([
      { name: "CHICORY_WORKER_CONCURENCY", meant: "CHICORY_WORKER_CONCURRENCY" },
      { name: "CHICORY_BROKER_REDIS_CLAIM_MIN_IDLE", meant: "CHICORY_BROKER_REDIS_CLAIM_MIN_IDLE_MS" },
      { name: "CHICORY_REDIS_URL", meant: "CHICORY_BROKER_REDIS_URL" },
      { name: "CHICORY_SOMETHING_ELSE", meant: undefined },
    ]);
  });

  it("a worker warns of each once at start", async () => {
    const { logger, lines } = capturingLogger();
    const app = new Chicory({
      broker: "memory",
      config: { env: { CHICORY_WORKER_CONCURENCY: "4", CHICORY_WORKER_SHUTDOWN_TIMEOUT: "5", CHICORY_QUEUE: "x" } },
    });
    for (let i = 0; i < 2; i++) {
      const worker = new Worker(app, { logger });
      await worker.start();
      await worker.stop(1);
    }
    const warned = lines.filter((line) => /is no Chicory setting/.test(line.message));
    expect(warned.map((line) => [line.message, line.fields])).toEqual([
      [
        "environment variable CHICORY_WORKER_CONCURENCY is no Chicory setting and is ignored (did you mean CHICORY_WORKER_CONCURRENCY?)",
        { variable: "CHICORY_WORKER_CONCURENCY", didYouMean: "CHICORY_WORKER_CONCURRENCY" },
      ],
      [
        "environment variable CHICORY_QUEUE is no Chicory setting and is ignored (did you mean CHICORY_WORKER_QUEUE?)",
        { variable: "CHICORY_QUEUE", didYouMean: "CHICORY_WORKER_QUEUE" },
      ],
    ]);
  });
});

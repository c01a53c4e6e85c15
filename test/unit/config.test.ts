import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inspect } from "node:util";
import { describe, expect, it, vi } from "vitest";
import { logLevel } from "../../src/cli/options.js";
import { resolveConfig, resolveWorkerConfig } from "../../src/config.js";
import { toMs } from "../../src/core/duration.js";
import { loadEnv } from "../../src/core/env.js";
import { findNonJson } from "../../src/core/json.js";
import { assertValidName, isValidName } from "../../src/core/names.js";
import { maskUrl, maskUrlsIn, redactSecrets } from "../../src/core/url.js";
import { ConfigurationError } from "../../src/errors.js";
import {
  Chicory,
  type ChicoryConfigInput,
  type ChicoryOptions,
  type LogLevelName,
  silentLogger,
  Worker,
  type WorkerInit,
  type WorkerOptions,
} from "../../src/index.js";
import { capturingLogger } from "../helpers/capturing-logger.js";

describe("durations", () => {
  it("accepts seconds and unit strings", () => {
    expect([toMs(2), toMs("250ms"), toMs("10s"), toMs("5m"), toMs("1h"), toMs("1.5")]).toEqual([
      2000, 250, 10_000, 300_000, 3_600_000, 1500,
    ]);
  });
  it("rejects garbage naming the option", () => {
    expect(() => toMs("soon", "CHICORY_X")).toThrow(/CHICORY_X/);
    expect(() => toMs(-1, "opt")).toThrow(ConfigurationError);
  });
});

describe("configuration", () => {
  it("has defaults", () => {
    const c = resolveConfig({ env: {} });
    expect(c.validationMode).toBe("inputs");
    expect(c.deliveryMode).toBe("at_least_once");
    expect(c.maxMessageBytes).toBe(1024 * 1024);
    expect(c.maxResultBytes).toBe(4 * 1024 * 1024);
    expect(c.worker.queues).toEqual(["default"]);
    expect(c.worker.heartbeatInterval).toBe(10);
    expect(c.worker.heartbeatTtl).toBe(30);
    expect(c.worker.concurrency).toBeGreaterThanOrEqual(1);
    expect(c.worker.concurrency).toBeLessThanOrEqual(32);
  });

  it("reads CHICORY_* variables, options win over them", () => {
    const env = {
      CHICORY_VALIDATION_MODE: "strict",
      CHICORY_DELIVERY_MODE: "at_most_once",
      CHICORY_WORKER_CONCURRENCY: "7",
      CHICORY_WORKER_QUEUE: "a, b",
      CHICORY_WORKER_HEARTBEAT_INTERVAL: "2s",
      CHICORY_WORKER_HEARTBEAT_TTL: "1m",
      CHICORY_RESULT_DEFAULT_TIMEOUT: "30",
      CHICORY_SIGNING_KEY: "secret",
      CHICORY_MAX_RESULT_BYTES: "65536",
    };
    const c = resolveConfig({ env });
    expect(c.maxResultBytes).toBe(65536);
    expect(resolveConfig({ env, maxResultBytes: 2048 }).maxResultBytes).toBe(2048);
    expect([c.validationMode, c.deliveryMode, c.worker.concurrency]).toEqual(["strict", "at_most_once", 7]);
    expect(c.worker.queues).toEqual(["a", "b"]);
    expect([c.worker.heartbeatInterval, c.worker.heartbeatTtl, c.resultDefaultTimeout]).toEqual([2, 60, 30]);
    expect(c.signingKey).toBe("secret");
    const o = resolveConfig({ env, validationMode: "none", worker: { concurrency: 3 } });
    expect([o.validationMode, o.worker.concurrency]).toEqual(["none", 3]);
  });

  it("reads a signing key given in code as the variable is read (trimmed); an empty one is refused", () => {
    const fromFile = "s3cret-from-file\n";
    expect(resolveConfig({ env: {}, signingKey: fromFile }).signingKey).toBe(
      resolveConfig({ env: { CHICORY_SIGNING_KEY: fromFile } }).signingKey,
    );
    expect(() => resolveConfig({ env: {}, signingKey: "" })).toThrow(ConfigurationError);
    expect(() => resolveConfig({ env: {}, signingKey: "  " })).toThrow(/signingKey: an empty key/);
    expect(resolveConfig({ env: { CHICORY_SIGNING_KEY: "k" }, signingKey: null }).signingKey).toBeNull();
  });

  it("fails fast naming the variable", () => {
    expect(() => resolveConfig({ env: { CHICORY_WORKER_CONCURRENCY: "many" } })).toThrow(/CHICORY_WORKER_CONCURRENCY/);
    expect(() => resolveConfig({ env: { CHICORY_DELIVERY_MODE: "twice" } })).toThrow(/CHICORY_DELIVERY_MODE/);
    expect(() => resolveConfig({ env: { CHICORY_WORKER_USE_DEAD_LETTER_QUEUE: "maybe" } })).toThrow(
      /CHICORY_WORKER_USE_DEAD_LETTER_QUEUE/,
    );
    expect(() => resolveConfig({ env: { CHICORY_WORKER_QUEUE: "bad queue" } })).toThrow(/CHICORY_WORKER_QUEUE/);
    expect(() => resolveConfig({ env: { CHICORY_MAX_RESULT_BYTES: "1gb" } })).toThrow(/CHICORY_MAX_RESULT_BYTES/);
    expect(() => resolveConfig({ env: {}, maxResultBytes: 512 * 1024 * 1024 })).toThrow(/maxResultBytes/);
    // an option of the wrong type (JavaScript without types) is refused the same way, not a TypeError
    expect(() => resolveConfig({ env: {}, validationMode: 5 as never })).toThrow(
      "validationMode: expected one of none, inputs, outputs, strict, got 5",
    );
  });

  it("derives a TTL nobody set from the interval, also over an app's resolved config", () => {
    expect(resolveWorkerConfig({ heartbeatInterval: 40 }, {}).heartbeatTtl).toBe(120);
    expect(resolveWorkerConfig({ heartbeatInterval: 5 }, {}).heartbeatTtl).toBe(30);
    const app = resolveConfig({ env: {} }).worker;
    expect(resolveWorkerConfig({ heartbeatInterval: 40 }, {}, app).heartbeatTtl).toBe(120);
    const explicit = resolveConfig({ env: {}, worker: { heartbeatTtl: 45 } }).worker;
    expect(resolveWorkerConfig({ heartbeatInterval: 20 }, {}, explicit).heartbeatTtl).toBe(45);
    expect(() => resolveWorkerConfig({ heartbeatInterval: 50 }, {}, explicit)).toThrow(/heartbeatTtl must exceed/);
  });

  it("requires heartbeatTtl > heartbeatInterval", () => {
    expect(() => resolveWorkerConfig({ heartbeatInterval: 10, heartbeatTtl: 10 }, {})).toThrow(/heartbeatTtl/);
    expect(() => resolveWorkerConfig({}, { CHICORY_WORKER_HEARTBEAT_TTL: "5" })).toThrow(
      /CHICORY_WORKER_HEARTBEAT_TTL/,
    );
    expect(() => resolveWorkerConfig({ heartbeatInterval: 40 }, { CHICORY_WORKER_HEARTBEAT_TTL: "30" })).toThrow(
      /--heartbeat-interval/,
    );
    expect(() => resolveWorkerConfig({ cleanupInterval: 5 }, {})).toThrow(/cleanupInterval/);
    expect(() => resolveWorkerConfig({ staleWorkersTimeout: 1 }, {})).toThrow(/staleWorkersTimeout/);
  });

  it("requires staleWorkersTimeout > heartbeatInterval (else cleanup removes live workers); an unset one follows the interval", () => {
    expect(() => resolveWorkerConfig({ heartbeatInterval: 40, staleWorkersTimeout: 15 }, {})).toThrow(
      /staleWorkersTimeout must exceed heartbeatInterval/,
    );
    expect(() =>
      resolveWorkerConfig({ heartbeatInterval: 40 }, { CHICORY_WORKER_STALE_WORKERS_TIMEOUT: "40" }),
    ).toThrow(/CHICORY_WORKER_STALE_WORKERS_TIMEOUT/);
    expect(resolveWorkerConfig({ heartbeatInterval: 400 }, {}).staleWorkersTimeout).toBe(1200);
    // over the app's config (what a Worker does): still derived from the interval
    const appConfig = resolveWorkerConfig({}, {});
    expect(resolveWorkerConfig({ heartbeatInterval: 400 }, {}, appConfig).staleWorkersTimeout).toBe(1200);
    expect(resolveWorkerConfig({ heartbeatInterval: 200 }, {}, appConfig).staleWorkersTimeout).toBe(600);
    const setStale = resolveWorkerConfig({}, { CHICORY_WORKER_STALE_WORKERS_TIMEOUT: "100" });
    expect(() => resolveWorkerConfig({ heartbeatInterval: 200 }, {}, setStale)).toThrow(
      /staleWorkersTimeout must exceed/,
    );
    expect(resolveWorkerConfig({}, {}).staleWorkersTimeout).toBe(300);
  });

  it("names CHICORY_WORKER_QUEUE when its queue names are bad", () => {
    expect(() => resolveConfig({ env: { CHICORY_WORKER_QUEUE: "bad queue" } })).toThrow(
      /^CHICORY_WORKER_QUEUE: queue name "bad queue" is invalid/,
    );
    expect(() => resolveConfig({ env: { CHICORY_WORKER_QUEUE: "," } })).toThrow(
      "CHICORY_WORKER_QUEUE: at least one queue is required",
    );
  });

  it("reads .env with process variables taking precedence", () => {
    const dir = mkdtempSync(join(tmpdir(), "chicory-env-"));
    try {
      writeFileSync(join(dir, ".env"), "CHICORY_WORKER_CONCURRENCY=5\nCHICORY_DELIVERY_MODE=at_most_once\n");
      const env = loadEnv(dir, { CHICORY_DELIVERY_MODE: "at_least_once" });
      const c = resolveConfig({ env });
      expect([c.worker.concurrency, c.deliveryMode]).toEqual([5, "at_least_once"]);
      expect(loadEnv(tmpdir(), {})).toEqual({});
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("names, JSON checks, URL masking", () => {
  it("an app's configuration shows no secret when logged or serialised; its fields keep them", () => {
    const env = {
      CHICORY_BROKER_URL: "redis://app:TopSecretPW@127.0.0.1:6379/0",
      CHICORY_BACKEND_URL: "postgres://app:DbSecretPW@db/app",
      CHICORY_SIGNING_KEY: "SigningKey123",
      AWS_SECRET_ACCESS_KEY: "AKIAFAKE",
    };
    const app = new Chicory({ broker: "memory://", backend: null, config: { env } });
    const shown = [JSON.stringify(app.config), inspect(app.config, { depth: 5 }), inspect(app, { depth: 5 })];
    for (const text of shown) {
      for (const secret of ["TopSecretPW", "DbSecretPW", "SigningKey123", "AKIAFAKE"])
        expect(text).not.toContain(secret);
    }
    expect(JSON.parse(shown[0] ?? "{}")).toMatchObject({
      brokerUrl: "redis://app:***@127.0.0.1:6379/0",
      backendUrl: "postgres://app:***@db/app",
      signingKey: "***",
      env: "[4 variables]",
      deliveryMode: "at_least_once",
    });
    expect(shown[1]).toContain("redis://app:***@127.0.0.1:6379/0");
    expect(app.config.brokerUrl).toBe(env.CHICORY_BROKER_URL);
    expect(app.config.signingKey).toBe("SigningKey123");
    expect(app.config.env).toBe(env);
    expect(Object.keys(app.config)).not.toContain("toJSON");
  });

  it("validates queue and task names", () => {
    for (const ok of ["default", "a.b:c-d_e", "x".repeat(128)]) expect(isValidName(ok)).toBe(true);
    for (const bad of ["", "a b", "*", "{x}", "x".repeat(129), "a\nb", "a\u0000b", "é", "\u202e"]) {
      expect(isValidName(bad), JSON.stringify(bad)).toBe(false);
    }
    expect(() => assertValidName("a b", "queue")).toThrow('queue name "a b" is invalid: use 1-128 of [A-Za-z0-9._:-]');
  });

  it("finds the non-JSON part of a value", () => {
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    expect(findNonJson({ a: [1, "x", null, { b: true }] })).toBeNull();
    expect(findNonJson({ a: [1, () => 1] })).toMatch(/a\[1\]: a function/);
    expect(findNonJson(circular)).toMatch(/circular/);
    expect(findNonJson(new Date())).toMatch(/Date/);
    expect(findNonJson(Symbol("s"))).toMatch(/symbol/);
    expect(findNonJson(Number.NaN)).toMatch(/finite/);
    expect(findNonJson(new Map())).toMatch(/Map/);
    const evil = {
      get boom() {
        throw new Error("getter exploded");
      },
    };
    expect(findNonJson({ a: [evil] })).toBe("a[0].boom: reading it threw (getter exploded)");
    const odd = Object.assign(new Error(), { message: 42 });
    expect(
      findNonJson({
        get x() {
          throw odd;
        },
      }),
    ).toBe("x: reading it threw (42)");
    const trap = new Proxy(
      {},
      {
        ownKeys: () => {
          throw new Error("trap");
        },
      },
    );
    expect(findNonJson([trap], "args")).toBe("args[0]: reading it threw (trap)");
  });

  it("delay() with an argument whose getter throws rejects with a ValidationError naming it", async () => {
    const app = new Chicory({ broker: "memory", backend: "memory", config: { env: {} } });
    const echo = app.task(async function echo(_x: unknown) {});
    const evil = {
      get boom() {
        throw new Error("getter exploded");
      },
    };
    await expect(echo.delay(evil)).rejects.toThrow(
      expect.objectContaining({
        code: "VALIDATION_ERROR",
        message: expect.stringMatching(/argument 1\.boom: reading it threw \(getter exploded\)/),
      }),
    );
    await app.disconnect();
  });

  it("masks passwords", () => {
    expect(maskUrl("redis://user:s3cret@host:6379/0")).toBe("redis://user:***@host:6379/0");
    expect(maskUrl("amqp://guest:guest@localhost")).toBe("amqp://guest:***@localhost");
    // masking a masked URL (the worker banner masks display URLs again) keeps the user
    expect(maskUrl(maskUrl("redis://bob:s3cret@host:6379/0"))).toBe("redis://bob:***@host:6379/0");
    expect(maskUrl("postgres://h/db?password=x&a=1")).toBe("postgres://h/db?password=***&a=1");
    expect(maskUrl("redis://:pw@host")).toBe("redis://:***@host");
    // an unencoded @ in the user name or the password (read up to the last @ before the host)
    expect(maskUrl("amqp://us@er:Sup3rSecret@127.0.0.1:5672/")).toBe("amqp://us@er:***@127.0.0.1:5672/");
    expect(maskUrl("amqp://guest:s3cr@t@127.0.0.1:5672/")).toBe("amqp://guest:***@127.0.0.1:5672/");
    expect(maskUrl(maskUrl("amqp://us@er:Sup3rSecret@h/"))).toBe("amqp://us@er:***@h/");
    expect(maskUrl("amqp://us@er@host/")).toBe("amqp://us@er@host/"); // no password
    expect(maskUrlsIn("connect to redis://us@er:Sup3rSecret@127.0.0.1:46381/5: WRONGPASS")).toBe(
      "connect to redis://us@er:***@127.0.0.1:46381/5: WRONGPASS",
    );
  });

  it("masks a password written without percent-encoding, whole, in a URL and in text", () => {
    // such URLs do not parse: the error that shows them must not show the password
    expect(maskUrl("redis://walker:p@ss:w%rd/x@127.0.0.1:6391/12")).toBe("redis://walker:***@127.0.0.1:6391/12");
    expect(maskUrl("redis://:ab#cdSECRET@127.0.0.1:6391/12")).toBe("redis://:***@127.0.0.1:6391/12");
    expect(maskUrl("redis://:ab?cdSECRET@127.0.0.1/0")).toBe("redis://:***@127.0.0.1/0");
    expect(maskUrlsIn("bad URL redis://u:ab#cd/SECRET@h:1/0: Invalid URL")).toBe(
      "bad URL redis://u:***@h:1/0: Invalid URL",
    );
    expect(maskUrlsIn("to amqp://g:p@h and redis://h:6379")).toBe("to amqp://g:***@h and redis://h:6379");
    // the format hint of Chicory's own messages stays readable
    const hint = "expected redis://[user:password@]host[:port][/db] or redis+sentinel://[user:password@]host";
    expect(maskUrlsIn(`invalid Redis URL redis://u:***@h:0/0: ${hint}`)).toBe(
      `invalid Redis URL redis://u:***@h:0/0: ${hint}`,
    );
  });

  it("names the percent-encoding in the error for an unparsable Redis URL, without the password", async () => {
    const { resolveRedisConnection } = await import("../../src/redis/redis-options.js");
    let message = "";
    try {
      resolveRedisConnection({ url: "redis://:ab#cdSECRET@127.0.0.1:6391/12" }, {}, "CHICORY_BROKER_REDIS");
    } catch (error) {
      message = String(error);
    }
    expect(message).toMatch(/percent-encode/);
    expect(message).not.toMatch(/SECRET|cdS/);
  });
});

describe("CHICORY_LOG_FORMAT", () => {
  it("accepts json, pretty, auto; anything else fails naming the variable", async () => {
    const { createLogger } = await import("../../src/logging.js");
    const before = process.env.CHICORY_LOG_FORMAT;
    try {
      process.env.CHICORY_LOG_FORMAT = "xml";
      expect(() => createLogger()).toThrow(/^CHICORY_LOG_FORMAT: "xml" is invalid: use json, pretty or auto/);
      process.env.CHICORY_LOG_FORMAT = "JSON";
      expect(typeof createLogger().info).toBe("function");
    } finally {
      if (before === undefined) delete process.env.CHICORY_LOG_FORMAT;
      else process.env.CHICORY_LOG_FORMAT = before;
    }
  });

  it("is read from the .env file too, and from the app's env by a worker's default logger", async () => {
    const { createLogger } = await import("../../src/logging.js");
    const dir = mkdtempSync(join(tmpdir(), "chicory-logfmt-"));
    const cwd = process.cwd();
    try {
      writeFileSync(join(dir, ".env"), "CHICORY_LOG_FORMAT=xml\n");
      process.chdir(dir);
      expect(() => createLogger()).toThrow(/^CHICORY_LOG_FORMAT: "xml" is invalid/); // (was: ignored)
    } finally {
      process.chdir(cwd);
      rmSync(dir, { recursive: true, force: true });
    }
    expect(() => createLogger({ env: { CHICORY_LOG_FORMAT: "xml" } })).toThrow(/"xml" is invalid/);
    const app = new Chicory({ broker: "memory", backend: "memory", config: { env: { CHICORY_LOG_FORMAT: "xml" } } });
    expect(() => new Worker(app)).toThrow(/^CHICORY_LOG_FORMAT: "xml" is invalid/);
  });
});

describe("createLogger level", () => {
  it("takes a level in any case, and pino's warn/fatal; anything else fails naming the levels (not pino's own error)", async () => {
    const { createLogger } = await import("../../src/logging.js");
    const levelOf = (level: LogLevelName) =>
      (createLogger({ level, format: "json" }) as unknown as { level: string }).level;
    expect(levelOf("error")).toBe("error");
    expect(levelOf("WARNING")).toBe("warn");
    expect(levelOf("warn")).toBe("warn");
    expect(levelOf("fatal")).toBe("fatal");
    const js = createLogger as (options: { level: string }) => unknown; // a caller without the types
    expect(() => js({ level: "verbose" })).toThrow(
      'createLogger: level: expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL (any case; warn and fatal also do), got "verbose"',
    );
  });

  it("the worker's logLevel and CHICORY_WORKER_LOG_LEVEL take the same names as the CLI's --log-level", () => {
    const worker = (logLevel: LogLevelName | undefined, env: Record<string, string> = {}) =>
      resolveWorkerConfig({ ...(logLevel === undefined ? {} : { logLevel }) }, env).logLevel;
    expect(worker("warn")).toBe("WARNING");
    expect(worker("Fatal" as LogLevelName)).toBe("CRITICAL");
    expect(worker(undefined, { CHICORY_WORKER_LOG_LEVEL: "warn" })).toBe("WARNING");
    expect(worker(undefined, { CHICORY_WORKER_LOG_LEVEL: " debug " })).toBe("DEBUG");
    expect(worker(undefined)).toBe("INFO");
    expect(() => worker(undefined, { CHICORY_WORKER_LOG_LEVEL: "loud" })).toThrow(
      /CHICORY_WORKER_LOG_LEVEL: expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL \(any case; warn and fatal also do\), got "loud"/,
    );
    expect(() => worker("verbose" as LogLevelName)).toThrow(/^logLevel: expected one of DEBUG/);
    expect(logLevel("WARN")).toBe("WARNING");
    expect(() => logLevel("loud")).toThrow(/expected one of DEBUG, .*got "loud"/);
  });
});

describe("default backend location", () => {
  it("puts SQLite results in the broker's file, wherever the broker found it", async () => {
    const { Chicory } = await import("../../src/app.js");
    const app = new Chicory({ config: { env: { CHICORY_BROKER_SQLITE_PATH: "/tmp/elsewhere.db" } } });
    expect(app.broker.displayUrl).toBe("sqlite:/tmp/elsewhere.db");
    expect(app.backend?.displayUrl).toBe("sqlite:/tmp/elsewhere.db");
    const none = new Chicory({ broker: "amqp://guest:guest@127.0.0.1", config: { env: {} } });
    expect(none.backend).toBeNull();
  });

  it("a Redis backend placed by its own URL beside a Redis broker takes the broker's key prefix, unless it has its own", async () => {
    const { Chicory } = await import("../../src/app.js");
    const { RedisBackend } = await import("../../src/backends/redis/index.js");
    const prefixOf = (app: InstanceType<typeof Chicory>) =>
      (app.backend as InstanceType<typeof RedisBackend>).settings.keyPrefix;
    const env = { CHICORY_BROKER_REDIS_KEY_PREFIX: "tenant" };
    const url = "redis://127.0.0.1:6379/0";
    // the broker's own server named again (by option or variable), or another one
    expect(prefixOf(new Chicory({ broker: url, backend: url, config: { env } }))).toBe("tenant");
    expect(
      prefixOf(new Chicory({ config: { env: { ...env, CHICORY_BROKER_URL: url, CHICORY_BACKEND_URL: url } } })),
    ).toBe("tenant");
    expect(prefixOf(new Chicory({ broker: url, backend: "redis://results.example:6379/2", config: { env } }))).toBe(
      "tenant",
    );
    // its own prefix wins; no broker prefix: the default
    const own = { ...env, CHICORY_BACKEND_REDIS_KEY_PREFIX: "results" };
    expect(prefixOf(new Chicory({ broker: url, backend: url, config: { env: own } }))).toBe("results");
    expect(prefixOf(new Chicory({ broker: url, backend: url, config: { env: {} } }))).toBe("chicory");
    // a blank variable of its own (as compose files leave them) is none
    const blank = { ...env, CHICORY_BACKEND_REDIS_KEY_PREFIX: " " };
    expect(prefixOf(new Chicory({ broker: url, backend: url, config: { env: blank } }))).toBe("tenant");
    // beside a broker object: that broker's prefix, however it was given
    const { RedisBroker } = await import("../../src/brokers/redis/index.js");
    const object = new RedisBroker({ url, keyPrefix: "objects", env: {} });
    expect(prefixOf(new Chicory({ broker: object, backend: url, config: { env: {} } }))).toBe("objects");
    const fromEnv = new RedisBroker({ url, env });
    expect(prefixOf(new Chicory({ broker: fromEnv, backend: url, config: { env } }))).toBe("tenant");
    expect(prefixOf(new Chicory({ broker: object, backend: url, config: { env: own } }))).toBe("results");
  });

  it("puts Redis results where a broker found through its variables connects, with its key prefix", async () => {
    const { Chicory } = await import("../../src/app.js");
    const { RedisBackend } = await import("../../src/backends/redis/index.js");
    const env = {
      CHICORY_BROKER_REDIS_URL: "redis://app:pw@redis.example:6380/12",
      CHICORY_BROKER_REDIS_KEY_PREFIX: "shop",
    };
    const app = new Chicory({ broker: "redis", config: { env } });
    expect(app.broker.displayUrl).toBe("redis://app:***@redis.example:6380/12");
    expect(app.backend?.displayUrl).toBe("redis://app:***@redis.example:6380/12");
    expect((app.backend as InstanceType<typeof RedisBackend>).settings.keyPrefix).toBe("shop");
    const byUrl = new Chicory({ config: { env: { ...env, CHICORY_BROKER_URL: "redis" } } });
    expect(byUrl.backend?.displayUrl).toBe("redis://app:***@redis.example:6380/12");
    // the backend's own variables win, location and prefix each; a location of its own without
    // a URL or host (only _DB here) would be on the Redis defaults: refused
    const emitted = vi.spyOn(process, "emitWarning").mockImplementation(() => undefined);
    let own: InstanceType<typeof Chicory>;
    try {
      expect(
        () =>
          new Chicory({
            broker: "redis",
            config: { env: { ...env, CHICORY_BACKEND_REDIS_DB: "3", CHICORY_BACKEND_REDIS_KEY_PREFIX: "res" } },
          }),
      ).toThrow(
        new ConfigurationError(
          "CHICORY_BACKEND_REDIS_DB is set, so the Redis backend has a location of its own, and without " +
            "CHICORY_BACKEND_REDIS_URL or _HOST its server would be 127.0.0.1:6379, not the broker's " +
            "(CHICORY_BROKER_REDIS_URL): set CHICORY_BACKEND_REDIS_URL (or _HOST) too, or unset them",
        ),
      );
      // the same server named by the broker's variables (loopback, the same port): another database there
      const sameServer = [
        { CHICORY_BROKER_REDIS_HOST: "127.0.0.1", CHICORY_BACKEND_REDIS_DB: "2" },
        { CHICORY_BROKER_REDIS_HOST: "localhost", CHICORY_BACKEND_REDIS_DB: "2" },
        { CHICORY_BROKER_REDIS_PORT: "6380", CHICORY_BACKEND_REDIS_PORT: "6380", CHICORY_BACKEND_REDIS_DB: "1" },
        { CHICORY_BROKER_REDIS_URL: "redis://127.0.0.1:6379/0", CHICORY_BACKEND_REDIS_DB: "4" },
        { CHICORY_BROKER_REDIS_HOST: "LOCALHOST", CHICORY_BROKER_REDIS_PORT: "06379", CHICORY_BACKEND_REDIS_DB: "2" },
      ];
      for (const vars of sameServer) {
        const app = new Chicory({ broker: "redis", config: { env: vars } });
        expect(app.backend?.displayUrl).toMatch(/^redis:\/\/127\.0\.0\.1:63(79|80)\/[124]$/);
      }
      // the broker's server, but the broker logs in or uses TLS there, which the defaults do not: refused
      for (const vars of [
        { CHICORY_BROKER_REDIS_HOST: "127.0.0.1", CHICORY_BROKER_REDIS_PASSWORD: "s3cret" },
        { CHICORY_BROKER_REDIS_URL: "redis://:s3cret@127.0.0.1:6379/0" },
        { CHICORY_BROKER_REDIS_URL: "rediss://localhost:6379" },
      ]) {
        expect(
          () => new Chicory({ broker: "redis", config: { env: { ...vars, CHICORY_BACKEND_REDIS_DB: "2" } } }),
        ).toThrow(
          /it would connect to 127\.0\.0\.1:6379 without the broker's login and TLS settings: set CHICORY_BACKEND_REDIS_URL/,
        );
      }
      // and refused when the backend's defaults are not the broker's server
      expect(
        () =>
          new Chicory({
            broker: "redis",
            config: { env: { CHICORY_BROKER_REDIS_HOST: "redis.example", CHICORY_BACKEND_REDIS_PASSWORD: "pw" } },
          }),
      ).toThrow(/CHICORY_BACKEND_REDIS_PASSWORD is set, .* its server would be 127\.0\.0\.1:6379, not the broker's/);
      own = new Chicory({
        broker: "redis",
        config: {
          env: {
            ...env,
            CHICORY_BACKEND_REDIS_HOST: "results.example",
            CHICORY_BACKEND_REDIS_DB: "3",
            CHICORY_BACKEND_REDIS_KEY_PREFIX: "res",
          },
        },
      });
      // none when the broker's location is a URL in its spec (the backend then takes that URL)
      emitted.mockClear();
      new Chicory({
        broker: "redis://redis.example:6390/0",
        config: { env: { CHICORY_BROKER_REDIS_PORT: "6391", CHICORY_BACKEND_REDIS_PASSWORD: "x" } },
      });
      expect(emitted).not.toHaveBeenCalled();
      // a location of the backend's own beside a broker URL is not used: said
      const ignored = new Chicory({
        config: {
          env: { CHICORY_BROKER_URL: "redis://redis.example:6390/0", CHICORY_BACKEND_REDIS_URL: "redis://elsewhere/1" },
        },
      });
      expect(ignored.backend?.displayUrl).toBe("redis://redis.example:6390/0");
      expect(emitted).toHaveBeenCalledWith(
        "CHICORY_BACKEND_REDIS_URL is set but not used: with no backend configured, the result backend is the broker's " +
          "Redis URL; set CHICORY_BACKEND_URL (or pass backend:) to place it elsewhere",
        { code: "CHICORY_BACKEND_LOCATION" },
      );
      // a blank variable (as compose files leave them) is unset, as the readers take it
      emitted.mockClear();
      const blank = new Chicory({ broker: "redis", config: { env: { ...env, CHICORY_BACKEND_REDIS_DB: " " } } });
      expect(blank.backend?.displayUrl).toBe("redis://app:***@redis.example:6380/12");
      new Chicory({
        config: { env: { CHICORY_BROKER_URL: "redis://redis.example:6390/0", CHICORY_BACKEND_REDIS_URL: "" } },
      });
      expect(emitted).not.toHaveBeenCalled();
    } finally {
      emitted.mockRestore();
    }
    expect(own.backend?.displayUrl).toBe("redis://results.example:6379/3");
    expect((own.backend as InstanceType<typeof RedisBackend>).settings.keyPrefix).toBe("res");
    // asked for by kind alone (SPEC §2's `backend: "redis"`), the backend still follows the broker
    for (const config of [{ env }, { env: { ...env, CHICORY_BROKER_URL: "redis", CHICORY_BACKEND_URL: "redis" } }]) {
      const both = new Chicory({ broker: "redis", backend: "redis", config });
      expect(both.backend?.displayUrl).toBe("redis://app:***@redis.example:6380/12");
      expect((both.backend as InstanceType<typeof RedisBackend>).settings.keyPrefix).toBe("shop");
    }
    const byBrokerUrl = new Chicory({ broker: "redis://redis.example:6381/5", backend: "redis", config: { env: {} } });
    expect(byBrokerUrl.backend?.displayUrl).toBe("redis://redis.example:6381/5");
    // a TLS setting of the backend's own is no location: the backend stays on the broker's server
    const tls = new Chicory({
      broker: "redis",
      config: {
        env: {
          CHICORY_BROKER_REDIS_URL: "rediss://app:pw@redis.example:6380/12",
          CHICORY_BACKEND_REDIS_TLS_REJECT_UNAUTHORIZED: "true",
        },
      },
    });
    expect(tls.backend?.displayUrl).toBe("rediss://app:***@redis.example:6380/12");
  });

  it("warns when a Redis location variable is set but no broker is selected (SQLite default)", async () => {
    const { Chicory } = await import("../../src/app.js");
    const warned = new Promise<Error>((resolve) => {
      const listener = (warning: Error) => {
        if ((warning as { code?: string }).code !== "CHICORY_BROKER_NOT_SELECTED") return;
        process.off("warning", listener);
        resolve(warning);
      };
      process.on("warning", listener);
    });
    const app = new Chicory({ config: { env: { CHICORY_BROKER_REDIS_URL: "redis://127.0.0.1:6379/12" } } });
    expect(app.broker.kind).toBe("sqlite");
    expect((await warned).message).toMatch(
      /^CHICORY_BROKER_REDIS_URL is set but no broker is selected.*CHICORY_BROKER_URL=redis/,
    );
  });

  it("a bad CHICORY_BROKER_URL / CHICORY_BACKEND_URL is named in the error; a URL given in code is not", async () => {
    const { Chicory } = await import("../../src/app.js");
    const { ConfigurationError } = await import("../../src/errors.js");
    expect(() => new Chicory({ config: { env: { CHICORY_BROKER_URL: "redis://127.0.0.1/x" } } })).toThrow(
      /^CHICORY_BROKER_URL: database in redis:\/\/127\.0\.0\.1\/x: expected an integer/,
    );
    expect(
      () => new Chicory({ broker: "memory", config: { env: { CHICORY_BACKEND_URL: "redis://127.0.0.1:99999/0" } } }),
    ).toThrow(/^CHICORY_BACKEND_URL: invalid Redis URL/);
    const inCode = (() => {
      try {
        new Chicory({ broker: "redis://127.0.0.1/x", config: { env: {} } });
      } catch (error) {
        return error;
      }
    })();
    expect(inCode).toBeInstanceOf(ConfigurationError);
    expect(String(inCode)).not.toContain("CHICORY_BROKER_URL");
  });

  it("says how to give a backend when an app given a broker object has none", async () => {
    const { Chicory } = await import("../../src/app.js");
    const { MemoryBroker } = await import("../../src/brokers/memory.js");
    const app = new Chicory({ broker: new MemoryBroker(), config: { env: {} } });
    expect(app.backend).toBeNull();
    const add = app.task({ name: "add" }, (a: number, b: number) => a + b);
    await app.connect();
    const result = await add.delay(1, 2);
    await expect(result.get()).rejects.toThrow(/give the app `backend` .*broker object/);
    await app.disconnect();
  });
});

/** The message of the ConfigurationError `make` throws (fails the test when it does not throw one). */
function refused(make: () => unknown): string {
  try {
    make();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigurationError);
    return (error as Error).message;
  }
  throw new Error("not refused");
}

describe("values of the wrong type from a JavaScript caller", () => {
  const env = {};

  it("are refused naming the option, not read as true, as left out or as the default broker", () => {
    // "false" is truthy: dead letters were on
    expect(refused(() => resolveWorkerConfig({ useDeadLetterQueue: "false" as unknown as boolean }, env))).toBe(
      'useDeadLetterQueue: expected true or false, got "false"',
    );
    expect(refused(() => resolveWorkerConfig({ queue: null as unknown as string }, env))).toBe(
      "queue: expected a queue name or an array of names, got null",
    );
    expect(refused(() => resolveWorkerConfig({ queue: [5] as unknown as string[] }, env))).toBe(
      "queue: expected queue names, got 5 in the array",
    );
    // a number was the embedded SQLite default, silently; null a TypeError
    expect(refused(() => new Chicory({ broker: 5 as unknown as string, config: { env } }))).toMatch(
      /^broker: expected a kind \("redis"\) or a URL/,
    );
    expect(refused(() => new Chicory({ broker: null as unknown as string, config: { env } }))).toMatch(
      /^broker: expected a kind .*, got null$/,
    );
    expect(refused(() => new Chicory({ config: { env, brokerUrl: 5 as unknown as string } }))).toMatch(/^brokerUrl: /);
    // an empty or zero mode was the variable's or the default, silently
    expect(refused(() => resolveConfig({ env, validationMode: "" as "inputs" }))).toMatch(
      /^validationMode: expected one of/,
    );
    expect(refused(() => resolveConfig({ env, deliveryMode: 0 as unknown as "at_least_once" }))).toMatch(
      /^deliveryMode: expected one of/,
    );
    // integers in decimal digits, as the CLI's flags take them
    expect(refused(() => resolveWorkerConfig({}, { CHICORY_WORKER_CONCURRENCY: "0x10" }))).toBe(
      'CHICORY_WORKER_CONCURRENCY: expected an integer from 1 to 10000, got "0x10"',
    );
    expect(refused(() => resolveWorkerConfig({}, { CHICORY_WORKER_MAX_DELIVERIES: "1e1" }))).toMatch(/got "1e1"/);
  });

  it("a URL written without its colon is said to be one", () => {
    expect(refused(() => new Chicory({ broker: "redis//localhost:6379", config: { env } }))).toMatch(
      /is not available \(brokers: .*\): a URL needs ":\/\/" after its scheme/,
    );
  });

  it("a spec given in code is trimmed as a variable is", () => {
    expect(new Chicory({ broker: " memory ", backend: " memory ", config: { env } }).broker.kind).toBe("memory");
  });

  it("an error naming an option and its variable is not prefixed with the URL variable", () => {
    const message = refused(
      () =>
        new Chicory({
          broker: "memory",
          config: {
            env: {
              CHICORY_BACKEND_URL: "postgres://127.0.0.1/test",
              CHICORY_BACKEND_POSTGRES_TABLE_PREFIX: "bad;prefix",
            },
          },
        }),
    );
    expect(message).toMatch(/^tablePrefix \(CHICORY_BACKEND_POSTGRES_TABLE_PREFIX\): "bad;prefix" is invalid/);
  });
});

describe("unknown option keys (a JavaScript caller's typo)", () => {
  it("are refused by Chicory, its config, its config.worker and Worker, naming the key and the options", () => {
    const memory = { broker: "memory", backend: "memory" } as const;
    expect(refused(() => new Chicory({ brokr: "redis" } as ChicoryOptions))).toBe(
      'Chicory: unknown option "brokr" (options: broker, backend, config, validationMode, deliveryMode)',
    );
    expect(
      refused(() => new Chicory({ ...memory, config: { env: {}, brokerURL: "x" } as ChicoryConfigInput })),
    ).toMatch(/^config: unknown option "brokerURL" \(options: validationMode, .*brokerUrl/);
    expect(
      refused(() => new Chicory({ ...memory, config: { env: {}, worker: { queues: ["a"] } as WorkerOptions } })),
    ).toBe(
      'config.worker: unknown option "queues" (did you mean "queue"? it takes one name or a list; a resolved config, worker.config or app.config.worker, is taken as it is, but not a copy of one)',
    );
    const app = new Chicory({ ...memory, config: { env: {} } });
    expect(refused(() => new Worker(app, { queues: ["a"] } as WorkerInit))).toBe(
      'Worker: unknown option "queues" (did you mean "queue"? it takes one name or a list; a resolved config, worker.config or app.config.worker, is taken as it is, but not a copy of one)',
    );
    expect(refused(() => new Worker(app, { concurency: 2 } as WorkerInit))).toMatch(
      /^Worker: unknown option "concurency" \(options: concurrency, queue, .*logger\)$/,
    );
    expect(new Worker(app, { concurrency: 2, queue: ["a", "b"], logger: silentLogger }).config.queues).toEqual([
      "a",
      "b",
    ]);
  });

  it("a Worker takes a resolved config (another worker's, the app's) as it is; a copy, or queues alone, is refused naming why", () => {
    const app = new Chicory({ broker: "memory", backend: "memory", config: { env: {}, worker: { concurrency: 3 } } });
    const first = new Worker(app, { queue: ["a", "b"], concurrency: 2, logger: silentLogger });
    expect(new Worker(app, first.config).config).toBe(first.config);
    expect(new Worker(app, app.config.worker).config).toBe(app.config.worker);
    const copy = /unknown option "queues" \(did you mean "queue"\? .*taken as it is, but not a copy of one\)/;
    expect(() => new Worker(app, { ...first.config, shutdownTimeout: 5 })).toThrow(copy);
    expect(() => new Worker(app, { ...app.config.worker, logger: silentLogger })).toThrow(copy);
    expect(() => new Worker(app, { queues: ["a"] } as WorkerInit)).toThrow(copy);
  });

  it("a Worker given its own logger and a logLevel says that the level is not applied", () => {
    const app = new Chicory({ broker: "memory", backend: "memory", config: { env: {} } });
    const { logger, lines } = capturingLogger();
    new Worker(app, { logger, logLevel: "WARNING" });
    new Worker(app, { logger });
    expect(lines.map((line) => [line.level, line.message])).toEqual([
      ["warn", expect.stringMatching(/^Worker: logLevel applies to the default logger only and is ignored/)],
    ]);
  });
});

describe("redactSecrets", () => {
  it("masks the password where it stands on its own, not inside other words (a short one garbled every message)", () => {
    const text = "connect to redis://u:s3cret@h failed (AUTH s3cret): s3cret.";
    expect(redactSecrets(text, "s3cret")).toBe("connect to redis://u:***@h failed (AUTH ***): ***.");
    const refusal = "NOPERM this user has no permissions to run the 'eval' command";
    // before: "NOPERM this us***r has no p***rmissions to run th*** '***val' command"
    expect(redactSecrets(refusal, "e")).toBe(refusal);
    expect(redactSecrets("a+b(c) was refused: a+b(c)", "a+b(c)")).toBe("*** was refused: ***");
  });
});

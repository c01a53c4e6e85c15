/**
 * URL forms and environment variables of the SQLite broker (no I/O).
 */
import { describe, expect, it } from "vitest";
import { SqliteBroker } from "../../src/brokers/sqlite/index.js";
import {
  parseSqliteUrl,
  resolveSqliteBrokerOptions,
  sqliteBrokerOptionsFromEnv,
} from "../../src/brokers/sqlite/sqlite-options.js";
import { createBroker } from "../../src/drivers.js";
import { ConfigurationError } from "../../src/errors.js";

describe("sqlite broker options", () => {
  it.each([
    ["sqlite:relative/path.db", "relative/path.db"],
    ["sqlite:chicory.db", "chicory.db"],
    ["sqlite:/abs/path.db", "/abs/path.db"],
    ["sqlite:///abs/path.db", "/abs/path.db"],
    ["sqlite::memory:", ":memory:"],
    ["SQLITE:x.db", "x.db"],
  ])("parses %s", (url, path) => {
    expect(parseSqliteUrl(url)).toBe(path);
  });

  it.each(["sqlite:", "sqlite://", "redis://x"])("rejects %s", (url) => {
    expect(() => parseSqliteUrl(url)).toThrow(ConfigurationError);
  });

  it("reads the environment, with defaults", () => {
    expect(sqliteBrokerOptionsFromEnv(undefined, {})).toMatchObject({
      path: "chicory.db",
      claimMinIdleMs: 30_000,
      busyTimeoutMs: 5000,
      synchronous: "NORMAL",
      pollMinMs: 5,
      pollMaxMs: 25,
    });
    const env = {
      CHICORY_BROKER_SQLITE_PATH: "/data/q.db",
      CHICORY_BROKER_SQLITE_CLAIM_MIN_IDLE_MS: "1000",
      CHICORY_BROKER_SQLITE_BUSY_TIMEOUT_MS: "100",
      CHICORY_BROKER_SQLITE_SYNCHRONOUS: "full",
      CHICORY_BROKER_SQLITE_POLL_MIN_MS: "2",
      CHICORY_BROKER_SQLITE_POLL_MAX_MS: "40",
    };
    expect(sqliteBrokerOptionsFromEnv(undefined, env)).toMatchObject({
      path: "/data/q.db",
      claimMinIdleMs: 1000,
      busyTimeoutMs: 100,
      synchronous: "FULL",
      pollMinMs: 2,
      pollMaxMs: 40,
    });
    // a URL wins over the path variable
    expect(sqliteBrokerOptionsFromEnv("sqlite:/x.db", env).path).toBe("/x.db");
  });

  it("fails fast on invalid values, naming the variable or option", () => {
    expect(() => sqliteBrokerOptionsFromEnv(undefined, { CHICORY_BROKER_SQLITE_CLAIM_MIN_IDLE_MS: "soon" })).toThrow(
      /CHICORY_BROKER_SQLITE_CLAIM_MIN_IDLE_MS/,
    );
    expect(() => sqliteBrokerOptionsFromEnv(undefined, { CHICORY_BROKER_SQLITE_SYNCHRONOUS: "OFF" })).toThrow(
      /CHICORY_BROKER_SQLITE_SYNCHRONOUS/,
    );
    expect(() => resolveSqliteBrokerOptions({ claimMinIdleMs: 5 })).toThrow(/claimMinIdleMs/);
  });

  it("resolves the path from url or path", () => {
    expect(resolveSqliteBrokerOptions({}).path).toBe("chicory.db");
    expect(resolveSqliteBrokerOptions({ url: "sqlite:///tmp/a.db" }).path).toBe("/tmp/a.db");
    expect(resolveSqliteBrokerOptions({ url: "sqlite:b.db", path: "c.db" }).path).toBe("c.db");
  });

  it("is registered in drivers under the kind and the URL scheme", () => {
    const byUrl = createBroker("sqlite:///tmp/chicory-x.db", { env: {} });
    expect(byUrl).toBeInstanceOf(SqliteBroker);
    expect((byUrl as SqliteBroker).path).toBe("/tmp/chicory-x.db");
    expect(byUrl.displayUrl).toBe("sqlite:/tmp/chicory-x.db");
    const byKind = createBroker("sqlite", { env: { CHICORY_BROKER_SQLITE_PATH: "jobs.db" } });
    expect((byKind as SqliteBroker).path).toBe("jobs.db");
    expect(byKind.capabilities).toMatchObject({ durable: true, multiProcess: true, priorities: true });
  });
});

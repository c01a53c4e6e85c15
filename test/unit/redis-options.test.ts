/**
 * Redis connection and broker/backend settings: URL over host/port, TLS, ACL user, env
 * variables, masking, validation. No I/O (nothing connects).
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Cluster, Redis } from "ioredis";
import { describe, expect, it, vi } from "vitest";
import { RedisBackend } from "../../src/backends/redis/index.js";
import { RedisBroker } from "../../src/brokers/redis/index.js";
import { queueKeys } from "../../src/brokers/redis/redis-keys.js";
import { DeadlinePassed } from "../../src/core/sleep.js";
import { createBackend, createBroker, createDefaultBackend } from "../../src/drivers.js";
import { ConfigurationError, ValidationError } from "../../src/errors.js";
import { isRefusedUnapplied, type RedisClientLike } from "../../src/redis/redis-client.js";
import {
  connectFailureHint,
  describeRedisError,
  primaryFailureHint,
  sentinelFailureHint,
} from "../../src/redis/redis-connect.js";
import {
  isReadonlyReconnector,
  READONLY_WINDOW_MS,
  readonlyReconnector,
  resolveRedisConnection,
} from "../../src/redis/redis-options.js";
import { readonlyReconnector as publicReconnector } from "../../src/redis.js";

const PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

describe("redis connection options", () => {
  it("a URL wins over host/port and carries ACL user, password, db and TLS", () => {
    const r = resolveRedisConnection(
      { host: "ignored", port: 1 },
      { CHICORY_BROKER_REDIS_URL: "rediss://alice:s3cret@redis.example:6380/4" },
      "CHICORY_BROKER_REDIS",
    );
    expect(r.options).toMatchObject({
      host: "redis.example",
      port: 6380,
      db: 4,
      username: "alice",
      password: "s3cret",
    });
    expect(r.options.tls).toEqual({});
    expect(r.displayUrl).not.toContain("s3cret");
  });

  it("a URL without credentials takes the user and password from the variables; credentials in the URL win", () => {
    const env = {
      CHICORY_BROKER_REDIS_URL: "redis://redis.example:6380/4",
      CHICORY_BROKER_REDIS_USERNAME: "app",
      CHICORY_BROKER_REDIS_PASSWORD: "pw-canary",
    };
    const r = resolveRedisConnection({}, env, "CHICORY_BROKER_REDIS");
    expect(r.options).toMatchObject({ host: "redis.example", db: 4, username: "app", password: "pw-canary" });
    expect(r.password).toBe("pw-canary");
    expect(r.displayUrl).not.toContain("pw-canary");
    const own = resolveRedisConnection(
      {},
      { ...env, CHICORY_BROKER_REDIS_URL: "redis://:url-pw@redis.example/0" },
      "CHICORY_BROKER_REDIS",
    );
    expect(own.options).toMatchObject({ username: undefined, password: "url-pw" });
    // a user in the URL without a password: the password from the variable (before: none)
    const userOnly = resolveRedisConnection(
      {},
      { ...env, CHICORY_BROKER_REDIS_URL: "redis://worker@redis.example/0" },
      "CHICORY_BROKER_REDIS",
    );
    expect(userOnly.options).toMatchObject({ username: "worker", password: "pw-canary" });
    expect(userOnly.displayUrl).not.toContain("pw-canary");
  });

  it("a URL without a database path takes the db option or _DB (before: database 0, both dropped without a word); a path wins", () => {
    const prefix = "CHICORY_BROKER_REDIS";
    const fromOption = resolveRedisConnection({ url: "redis://redis.example:6380", db: 4 }, {}, prefix);
    expect(fromOption.options).toMatchObject({ host: "redis.example", port: 6380, db: 4 });
    expect(fromOption.displayUrl).toBe("redis://redis.example:6380/4");
    const fromEnv = resolveRedisConnection(
      {},
      { [`${prefix}_URL`]: "redis://:pw@redis.example/", [`${prefix}_DB`]: "5" },
      prefix,
    );
    expect(fromEnv.options).toMatchObject({ db: 5, password: "pw" });
    expect(fromEnv.displayUrl).toBe("redis://:***@redis.example/5");
    const path = resolveRedisConnection({ url: "redis://redis.example/2", db: 4 }, { [`${prefix}_DB`]: "5" }, prefix);
    expect(path.options).toMatchObject({ db: 2 });
    expect(resolveRedisConnection({ url: "redis://redis.example" }, {}, prefix).options).toMatchObject({ db: 0 });
    expect(() => resolveRedisConnection({ url: "redis://redis.example", db: -1 }, {}, prefix)).toThrow(/db/);
    const sentinel = resolveRedisConnection({ url: "redis+sentinel://s1,s2/mymaster/3", db: 4 }, {}, prefix);
    expect(sentinel.options).toMatchObject({ db: 3 });
  });

  it("a redis:// URL with the tls option is shown as rediss:// (TLS is on)", () => {
    const r = resolveRedisConnection({ url: "redis://:pw@redis.example:6380/1", tls: {} }, {}, "CHICORY_BROKER_REDIS");
    expect(r.options.tls).toEqual({});
    expect(r.displayUrl).toBe("rediss://:***@redis.example:6380/1");
  });

  it("reads host, port, db, username and password from the environment", () => {
    const r = resolveRedisConnection(
      {},
      {
        CHICORY_BACKEND_REDIS_HOST: "h",
        CHICORY_BACKEND_REDIS_PORT: "7000",
        CHICORY_BACKEND_REDIS_DB: "2",
        CHICORY_BACKEND_REDIS_USERNAME: "u",
        CHICORY_BACKEND_REDIS_PASSWORD: "pw-canary",
      },
      "CHICORY_BACKEND_REDIS",
    );
    expect(r.options).toMatchObject({ host: "h", port: 7000, db: 2, username: "u", password: "pw-canary" });
    expect(r.displayUrl).toBe("redis://u:***@h:7000/2");
  });

  it("a host as a URL has it ([::1] bracketed) works; a host with its port or a URL is refused naming where it came from", () => {
    const env = (host: string) => ({ P_HOST: host, P_PORT: "6390", P_USERNAME: "we:ird", P_PASSWORD: "pw" });
    const bracketed = resolveRedisConnection({}, env("[::1]"), "P");
    expect(bracketed.options).toMatchObject({ host: "::1", port: 6390 });
    // shown as a URL would have it: the address bracketed, the user name percent-encoded
    expect(bracketed.displayUrl).toBe("redis://we%3Aird:***@[::1]:6390/0");
    expect(resolveRedisConnection({ host: "::1" }, {}, "P").displayUrl).toBe("redis://[::1]:6379/0");
    expect(() => resolveRedisConnection({}, env("127.0.0.1:6393"), "P")).toThrow(
      /P_HOST: expected a host name or address, got "127\.0\.0\.1:6393": the port goes in P_PORT/,
    );
    expect(() => resolveRedisConnection({}, env("redis://:s3cret@h:6379"), "P")).toThrow(
      /P_HOST: expected a host name or address, got "redis:\/\/:\*\*\*@h:6379": a URL goes in P_URL/,
    );
    expect(() => resolveRedisConnection({ host: "h:1" }, {}, "P")).toThrow(/^host: expected a host name/);
    expect(() => resolveRedisConnection({ host: "[127.0.0.1]" }, {}, "P")).toThrow(
      /brackets are for an IPv6 address only/,
    );
    expect(() => resolveRedisConnection({ host: "[::1" }, {}, "P")).toThrow(/brackets are for an IPv6 address only/);
    for (const socket of ["./redis.sock", "unix:///tmp/r.sock"]) {
      expect(() => resolveRedisConnection({ host: socket }, {}, "P")).toThrow(
        /a Unix socket is reached through a client/,
      );
    }
    expect(() => resolveRedisConnection({}, env("/tmp/redis.sock"), "P")).toThrow(
      /P_HOST: .*a Unix socket is reached through a client: client: new Redis\(\{ path \}\)/,
    );
  });

  it("integer variables are decimal digits: hex and exponents are refused, as the CLI's flags refuse them", () => {
    for (const port of ["0x18F9", "6.39e3"]) {
      expect(() => resolveRedisConnection({}, { P_PORT: port }, "P")).toThrow(
        `P_PORT: expected an integer from 1 to 65535, got "${port}"`,
      );
    }
  });

  it("a length cap given as an option is named as the option, not as its variable", () => {
    expect(() => new RedisBroker({ url: "redis://h/0", env: {}, maxStreamLength: -1 })).toThrow(
      /^maxStreamLength: expected an integer of at least 0, got -1/,
    );
    expect(() => new RedisBroker({ url: "redis://h/0", env: { CHICORY_BROKER_REDIS_DLQ_MAX_LENGTH: "1.5" } })).toThrow(
      /^CHICORY_BROKER_REDIS_DLQ_MAX_LENGTH: expected an integer/,
    );
  });

  it("rejects bad URLs and ports with the variable named", () => {
    expect(() => resolveRedisConnection({ url: "http://x" }, {}, "P")).toThrow(ConfigurationError);
    expect(() => resolveRedisConnection({}, { P_PORT: "99999" }, "P")).toThrow(/P_PORT/);
    // the hint names the port and host, not only the escapes of a password
    for (const url of ["redis://127.0.0.1:99999/0", "redis://:pw@:6390/0"]) {
      expect(() => resolveRedisConnection({ url }, {}, "P")).toThrow(/a port from 1 to 65535/);
    }
  });

  it("refuses a % that is not a percent-escape in the password or user name, never dropping the secret", () => {
    const password = () => resolveRedisConnection({ url: "redis://:ab%zzcd@h:6379/0" }, {}, "P");
    expect(password).toThrow(ConfigurationError);
    expect(password).toThrow(
      "invalid Redis URL redis://:***@h:6379/0: the password has a % that is not a percent-escape (write % as %25)",
    );
    expect(() => resolveRedisConnection({ url: "redis://us%zz:pw@h/0" }, {}, "P")).toThrow(
      "invalid Redis URL redis://us%zz:***@h/0: the user name has a % that is not a percent-escape",
    );
    const escaped = resolveRedisConnection({ url: "redis://u%25:ab%25zz@h/0" }, {}, "P");
    expect(escaped.options).toMatchObject({ username: "u%", password: "ab%zz" });
  });

  it("refuses query parameters instead of ignoring them (a ?password= would be dropped)", () => {
    const query = () => resolveRedisConnection({ url: "redis://h:6379?password=s3cret" }, {}, "P");
    expect(query).toThrow(ConfigurationError);
    expect(query).toThrow(/query parameters are not read; give the password as redis:\/\/:password@host .* P_PASSWORD/);
    expect(query).not.toThrow(/s3cret/);
  });

  it("refuses a URL with one slash after the scheme (its host was read as the database)", () => {
    for (const url of ["redis:/127.0.0.1:6391", "redis:127.0.0.1", "rediss:/h:6380/0"]) {
      expect(() => resolveRedisConnection({ url }, {}, "P")).toThrow(
        new RegExp(`^invalid Redis URL ${url.replace(/[/.]/g, "\\$&")}: expected rediss?://\\[user:password@\\]host`),
      );
    }
  });

  it("refuses an unknown option key of RedisBroker and RedisBackend (an untyped caller's typo)", () => {
    const url = "redis://127.0.0.1:6379/0";
    expect(() => new RedisBroker({ url, env: {}, claimMinIdle: 5 } as never)).toThrow(
      /^RedisBroker: unknown option "claimMinIdle" \(options: url, host, .*claimMinIdleMs/,
    );
    expect(() => new RedisBackend({ url, env: {}, ttl: 9 } as never)).toThrow(
      /^RedisBackend: unknown option "ttl" \(options: url, .*resultTtl/,
    );
    expect(() => new RedisBroker({ url, env: {}, blockMs: 10, prefetch: 0 })).not.toThrow();
    expect(() => new RedisBroker({ url: 42 as never, env: {} })).toThrow(
      "url: expected a redis://, rediss:// or redis+sentinel:// URL string, got number",
    );
  });

  it("takes the database path as decimal digits only", () => {
    for (const path of ["0x1", "1e1", "-1", "1.5", "db"]) {
      expect(() => resolveRedisConnection({ url: `redis://h:6379/${path}` }, {}, "P")).toThrow(
        `database in redis://h:6379/${path}: expected an integer from 0 to 100000 as the path (/2), got "${path}"`,
      );
    }
    expect(resolveRedisConnection({ url: "redis://h:6379/15" }, {}, "P").options).toMatchObject({ db: 15 });
    expect(() => resolveRedisConnection({ url: "redis://h:6379/100001" }, {}, "P")).toThrow(ConfigurationError);
  });

  it("refuses a fragment instead of ignoring it; a # in a password is refused as a bad URL", () => {
    const hash = () => resolveRedisConnection({ url: "redis://:s3cret@h:6379/0#primary" }, {}, "P");
    expect(hash).toThrow(/invalid Redis URL redis:\/\/:\*\*\*@h:6379\/0#primary: a "#" starts a fragment/);
    expect(hash).not.toThrow(/s3cret/);
    const inPassword = () => resolveRedisConnection({ url: "redis://:pa#ss3cret@h:6379/0" }, {}, "P");
    expect(inPassword).toThrow(/percent-encode @ : \/ \? # %/);
    expect(inPassword).not.toThrow(/ss3cret/);
    const encoded = resolveRedisConnection({ url: "redis://:pa%23ss@h:6379/0" }, {}, "P");
    expect(encoded.options).toMatchObject({ password: "pa#ss" });
  });
});

describe("redis+sentinel:// URLs", () => {
  const resolve = (url: string, env: Record<string, string> = {}) =>
    resolveRedisConnection({ url }, env, "CHICORY_BROKER_REDIS");

  it("names the sentinels (port 26379 by default), the primary, the database and its credentials", () => {
    const r = resolve("redis+sentinel://app:s%40cret@s1,s2:26380,[::1]:26381/mymaster/2");
    expect(r.options).toMatchObject({
      sentinels: [
        { host: "s1", port: 26379 },
        { host: "s2", port: 26380 },
        { host: "::1", port: 26381 },
      ],
      name: "mymaster",
      db: 2,
      username: "app",
      password: "s@cret",
      failoverDetector: true,
    });
    expect(r.displayUrl).toBe("redis+sentinel://app:***@s1,s2:26380,[::1]:26381/mymaster/2");
    expect(resolve("redis+sentinel://s1/mymaster").options).toMatchObject({ db: 0, name: "mymaster" });
    // credentials from the variables when the URL has none, as for redis://
    expect(resolve("redis+sentinel://s1/m", { CHICORY_BROKER_REDIS_PASSWORD: "pw" }).options.password).toBe("pw");
  });

  it("is a Redis broker and backend URL", () => {
    const url = "redis+sentinel://s1/mymaster";
    expect(createBroker(url, { env: {} })).toBeInstanceOf(RedisBroker);
    expect(createBackend(url, { env: {} })).toBeInstanceOf(RedisBackend);
  });

  it("refuses what it would not read: no name, a bad database or port, a query, TLS", () => {
    const refused = (url: string, env: Record<string, string> = {}) => {
      let error: unknown;
      try {
        resolve(url, env);
      } catch (e) {
        error = e;
      }
      expect(error, url).toBeInstanceOf(ConfigurationError);
      return (error as Error).message;
    };
    expect(refused("redis+sentinel://s1")).toMatch(/the primary's name is missing/);
    expect(refused("redis+sentinel://s1/m/x")).toMatch(/the database an integer/);
    expect(refused("redis+sentinel://s1/m/1/2")).toMatch(/expected \/<primary name>\[\/db\]/);
    expect(refused("redis+sentinel://s1:99999/m")).toMatch(/sentinel "s1:99999": expected host\[:port\]/);
    expect(refused("redis+sentinel://:pw@s1/m?password=x")).toMatch(/query parameters and fragments are not read/);
    expect(refused("redis+sentinel://:pw@s1/m?password=x")).not.toContain("pw");
    expect(refused("redis+sentinel://s1/m", { CHICORY_BROKER_REDIS_TLS_CA: PEM })).toMatch(
      /CHICORY_BROKER_REDIS_TLS_\* is set but the URL redis\+sentinel:\/\/s1\/m is not TLS: use rediss\+sentinel:\/\//,
    );
    expect(refused("redis+sentinel:/s1/m")).toMatch(/expected redis\+sentinel:\/\//);
    // a "/", "?" or "#" left unencoded in the password: refused, quoting none of it (before,
    // the rest of it was quoted as a sentinel, or taken for the primary's name and accepted)
    for (const url of [
      "redis+sentinel://:SuperSecret/Part2@s1:26379,s2/m/0",
      "redis+sentinel://app:Sec:ret99/xyz@s1/m",
      "redis+sentinel://u:123/def@s1",
      "redis+sentinel://:top?Secret@s1/m",
      "redis+sentinel://:top#Secret@s1/m",
    ]) {
      const message = refused(url);
      expect(message).toMatch(/percent-encode @ : \/ \? # %/);
      for (const part of ["Secret", "Part2", "ret99", "xyz", "123", "def"]) expect(message, url).not.toContain(part);
    }
  });

  it("rediss+sentinel:// (or the tls option) is TLS to the sentinels and to the servers they name", () => {
    const r = resolve("rediss+sentinel://:pw@s1,s2/m", { CHICORY_BROKER_REDIS_TLS_CA: PEM });
    expect(r.options).toMatchObject({
      tls: { ca: PEM.trim() },
      sentinelTLS: { ca: PEM.trim() },
      enableTLSForSentinelMode: true,
      password: "pw",
    });
    expect(r.displayUrl).toBe("rediss+sentinel://:***@s1,s2/m");
    expect(resolve("rediss+sentinel://s1/m").options).toMatchObject({ tls: {}, sentinelTLS: {} });
    const opted = resolveRedisConnection(
      { url: "redis+sentinel://s1/m", tls: { servername: "x" } },
      {},
      "CHICORY_BROKER_REDIS",
    );
    expect(opted.options).toMatchObject({ tls: { servername: "x" }, sentinelTLS: { servername: "x" } });
    expect(resolve("redis+sentinel://s1/m").options).not.toHaveProperty("sentinelTLS");
    expect(resolve("redis+sentinel://s1/m").options).not.toHaveProperty("tls");
    expect(createBroker("rediss+sentinel://s1/m", { env: {} })).toBeInstanceOf(RedisBroker);
  });

  it("the sentinels' own login comes from _SENTINEL_USERNAME/_PASSWORD or the options, never from the URL", () => {
    const r = resolve("redis+sentinel://:pw@s1/m", {
      CHICORY_BROKER_REDIS_SENTINEL_USERNAME: "watcher",
      CHICORY_BROKER_REDIS_SENTINEL_PASSWORD: "spw",
    });
    expect(r.options).toMatchObject({ password: "pw", sentinelUsername: "watcher", sentinelPassword: "spw" });
    expect(r.displayUrl).not.toContain("spw");
    const given = resolveRedisConnection(
      { url: "redis+sentinel://s1/m", sentinelPassword: "opt" },
      { CHICORY_BROKER_REDIS_SENTINEL_PASSWORD: "env" },
      "CHICORY_BROKER_REDIS",
    );
    expect(given.options).toMatchObject({ sentinelPassword: "opt" });
    // credentials from the variables for the primary, and the sentinels' apart from them
    const split = resolve("redis+sentinel://s1/m", {
      CHICORY_BROKER_REDIS_PASSWORD: "pw",
      CHICORY_BROKER_REDIS_SENTINEL_PASSWORD: "spw",
    });
    expect(split.options).toMatchObject({ password: "pw", sentinelPassword: "spw" });
    expect(resolve("redis+sentinel://:pw@s1/m").options).not.toHaveProperty("sentinelPassword");
  });

  it("refuses a sentinel login where there are no sentinels (it would be ignored)", () => {
    for (const [options, env] of [
      [{ url: "redis://h:6379/0" }, { CHICORY_BROKER_REDIS_SENTINEL_PASSWORD: "spw" }],
      [{ url: "rediss://h:6379/0", sentinelUsername: "watcher" }, {}],
      [{ host: "h" }, { CHICORY_BROKER_REDIS_SENTINEL_USERNAME: "watcher" }],
    ] as const) {
      let error: unknown;
      try {
        resolveRedisConnection(options, env, "CHICORY_BROKER_REDIS");
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(ConfigurationError);
      expect((error as Error).message).toMatch(
        /sentinelUsername\/sentinelPassword \(or CHICORY_BROKER_REDIS_SENTINEL_USERNAME\/_SENTINEL_PASSWORD\) are set but the connection is not through sentinels/,
      );
      expect((error as Error).message).not.toContain("spw");
    }
  });
});

describe("redis TLS settings", () => {
  const P = "CHICORY_BROKER_REDIS";

  it("verifies the server certificate by default: rediss:// gives empty TLS options", () => {
    const r = resolveRedisConnection({ url: "rediss://h:6380/0" }, {}, P);
    expect(r.options.tls).toEqual({});
    expect(r.tlsUnverified).toBe(false);
  });

  it("reads the CA from a PEM file path or from PEM text (TLS_CA)", () => {
    const dir = mkdtempSync(join(tmpdir(), "chicory-ca-"));
    try {
      const path = join(dir, "ca.pem");
      writeFileSync(path, PEM);
      const fromPath = resolveRedisConnection({ url: "rediss://h/0" }, { [`${P}_TLS_CA`]: path }, P);
      expect(fromPath.options.tls).toEqual({ ca: PEM });
      const fromText = resolveRedisConnection({ url: "rediss://h/0" }, { [`${P}_TLS_CA`]: PEM }, P);
      expect(fromText.options.tls).toEqual({ ca: PEM.trim() });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("refuses an unreadable or non-PEM TLS_CA with the variable named", () => {
    expect(() =>
      resolveRedisConnection({ url: "rediss://h/0" }, { [`${P}_TLS_CA`]: "/nonexistent/ca.pem" }, P),
    ).toThrow(/CHICORY_BROKER_REDIS_TLS_CA: cannot read/);
    expect(() => resolveRedisConnection({ url: "rediss://h/0" }, { [`${P}_TLS_CA`]: "-----BEGIN KEY" }, P)).toThrow(
      /CHICORY_BROKER_REDIS_TLS_CA: expected a PEM certificate/,
    );
  });

  it("turns verification off only when TLS_REJECT_UNAUTHORIZED is explicitly false", () => {
    const off = resolveRedisConnection({ url: "rediss://h/0" }, { [`${P}_TLS_REJECT_UNAUTHORIZED`]: "false" }, P);
    expect(off.options.tls).toEqual({ rejectUnauthorized: false });
    expect(off.tlsUnverified).toBe(true);
    const on = resolveRedisConnection({ url: "rediss://h/0" }, { [`${P}_TLS_REJECT_UNAUTHORIZED`]: "true" }, P);
    expect(on.tlsUnverified).toBe(false);
    expect(() =>
      resolveRedisConnection({ url: "rediss://h/0" }, { [`${P}_TLS_REJECT_UNAUTHORIZED`]: "nope" }, P),
    ).toThrow(/TLS_REJECT_UNAUTHORIZED/);
    const byOption = resolveRedisConnection({ url: "rediss://h/0", tls: { rejectUnauthorized: false } }, {}, P);
    expect(byOption.tlsUnverified).toBe(true);
  });

  it("options.tls wins over the variables key by key", () => {
    const r = resolveRedisConnection(
      { url: "rediss://h/0", tls: { servername: "redis.internal" } },
      { [`${P}_TLS_CA`]: PEM, [`${P}_TLS_REJECT_UNAUTHORIZED`]: "false" },
      P,
    );
    expect(r.options.tls).toEqual({ ca: PEM.trim(), rejectUnauthorized: false, servername: "redis.internal" });
  });

  it("refuses TLS variables with a redis:// URL instead of silently connecting in clear text", () => {
    expect(() => resolveRedisConnection({ url: "redis://h/0" }, { [`${P}_TLS_CA`]: PEM }, P)).toThrow(
      /CHICORY_BROKER_REDIS_TLS_\* is set but the URL redis:\/\/h\/0 is not TLS/,
    );
  });

  it("host/port settings use TLS when a TLS variable is set (display scheme rediss)", () => {
    const r = resolveRedisConnection({}, { [`${P}_HOST`]: "h", [`${P}_TLS_CA`]: PEM }, P);
    expect(r.options.tls).toEqual({ ca: PEM.trim() });
    expect(r.displayUrl).toBe("rediss://h:6379/0");
  });
});

describe("redis connect failure hints", () => {
  const P = "CHICORY_BACKEND_REDIS";
  it("names the setting to look at for auth and certificate failures", () => {
    expect(connectFailureHint(new Error("NOAUTH Authentication required."), P)).toContain(`${P}_PASSWORD`);
    expect(connectFailureHint(new Error("WRONGPASS invalid username-password pair"), P)).toContain(
      "authentication failed",
    );
    const selfSigned = Object.assign(new Error("self-signed certificate"), { code: "DEPTH_ZERO_SELF_SIGNED_CERT" });
    expect(connectFailureHint(selfSigned, P)).toContain(`${P}_TLS_CA`);
    expect(connectFailureHint(selfSigned, P, true, true)).toContain(
      `the CA given (tls.ca or ${P}_TLS_CA) does not sign it; give the CA that does`,
    );
    const wrongName = Object.assign(new Error("Hostname/IP does not match"), { code: "ERR_TLS_CERT_ALTNAME_INVALID" });
    expect(connectFailureHint(wrongName, P)).toContain("not valid for this host name");
    expect(connectFailureHint(new Error("connect ECONNREFUSED 127.0.0.1:1"), P)).toBe("");
    // not a Redis server, or TLS on one side only
    expect(connectFailureHint(new Error('Unknown RESP type 65 "A". Please report this.'), P)).toContain(
      "does not speak the Redis protocol",
    );
    expect(connectFailureHint(new Error("Connection is closed."), P)).toContain("rediss://");
    const timedOut = Object.assign(new Error("connect ETIMEDOUT"), { code: "ETIMEDOUT" });
    expect(connectFailureHint(timedOut, P, true)).toContain("is TLS on at that port?");
    expect(connectFailureHint(timedOut, P)).toContain("check host, port and firewall");
    expect(describeRedisError(new Error('Unknown RESP type 65 "A". Please report this.'), undefined)).toBe(
      'Unknown RESP type 65 "A".',
    );
    const dropped = new Error(
      'Reached the max retries per request limit (which is 0). Refer to "maxRetriesPerRequest" option for details.',
    );
    expect(describeRedisError(dropped, undefined)).toBe(
      "the connection to Redis was lost (reconnecting; this command was not sent again)",
    );
    const offline = new Error("Stream isn't writeable and enableOfflineQueue options is false");
    expect(describeRedisError(offline, undefined)).toBe(
      "not connected to Redis (reconnecting; this command was not sent)",
    );
  });
});

describe("redis Sentinel failure hints", () => {
  const P = "CHICORY_BROKER_REDIS";
  const via = (url: string, env: Record<string, string> = {}) => resolveRedisConnection({ url }, env, P);
  const coded = (message: string, code: string) => Object.assign(new Error(message), { code });

  it("a sentinel's refusal names the sentinels' login, their certificate, or TLS on one side only", () => {
    const plain = via("redis+sentinel://s1/m");
    const tls = via("rediss+sentinel://s1/m", { [`${P}_TLS_CA`]: PEM });
    expect(sentinelFailureHint(new Error("WRONGPASS invalid username-password pair"), plain)).toContain(
      `the sentinels refused the login: their own user and password are ${P}_SENTINEL_USERNAME/_SENTINEL_PASSWORD`,
    );
    expect(sentinelFailureHint(coded("self-signed certificate", "DEPTH_ZERO_SELF_SIGNED_CERT"), tls)).toContain(
      `the CA given (tls.ca or ${P}_TLS_CA) does not sign it`,
    );
    expect(
      sentinelFailureHint(
        coded("self-signed certificate", "DEPTH_ZERO_SELF_SIGNED_CERT"),
        via("rediss+sentinel://s1/m"),
      ),
    ).toContain(`give its CA with the tls.ca option or ${P}_TLS_CA`);
    expect(sentinelFailureHint(coded("Hostname/IP does not match", "ERR_TLS_CERT_ALTNAME_INVALID"), tls)).toContain(
      "not valid for the name it is reached at",
    );
    expect(sentinelFailureHint(coded("read ECONNRESET", "ECONNRESET"), plain)).toContain(
      "sentinels with TLS need rediss+sentinel://",
    );
    expect(sentinelFailureHint(coded("read ECONNRESET", "ECONNRESET"), tls)).toBe("");
    expect(sentinelFailureHint(new DeadlinePassed(1000), tls)).toContain(
      "sentinels without TLS need redis+sentinel://",
    );
    expect(sentinelFailureHint(coded("connect ECONNREFUSED 127.0.0.1:1", "ECONNREFUSED"), plain)).toBe("");
  });

  it("the primary's refusal, through sentinels, speaks of the address they gave and of rediss+sentinel://", () => {
    const plain = via("redis+sentinel://s1/m");
    const tls = via("rediss+sentinel://s1/m");
    expect(primaryFailureHint(coded("Hostname/IP does not match", "ERR_TLS_CERT_ALTNAME_INVALID"), tls)).toContain(
      "not valid for the address the sentinels gave for it",
    );
    expect(primaryFailureHint(new Error("Connection is closed."), plain)).toContain(
      "TLS to the sentinels and the servers is rediss+sentinel://",
    );
    expect(primaryFailureHint(coded("connect ETIMEDOUT", "ETIMEDOUT"), tls)).toContain(
      "no TLS answer from the primary the sentinels named",
    );
    expect(primaryFailureHint(new Error("WRONGPASS invalid username-password pair"), plain)).toContain(
      `${P}_USERNAME/_PASSWORD`,
    );
    // not through sentinels: as before
    expect(primaryFailureHint(new Error("Connection is closed."), via("redis://h:6379/0"))).toContain(
      "a Redis with TLS only needs rediss://",
    );
  });

  it("the default backend on the broker's URL shares its TLS and sentinel login even with a login of its own", () => {
    // (seen through what the backend refuses: the copied setting with a URL that cannot use it)
    const refusal = (brokerUrl: string, env: Record<string, string>) => {
      try {
        createDefaultBackend(brokerUrl, { env });
      } catch (error) {
        expect(error).toBeInstanceOf(ConfigurationError);
        return (error as Error).message;
      }
      return "created";
    };
    const sentinelLogin = { CHICORY_BROKER_REDIS_SENTINEL_PASSWORD: "spw" };
    expect(refusal("redis://h:6379/0", sentinelLogin)).toMatch(/CHICORY_BACKEND_REDIS_SENTINEL_USERNAME/);
    expect(refusal("redis://h:6379/0", { ...sentinelLogin, CHICORY_BACKEND_REDIS_PASSWORD: "own" })).toMatch(
      /CHICORY_BACKEND_REDIS_SENTINEL_USERNAME/,
    );
    expect(refusal("redis://h:6379/0", { CHICORY_BROKER_REDIS_TLS_CA: PEM, CHICORY_BACKEND_REDIS_DB: "1" })).toMatch(
      /CHICORY_BACKEND_REDIS_TLS_\* is set but the URL/,
    );
    // its own setting wins
    expect(
      refusal("rediss+sentinel://s1/m", {
        CHICORY_BROKER_REDIS_TLS_CA: "/nonexistent/ca.pem",
        CHICORY_BACKEND_REDIS_TLS_CA: PEM,
      }),
    ).toBe("created");
  });
});

describe("redis broker and backend settings", () => {
  it("reads CHICORY_BROKER_REDIS_* with defaults", () => {
    const broker = new RedisBroker({
      env: {
        CHICORY_BROKER_REDIS_KEY_PREFIX: "app1",
        CHICORY_BROKER_REDIS_CONSUMER_GROUP: "g",
        CHICORY_BROKER_REDIS_BLOCK_MS: "250",
        CHICORY_BROKER_REDIS_CLAIM_MIN_IDLE_MS: "9000",
        CHICORY_BROKER_REDIS_MAX_STREAM_LENGTH: "10",
        CHICORY_BROKER_REDIS_DLQ_MAX_LENGTH: "20",
        CHICORY_BROKER_REDIS_PUBLISH_TIMEOUT_MS: "1500",
        CHICORY_BROKER_REDIS_PREFETCH: "16",
      },
    });
    expect(broker.settings).toEqual({
      keyPrefix: "app1",
      consumerGroup: "g",
      blockMs: 250,
      claimMinIdleMs: 9000,
      prefetch: 16,
      publishTimeoutMs: 1500,
      maxStreamLength: 10,
      dlqMaxLength: 20,
      waitReplicas: 0,
      waitTimeoutMs: 1000,
    });
    expect(new RedisBroker({ env: {} }).settings).toMatchObject({
      keyPrefix: "chicory",
      prefetch: 0,
      maxStreamLength: 0,
      dlqMaxLength: 0,
      publishTimeoutMs: 10_000,
    });
  });

  it("waitReplicas: read from its variables, off by default; a wait as long as the publish timeout or a Cluster client is refused", () => {
    expect(new RedisBroker({ env: {} }).settings).toMatchObject({ waitReplicas: 0, waitTimeoutMs: 1000 });
    const env = { CHICORY_BROKER_REDIS_WAIT_REPLICAS: "2", CHICORY_BROKER_REDIS_WAIT_TIMEOUT_MS: "250ms" };
    expect(new RedisBroker({ env }).settings).toMatchObject({ waitReplicas: 2, waitTimeoutMs: 250 });
    expect(new RedisBroker({ env, waitReplicas: 1 }).settings.waitReplicas).toBe(1);
    expect(() => new RedisBroker({ env: {}, waitReplicas: 1, waitTimeoutMs: 3001 })).toThrow(
      /^waitTimeoutMs \(3001\) is too long for publishTimeoutMs \(10000\): .* 3 × waitTimeoutMs \+ 1000 ms/,
    );
    expect(new RedisBroker({ env: {}, waitReplicas: 1, waitTimeoutMs: 3000 }).settings.waitTimeoutMs).toBe(3000);
    expect(
      () => new RedisBroker({ env: {}, waitReplicas: 1, waitTimeoutMs: 27_001, publishTimeoutMs: 90_000 }),
    ).toThrow(/3 × waitTimeoutMs \+ 9000 ms/);
    expect(() => new RedisBroker({ env: { CHICORY_BROKER_REDIS_WAIT_REPLICAS: "all" } })).toThrow(
      /^CHICORY_BROKER_REDIS_WAIT_REPLICAS: expected an integer/,
    );
    const client = { status: "ready" } as unknown as RedisClientLike;
    expect(new RedisBroker({ env: {}, client, waitReplicas: 1 }).settings.waitReplicas).toBe(1);
    const cluster = { status: "ready", isCluster: true } as unknown as RedisClientLike;
    expect(() => new RedisBroker({ env: {}, client: cluster, waitReplicas: 1 })).toThrow(
      /^waitReplicas is not for a Redis Cluster: /,
    );
    expect(new RedisBroker({ env: {}, client: cluster }).settings.waitReplicas).toBe(0);
  });

  it("takes a unit string in a _MS variable (a bare number is milliseconds), and names it when wrong", () => {
    const broker = new RedisBroker({
      env: {
        CHICORY_BROKER_REDIS_BLOCK_MS: "2s",
        CHICORY_BROKER_REDIS_CLAIM_MIN_IDLE_MS: "1.5m",
        CHICORY_BROKER_REDIS_PUBLISH_TIMEOUT_MS: "250ms",
      },
    });
    expect(broker.settings).toMatchObject({ blockMs: 2000, claimMinIdleMs: 90_000, publishTimeoutMs: 250 });
    expect(() => new RedisBroker({ env: { CHICORY_BROKER_REDIS_BLOCK_MS: "20m" } })).toThrow(
      /^CHICORY_BROKER_REDIS_BLOCK_MS: expected an integer from 1 to 600000, got "20m"/,
    );
    expect(() => new RedisBroker({ env: { CHICORY_BROKER_REDIS_BLOCK_MS: "2 weeks" } })).toThrow(
      /^CHICORY_BROKER_REDIS_BLOCK_MS: expected milliseconds \(5000\) or a unit string/,
    );
    expect(() => new RedisBroker({ env: { CHICORY_BROKER_REDIS_BLOCK_MS: "1.5" } })).toThrow(
      /^CHICORY_BROKER_REDIS_BLOCK_MS: expected an integer/,
    );
  });

  it("names the variable of a bad key prefix or consumer group, or the option", () => {
    expect(() => new RedisBroker({ env: { CHICORY_BROKER_REDIS_KEY_PREFIX: "bad prefix" } })).toThrow(
      /^CHICORY_BROKER_REDIS_KEY_PREFIX: "bad prefix" is invalid/,
    );
    expect(() => new RedisBroker({ env: { CHICORY_BROKER_REDIS_CONSUMER_GROUP: "a{b}" } })).toThrow(
      /^CHICORY_BROKER_REDIS_CONSUMER_GROUP: /,
    );
    expect(() => new RedisBackend({ env: { CHICORY_BACKEND_REDIS_KEY_PREFIX: "x y" } })).toThrow(
      /^CHICORY_BACKEND_REDIS_KEY_PREFIX: /,
    );
    expect(() => new RedisBroker({ keyPrefix: "bad prefix", env: {} })).toThrow(/^keyPrefix: /);
  });

  it("rejects a read-ahead (prefetch) out of 0-1000, naming the option or the variable", () => {
    expect(() => new RedisBroker({ prefetch: -1, env: {} })).toThrow(ConfigurationError);
    expect(() => new RedisBroker({ prefetch: 1001, env: {} })).toThrow(/prefetch: expected an integer from 0 to 1000/);
    expect(() => new RedisBroker({ env: { CHICORY_BROKER_REDIS_PREFETCH: "lots" } })).toThrow(
      /CHICORY_BROKER_REDIS_PREFETCH: expected an integer from 0 to 1000, got "lots"/,
    );
    expect(new RedisBroker({ prefetch: 8, env: { CHICORY_BROKER_REDIS_PREFETCH: "16" } }).settings.prefetch).toBe(8);
  });

  it("names the variable of a value out of range, not the option it sets", async () => {
    const { Chicory } = await import("../../src/app.js");
    expect(() => new RedisBroker({ env: { CHICORY_BROKER_REDIS_BLOCK_MS: "900000" } })).toThrow(
      /^CHICORY_BROKER_REDIS_BLOCK_MS: expected an integer from 1 to 600000, got "900000"/,
    );
    expect(() => new RedisBackend({ env: { CHICORY_BACKEND_REDIS_RESULT_TTL: "4000000000" } })).toThrow(
      /^CHICORY_BACKEND_REDIS_RESULT_TTL: at most 3153600000 s/,
    );
    expect(() => new RedisBroker({ env: { CHICORY_BROKER_REDIS_CLAIM_MIN_IDLE_MS: "5" } })).toThrow(
      /^CHICORY_BROKER_REDIS_CLAIM_MIN_IDLE_MS: expected an integer of at least 100, got "5"/,
    );
    // read through CHICORY_BROKER_URL=redis: the error still starts with the variable at fault
    const env = { CHICORY_BROKER_URL: "redis", CHICORY_BROKER_REDIS_BLOCK_MS: "900000" };
    expect(() => new Chicory({ config: { env } })).toThrow(/^CHICORY_BROKER_REDIS_BLOCK_MS: /);
  });

  it("rejects a key prefix that could escape its hash tag, and invalid queue names", () => {
    expect(() => new RedisBroker({ keyPrefix: "a{b}", env: {} })).toThrow(ConfigurationError);
    expect(() => new RedisBackend({ keyPrefix: "a b", env: {} })).toThrow(ConfigurationError);
    expect(() => queueKeys("p", "x{y}")).toThrow(ValidationError);
    expect(queueKeys("p", "a.b:c-d").stream).toBe("p:stream:{a.b:c-d}");
  });

  it("the result backend refuses a Redis Cluster client (its scripts and reads need one node)", async () => {
    const cluster = new Cluster([{ host: "127.0.0.1", port: 6379 }], { lazyConnect: true });
    try {
      const backend = new RedisBackend({ client: cluster as unknown as RedisClientLike, env: {} });
      await expect(backend.connect()).rejects.toThrow(/needs a single Redis node/);
      await expect(backend.connect()).rejects.toBeInstanceOf(ConfigurationError);
    } finally {
      cluster.disconnect();
    }
  });

  it("a broker or backend given a client names the client's server in messages, password masked", () => {
    const single = new Redis({
      host: "10.1.2.3",
      port: 6395,
      db: 5,
      username: "app",
      password: "pw-canary",
      lazyConnect: true,
    });
    const cluster = new Cluster(
      [
        { host: "10.0.0.1", port: 7000 },
        { host: "10.0.0.2", port: 7001 },
      ],
      { lazyConnect: true, redisOptions: { password: "pw-canary" } },
    );
    try {
      // the variables describe another server: the client wins
      const env = { CHICORY_BROKER_REDIS_URL: "redis://elsewhere:1/0", CHICORY_BACKEND_REDIS_HOST: "elsewhere" };
      const broker = new RedisBroker({ client: single as unknown as RedisClientLike, env });
      expect(broker.displayUrl).toBe("redis://app:***@10.1.2.3:6395/5");
      const backend = new RedisBackend({ client: single as unknown as RedisClientLike, env });
      expect(backend.displayUrl).toBe("redis://app:***@10.1.2.3:6395/5");
      const onCluster = new RedisBroker({ client: cluster as unknown as RedisClientLike, env: {} });
      expect(onCluster.displayUrl).toBe("redis://:***@10.0.0.1:7000,10.0.0.2:7001 (cluster)");
    } finally {
      single.disconnect();
      cluster.disconnect();
    }
  });

  it.each([
    [
      "ioredis's own keyPrefix, naming Chicory's option",
      { keyPrefix: "app:" },
      /keyPrefix "app:".*keyPrefix: "app:chicory"/,
    ],
    ["stringNumbers (integer replies as strings would be misread)", { stringNumbers: true }, /stringNumbers: true/],
  ])("a broker or backend refuses a client with %s", (_name, option, message) => {
    const single = new Redis({ ...option, lazyConnect: true });
    const cluster = new Cluster([{ host: "127.0.0.1", port: 7000 }], { lazyConnect: true, redisOptions: option });
    try {
      for (const make of [
        () => new RedisBroker({ client: single as unknown as RedisClientLike, env: {} }),
        () => new RedisBackend({ client: single as unknown as RedisClientLike, env: {} }),
        () => new RedisBroker({ client: cluster as unknown as RedisClientLike, env: {} }),
      ]) {
        expect(make).toThrow(ConfigurationError);
        expect(make).toThrow(message);
      }
    } finally {
      single.disconnect();
      cluster.disconnect();
    }
  });

  it("a broker refuses a Cluster client with its own keyPrefix, and names the variable too", () => {
    const cluster = new Cluster([{ host: "127.0.0.1", port: 7000 }], { lazyConnect: true, keyPrefix: "app:" });
    try {
      expect(() => new RedisBroker({ client: cluster as unknown as RedisClientLike, env: {} })).toThrow(
        /keyPrefix "app:".*CHICORY_BROKER_REDIS_KEY_PREFIX/,
      );
    } finally {
      cluster.disconnect();
    }
  });

  it("reads the backend TTL in seconds or with a unit", () => {
    expect(new RedisBackend({ env: {} }).settings.resultTtlSeconds).toBe(86_400);
    expect(new RedisBackend({ env: { CHICORY_BACKEND_REDIS_RESULT_TTL: "60" } }).settings.resultTtlSeconds).toBe(60);
    expect(new RedisBackend({ resultTtl: "2h", env: {} }).settings.resultTtlSeconds).toBe(7200);
    expect(new RedisBackend({ resultTtl: 0, env: {} }).settings.resultTtlSeconds).toBe(0); // forever
    expect(new RedisBackend({ resultTtl: "1ms", env: {} }).settings.resultTtlSeconds).toBe(1);
    expect(() => new RedisBackend({ resultTtl: 1e13, env: {} })).toThrow(/resultTtl: at most/);
  });

  it("is registered in drivers for redis:// and rediss:// with the password masked", () => {
    const broker = createBroker("redis://:pw-canary@127.0.0.1:6379/0", { env: {} });
    expect(broker.kind).toBe("redis");
    expect(broker.displayUrl).not.toContain("pw-canary");
    const backend = createBackend("rediss://127.0.0.1:6380/1", { env: {} });
    expect(backend.kind).toBe("redis");
    expect(createBroker("redis", { env: { CHICORY_BROKER_REDIS_HOST: "h" } }).displayUrl).toBe("redis://h:6379/0");
  });
});

describe("readonlyReconnector", () => {
  it("reconnects and resends on READONLY: the replies of one moment share a reconnect, at most 3 per 10 s", () => {
    vi.useFakeTimers({ now: 1_000_000, toFake: ["Date", "performance"] });
    try {
      const decide = readonlyReconnector();
      const readonly = new Error("READONLY You can't write against a read only replica.");
      expect(decide(new Error("ERR something else"))).toBe(false);
      // the writes in flight when the primary was demoted: one reconnect, every one resent
      expect([decide(readonly), decide(readonly), decide(readonly), decide(readonly)]).toEqual([2, 2, 2, 2]);
      vi.advanceTimersByTime(1500);
      expect(decide(readonly)).toBe(2); // a second reconnect (still a replica behind the address)
      vi.advanceTimersByTime(1500);
      expect(decide(readonly)).toBe(2); // a third
      vi.advanceTimersByTime(1500);
      expect(decide(readonly)).toBe(false); // then the writes fail at once
      vi.advanceTimersByTime(READONLY_WINDOW_MS);
      expect(decide(readonly)).toBe(2);
      expect(isReadonlyReconnector(decide)).toBe(true);
      expect(publicReconnector).toBe(readonlyReconnector); // for clients given with `client:`
      expect(isReadonlyReconnector(() => 2)).toBe(false);
    } finally {
      vi.useRealTimers();
    }
  });
});

describe("isRefusedUnapplied: Redis refused a command before it wrote anything", () => {
  const reply = (message: string) => Object.assign(new Error(message), { name: "ReplyError" });
  it("is true for the refusals Redis makes before a command runs or at a script's first write", () => {
    for (const message of [
      "OOM command not allowed when used memory > 'maxmemory'.",
      "READONLY You can't write against a read only replica.",
      "NOREPLICAS Not enough good replicas to write.",
      "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.",
      "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
      "LOADING Redis is loading the dataset in memory",
      "BUSY Redis is busy running a script.",
    ]) {
      expect(isRefusedUnapplied(reply(message))).toBe(true);
    }
  });
  it("is false for errors that may follow a script's first write, and for errors Redis did not answer", () => {
    expect(isRefusedUnapplied(reply("WRONGTYPE Operation against a key holding the wrong kind of value"))).toBe(false);
    expect(isRefusedUnapplied(reply("ERR user_script:12: Script attempted to access a non local key"))).toBe(false);
    expect(isRefusedUnapplied(new Error("OOM command not allowed"))).toBe(false); // not Redis's reply
    expect(isRefusedUnapplied(new Error("Connection is closed."))).toBe(false);
  });
});

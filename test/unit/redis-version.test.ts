import { describe, expect, it } from "vitest";
import { brokerVersionProblem, parseRedisVersion } from "../../src/redis/redis-version.js";

/** Lines of `INFO server` as Redis sends them, with `redis_version` set to `version`. */
const info = (version: string) =>
  `# Server\r\nredis_version:${version}\r\nredis_git_sha1:00000000\r\nredis_mode:standalone\r\nos:Linux\r\n`;

describe("redis version check", () => {
  it("reads redis_version from INFO server", () => {
    expect(parseRedisVersion(info("7.0.15"))).toEqual([7, 0, 15]);
    expect(parseRedisVersion(info("6.2"))).toEqual([6, 2, 0]);
    expect(parseRedisVersion("# Server\r\nredis_mode:standalone\r\n")).toBeUndefined();
    expect(parseRedisVersion(info("unknown"))).toBeUndefined();
  });

  it("refuses a server older than 6.2, naming its version and what the broker needs", () => {
    for (const old of ["6.0.16", "6.1.9", "5.0.7", "4.0.14"]) {
      const problem = brokerVersionProblem(info(old));
      expect(problem).toContain(`the server runs Redis ${old}; the Redis broker needs Redis 6.2 or later`);
      expect(problem).toContain("XGROUP CREATECONSUMER");
    }
  });

  it("accepts 6.2 and later, and a reply without a version it can read", () => {
    for (const version of ["6.2.0", "6.2.14", "7.0.15", "7.4.1", "8.0.2", "10.1.0"]) {
      expect(brokerVersionProblem(info(version))).toBeUndefined();
    }
    expect(brokerVersionProblem("# Server\r\nos:Linux\r\n")).toBeUndefined();
    expect(brokerVersionProblem("")).toBeUndefined();
  });
});

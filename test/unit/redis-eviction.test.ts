import { describe, expect, it } from "vitest";
import { evictionRisk, memoryPolicy } from "../../src/redis/redis-eviction.js";

/** The two lines of `INFO memory` the check reads, among others, as Redis sends them. */
const info = (maxmemory: number, policy: string) =>
  `# Memory\r\nused_memory:1048576\r\nmaxmemory:${maxmemory}\r\nmaxmemory_human:1M\r\nmaxmemory_policy:${policy}\r\nallocator_frag_ratio:1.00\r\n`;

describe("redis eviction check", () => {
  it("reads maxmemory and the policy from INFO memory", () => {
    expect(memoryPolicy(info(67108864, "allkeys-lru"))).toEqual({ maxmemory: 67108864, policy: "allkeys-lru" });
    expect(memoryPolicy("# Memory\r\nused_memory:1\r\n")).toBeUndefined();
  });

  it("sees no risk with noeviction, without a memory limit, or in a reply it cannot read", () => {
    for (const data of ["queues", "records"] as const) {
      expect(evictionRisk(info(67108864, "noeviction"), data)).toBeUndefined();
      expect(evictionRisk(info(0, "allkeys-lru"), data)).toBeUndefined();
      expect(evictionRisk("ERR unknown", data)).toBeUndefined();
    }
  });

  it("warns the broker of allkeys-* policies for its queues, of volatile-* ones for its call receipts (queue keys have no TTL)", () => {
    const risk = evictionRisk(info(67108864, "allkeys-lfu"), "queues");
    expect(risk).toContain("maxmemory-policy allkeys-lfu (maxmemory 67108864 bytes)");
    expect(risk).toContain("queued messages, delayed jobs and DLQ entries would be lost");
    expect(risk).toContain("set maxmemory-policy noeviction");
    for (const policy of ["volatile-lru", "volatile-ttl"]) {
      const receipts = evictionRisk(info(67108864, policy), "queues");
      expect(receipts).toContain(`maxmemory-policy ${policy}`);
      expect(receipts).toContain("call receipts");
      expect(receipts).not.toContain("queued messages");
    }
  });

  it("warns the backend of every evicting policy (its keys have TTLs)", () => {
    for (const policy of ["allkeys-random", "volatile-ttl", "volatile-lru"]) {
      const risk = evictionRisk(info(1024, policy), "records");
      expect(risk).toContain(`maxmemory-policy ${policy}`);
      expect(risk).toContain("results, task states and worker heartbeats");
    }
  });
});

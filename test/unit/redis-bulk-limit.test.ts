import { describe, expect, it } from "vitest";
import { BulkLimitReader } from "../../src/redis/redis-bulk-limit.js";
import type { RedisClientLike } from "../../src/redis/redis-client.js";

/**
 * A stand-in for a server whose `CONFIG GET proto-max-bulk-len` answers `configReply` and whose
 * `GETBIT` refuses offsets at or past `limit` bytes, as Redis does; it counts the commands.
 */
function server(configReply: unknown, limit: number) {
  const calls: string[] = [];
  const client = {
    options: {},
    call: async (command: string, ...args: string[]) => {
      calls.push(command);
      if (command === "CONFIG") return configReply;
      if (command === "GETBIT") {
        if (Number(args[1]) >= limit * 8) throw new Error("ERR bit offset is not an integer or out of range");
        return 0;
      }
      throw new Error(`unexpected ${command}`);
    },
  } as unknown as RedisClientLike;
  return { client, calls };
}

function reader(steps: string[] = []) {
  return new BulkLimitReader({
    probeKey: "chicory:probe",
    guard: (operation) => operation,
    onStepFailed: (step) => void steps.push(step),
  });
}

describe("redis bulk limit reader", () => {
  it("reads proto-max-bulk-len with CONFIG GET as the default user", async () => {
    const { client, calls } = server(["proto-max-bulk-len", "1048576"], 1048576);
    expect(await reader().read(client)).toMatchObject({ bytes: 1048576, atLeast: false });
    expect(calls).toEqual(["CONFIG"]);
  });

  it("a server that answers CONFIG GET without the value (it hides it) is probed with GETBIT, and not asked again", async () => {
    const steps: string[] = [];
    const limits = reader(steps);
    const { client, calls } = server([], 2 * 1024 * 1024);
    expect(await limits.read(client)).toMatchObject({ bytes: 2 * 1024 * 1024, atLeast: false });
    expect(steps).toEqual(["config"]);
    expect(calls[0]).toBe("CONFIG");
    expect(calls.slice(1).every((c) => c === "GETBIT")).toBe(true);
    calls.length = 0;
    expect(await limits.read(client)).toMatchObject({ bytes: 2 * 1024 * 1024 });
    expect(calls).toEqual(["GETBIT", "GETBIT"]); // the value the last probe found, checked
  });
});

/**
 * A SQL backend keeps nothing per finished operation: each one races the connection's
 * disconnect, and that race is undone when the operation ends (it once kept every result read
 * until `disconnect()`). SQLite in memory, results of 200 kB read 200 times; heap compared
 * after full collections.
 */

import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { describe, expect, it } from "vitest";
import { createBackend } from "../../../src/drivers.js";
import { successRecord } from "../../contract/contract-helpers.js";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

function heapMiB(): number {
  gc();
  gc();
  return process.memoryUsage().heapUsed / 2 ** 20;
}

describe("sql backend: memory per operation", () => {
  it("reading a 200 kB result 200 times leaves the heap where it was", async () => {
    const backend = createBackend("sqlite::memory:", { env: {} });
    await backend.connect();
    try {
      await backend.storeResult(successRecord("big", "x".repeat(200_000)));
      expect((await backend.getResult("big"))?.state).toBe("SUCCESS");
      const before = heapMiB();
      for (let i = 0; i < 200; i++) await backend.getResult("big");
      const grown = heapMiB() - before;
      expect(grown).toBeLessThan(10); // 200 x 200 kB = 38 MiB if each result were kept
    } finally {
      await backend.disconnect();
    }
  });
});

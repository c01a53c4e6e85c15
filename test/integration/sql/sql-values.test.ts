/**
 * Precedence under concurrent duplicate writes, and hostile values stored and returned
 * intact, on each real database.
 */
import { afterEach, describe, expect, it } from "vitest";
import type { TaskState } from "../../../src/backends/backend.js";
import { uniqueName } from "../../helpers/services.js";
import { sqlTargets } from "./sql-targets.js";
import { until } from "./sql-test-helpers.js";

const HOSTILE = [
  `it's "quoted" \`back\``,
  "'; DROP TABLE x;--",
  "nul\u0000byte\u0000",
  "emoji 🎉🦀 𠜎",
  "back\\slash \\0 \\\\",
  "Case-ID",
  "case-id",
  "trailing ",
  "trailing",
];

for (const t of await sqlTargets()) {
  describe.skipIf(t.skip)(`sql backend values: ${t.name}`, () => {
    afterEach(() => t.cleanup());

    it("keeps a terminal state against 60 concurrent late STARTED/RETRY writes and duplicate terminals", async () => {
      const backend = t.create();
      await backend.connect();
      try {
        const ids = Array.from({ length: 5 }, () => uniqueName("p-"));
        await Promise.all(
          ids.map((id) => backend.storeResult({ taskId: id, state: "SUCCESS", result: 1, updatedAt: "" })),
        );
        const late: TaskState[] = ["STARTED", "RETRY", "PENDING"];
        await Promise.all(
          ids.flatMap((id) =>
            Array.from({ length: 12 }, (_, i) =>
              i % 4 === 3
                ? backend.storeResult({ taskId: id, state: "SUCCESS", result: i, updatedAt: "" })
                : backend.setState(id, late[i % 3] ?? "STARTED", { error: { type: "E", message: "late" }, retries: i }),
            ),
          ),
        );
        for (const id of ids) {
          const got = await backend.getResult(id);
          expect(got?.state).toBe("SUCCESS");
          expect(typeof got?.result).toBe("number");
        }
      } finally {
        await backend.disconnect();
      }
    });

    it("stores hostile task ids, names and errors intact and keeps near-equal ids apart", async () => {
      const backend = t.create();
      await backend.connect();
      try {
        for (const [i, value] of HOSTILE.entries()) {
          await backend.storeResult({
            taskId: value,
            state: "FAILURE",
            error: { type: value, message: value, stack: value },
            taskName: value,
            retries: i,
            updatedAt: "",
          });
        }
        for (const [i, value] of HOSTILE.entries()) {
          const got = await backend.getResult(value);
          expect(got?.taskId).toBe(value);
          expect(got?.taskName).toBe(value);
          expect(got?.error).toEqual({ type: value, message: value, stack: value });
          expect(got?.retries).toBe(i);
        }
        const worker = "w'\u0000🎉\\";
        await backend.storeHeartbeat(
          {
            workerId: worker,
            hostname: worker,
            pid: 1,
            queue: "q",
            concurrency: 1,
            tasksProcessed: 0,
            tasksFailed: 0,
            activeTasks: 0,
            startedAt: new Date().toISOString(),
            lastHeartbeat: null,
            isRunning: true,
            uptimeSeconds: 0,
          },
          30,
        );
        expect((await backend.getHeartbeat(worker))?.hostname).toBe(worker);
        await backend.deleteResult(HOSTILE[1] ?? "");
        expect(await backend.getResult(HOSTILE[1] ?? "")).toBeNull();
        expect(await backend.getResult(HOSTILE[0] ?? "")).not.toBeNull();
      } finally {
        await backend.disconnect();
      }
    });

    it("expired results are invisible, replaceable and removed by cleanup", { timeout: 10_000 }, async () => {
      const backend = t.create({ resultTtl: 1 });
      await backend.connect();
      try {
        const [gone, replaced] = [uniqueName("ttl-"), uniqueName("ttl-")];
        for (const id of [gone, replaced]) {
          await backend.storeResult({ taskId: id, state: "SUCCESS", result: "x", updatedAt: "" });
          expect(await backend.getResult(id)).not.toBeNull();
        }
        await until(async () => (await backend.getResult(gone)) === null, 5000, 100);
        // `replaced` was stored a little later: it expires a little later (on a loaded host, after the check above)
        await until(async () => (await backend.getResult(replaced)) === null, 5000, 100);
        // an expired terminal row no longer blocks a new run of the same id
        await backend.setState(replaced, "STARTED");
        expect((await backend.getResult(replaced))?.state).toBe("STARTED");
        expect(await backend.cleanupExpiredResults()).toBeGreaterThanOrEqual(1);
      } finally {
        await backend.disconnect();
      }
    });
  });
}

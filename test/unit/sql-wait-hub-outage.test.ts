/**
 * The outage notice of the SQL backends' wait hub: waits whose reads fail, or get no answer, for
 * OUTAGE_NOTICE_MS give one warning (whatever the number of waits and polls), once per outage,
 * and one info line when a read succeeds again; the waits themselves go on and resolve as before.
 * (The same notice on real databases: test/integration/sql/sql-backend-outage.test.ts.)
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { TaskRecord } from "../../src/backends/backend.js";
import { OUTAGE_NOTICE_MS } from "../../src/backends/outage-notice.js";
import { SqlWaitHub } from "../../src/backends/sql/sql-wait-hub.js";
import { textLogger } from "../helpers/capturing-logger.js";

const BACKEND = "postgres backend postgres://app:***@db:5432/app";

function success(taskId: string): TaskRecord {
  return { taskId, state: "SUCCESS", result: taskId, updatedAt: "2024-01-01T00:00:00.000Z" };
}

/** A table whose reads can be made to hang (`hang`) or fail (`fail`), and released. */
function flakyTable() {
  const records = new Map<string, TaskRecord>();
  const held: Array<() => void> = [];
  const state = { mode: "up" as "up" | "hang" | "fail", reads: 0 };
  const read = (ids: readonly string[]) => ids.flatMap((id) => records.get(id) ?? []);
  const fetch = (ids: readonly string[]): Promise<TaskRecord[]> => {
    state.reads++;
    if (state.mode === "fail") {
      return Promise.reject(new Error("getResult failed on postgres://app:***@db:5432/app: connect ECONNREFUSED"));
    }
    if (state.mode === "up") return Promise.resolve(read(ids));
    // a connection that waits for its connect timeout, a half-open socket: answered once it is back
    return new Promise((resolve) => held.push(() => resolve(read(ids))));
  };
  const up = () => {
    state.mode = "up";
    for (const release of held.splice(0)) release();
  };
  return { records, state, fetch, up };
}

describe("SqlWaitHub outage notice", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("failing reads: one warning after OUTAGE_NOTICE_MS for all waits and polls, one info line when reads succeed, each outage told", async () => {
    const table = flakyTable();
    const { logger, lines, visible } = textLogger();
    const hub = new SqlWaitHub(table.fetch, 100, logger, { logger, backend: BACKEND });
    table.state.mode = "fail";
    const waits = Array.from({ length: 100 }, (_, i) => hub.wait(`t${i}`));
    await vi.advanceTimersByTimeAsync(OUTAGE_NOTICE_MS - 200);
    expect(table.state.reads).toBeGreaterThan(40);
    expect(visible()).toEqual([]); // not before the reads have failed that long
    expect(lines).toHaveLength(1); // the first failure, at debug level
    expect(lines[0]).toMatch(/^debug: fetching waited results failed/);
    await vi.advanceTimersByTimeAsync(400);
    expect(visible()).toEqual([
      `warn: ${BACKEND}: results cannot be read (backend unreachable?); waits go on (until their timeout, if any) and resolve once it answers (getResult failed on postgres://app:***@db:5432/app: connect ECONNREFUSED)`,
    ]);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(lines).toHaveLength(2); // once per outage, not per poll or per wait
    for (let i = 0; i < 100; i++) table.records.set(`t${i}`, success(`t${i}`));
    table.up();
    await vi.advanceTimersByTimeAsync(150);
    expect(await Promise.all(waits)).toEqual(Array.from({ length: 100 }, (_, i) => success(`t${i}`)));
    expect(lines).toHaveLength(3);
    expect(lines[2]).toMatch(
      new RegExp(`^info: ${escapeRegExp(BACKEND)}: results can be read again \\(after \\d+\\.\\d s\\)$`),
    );

    // a second outage is told again
    table.state.mode = "fail";
    const second = hub.wait("b");
    await vi.advanceTimersByTimeAsync(OUTAGE_NOTICE_MS + 200);
    expect(visible().filter((line) => line.startsWith("warn"))).toHaveLength(2);
    table.records.set("b", success("b"));
    table.up();
    await vi.advanceTimersByTimeAsync(150);
    expect(await second).toEqual(success("b"));
    expect(lines.at(-1)).toMatch(/^info: .*results can be read again/);
    hub.close();
  });

  it("reads that get no answer: one warning saying so after OUTAGE_NOTICE_MS; the waits resolve once the reads are answered", async () => {
    const table = flakyTable();
    const { logger, lines } = textLogger();
    const hub = new SqlWaitHub(table.fetch, 100, logger, { logger, backend: BACKEND });
    table.state.mode = "hang";
    const waits = [hub.wait("a"), hub.wait("b")];
    await vi.advanceTimersByTimeAsync(OUTAGE_NOTICE_MS - 1);
    expect(lines).toEqual([]); // counted from the unanswered read's send
    await vi.advanceTimersByTimeAsync(200);
    expect(lines).toEqual([
      expect.stringMatching(
        new RegExp(`^warn: ${escapeRegExp(BACKEND)}: results cannot be read .*\\(no answer for 5\\.\\d s\\)$`),
      ),
    ]);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(lines).toHaveLength(1);
    table.records.set("a", success("a"));
    table.records.set("b", success("b"));
    table.up();
    await vi.advanceTimersByTimeAsync(0);
    expect(await Promise.all(waits)).toEqual([success("a"), success("b")]);
    expect(lines[1]).toMatch(/^info: .*results can be read again/);
    hub.close();
  });

  it("says nothing of failures nobody waits through, nor of one shorter than OUTAGE_NOTICE_MS", async () => {
    const table = flakyTable();
    const { logger, visible } = textLogger();
    const hub = new SqlWaitHub(table.fetch, 100, logger, { logger, backend: BACKEND });
    table.state.mode = "fail";
    // a wait that gives up before the notice: nobody waits through the rest
    expect(await withTimers(hub.wait("gone", { timeoutMs: 1000 }), 1000)).toBeNull();
    await vi.advanceTimersByTimeAsync(OUTAGE_NOTICE_MS * 2);
    expect(visible()).toEqual([]);
    // a blip: failing for 3 s, then answered
    const blip = hub.wait("blip");
    await vi.advanceTimersByTimeAsync(3000);
    table.records.set("blip", success("blip"));
    table.up();
    await vi.advanceTimersByTimeAsync(150);
    expect(await blip).toEqual(success("blip"));
    await vi.advanceTimersByTimeAsync(OUTAGE_NOTICE_MS * 2);
    expect(visible()).toEqual([]);
    hub.close();
  });
});

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

async function withTimers<T>(promise: Promise<T>, ms: number): Promise<T> {
  await vi.advanceTimersByTimeAsync(ms);
  return promise;
}

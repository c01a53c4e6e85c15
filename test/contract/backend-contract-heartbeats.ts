/**
 * Backend contract, worker heartbeats: round trip, active list, TTL expiry and cleanup.
 */
import { expect, it } from "vitest";
import type { WorkerStats } from "../../src/backends/backend.js";
import { uniqueName } from "../helpers/services.js";
import type { BackendHarness } from "./backend-contract.js";
import { eventually, sleep } from "./contract-helpers.js";

/** A worker's stats with a random id. */
function stats(extra: Partial<WorkerStats> = {}): WorkerStats {
  const now = new Date();
  return {
    workerId: `host-1234-${uniqueName("")}`,
    hostname: "host-é🎉",
    pid: 1234,
    queue: "default,emails",
    concurrency: 8,
    tasksProcessed: 41,
    tasksFailed: 2,
    activeTasks: 3,
    startedAt: new Date(now.getTime() - 60_000).toISOString(),
    lastHeartbeat: now.toISOString(),
    isRunning: true,
    uptimeSeconds: 60,
    ...extra,
  };
}

/** The fields a backend must keep as given (it may stamp `lastHeartbeat` with its own clock). */
function kept(s: WorkerStats | null | undefined): Omit<WorkerStats, "lastHeartbeat"> | null {
  if (!s) return null;
  const { lastHeartbeat: _ignored, ...rest } = s;
  return rest;
}

/** Registers the heartbeat tests. */
export function backendHeartbeatTests(h: BackendHarness): void {
  it("storeHeartbeat / getHeartbeat round-trip and getActiveWorkers lists it", async () => {
    const backend = h.backend();
    const worker = stats();
    await backend.storeHeartbeat(worker, 30);
    const got = await backend.getHeartbeat(worker.workerId);
    expect(kept(got)).toEqual(kept(worker));
    expect(typeof got?.lastHeartbeat).toBe("string");
    expect(Number.isNaN(Date.parse(got?.lastHeartbeat ?? ""))).toBe(false);
    const active = await backend.getActiveWorkers();
    expect(kept(active.find((w) => w.workerId === worker.workerId))).toEqual(kept(worker));
    expect(await backend.getHeartbeat(uniqueName("missing-"))).toBeNull();
  });

  it("a second heartbeat replaces the first", async () => {
    const backend = h.backend();
    const worker = stats();
    await backend.storeHeartbeat(worker, 30);
    await backend.storeHeartbeat({ ...worker, tasksProcessed: 99, isRunning: false }, 30);
    const got = await backend.getHeartbeat(worker.workerId);
    expect(got?.tasksProcessed).toBe(99);
    expect(got?.isRunning).toBe(false);
    const active = await backend.getActiveWorkers();
    expect(active.filter((w) => w.workerId === worker.workerId)).toHaveLength(1);
  });

  it("a heartbeat expires after its TTL", { timeout: 10_000 }, async () => {
    const backend = h.backend();
    const worker = stats();
    await backend.storeHeartbeat(worker, 1);
    expect(await backend.getHeartbeat(worker.workerId)).not.toBeNull();
    await eventually(
      async () => {
        expect(await backend.getHeartbeat(worker.workerId)).toBeNull();
        expect((await backend.getActiveWorkers()).some((w) => w.workerId === worker.workerId)).toBe(false);
      },
      6000,
      100,
    );
  });

  it("cleanupStaleClients refuses a staleSeconds that is not a number of seconds >= 0", async () => {
    const backend = h.backend();
    for (const bad of [Number.NaN, -1, Number.POSITIVE_INFINITY]) {
      await expect(backend.cleanupStaleClients(bad)).rejects.toThrow(
        /cleanupStaleClients: staleSeconds must be a number of seconds >= 0/,
      );
    }
  });

  it("cleanupStaleClients removes stale workers and keeps fresh ones", { timeout: 15_000 }, async () => {
    const backend = h.backend();
    const old = stats();
    await backend.storeHeartbeat(old, 60);
    // backends may stamp heartbeats with their own (second-precision) clock, so age it for real
    await sleep(3200);
    const fresh = stats();
    await backend.storeHeartbeat(fresh, 60);
    const removed = await backend.cleanupStaleClients(2);
    expect(removed).toBeGreaterThanOrEqual(1);
    expect(await backend.getHeartbeat(old.workerId)).toBeNull();
    expect(kept(await backend.getHeartbeat(fresh.workerId))).toEqual(kept(fresh));
    const active = await backend.getActiveWorkers();
    expect(active.some((w) => w.workerId === old.workerId)).toBe(false);
    expect(active.some((w) => w.workerId === fresh.workerId)).toBe(true);
  });
}

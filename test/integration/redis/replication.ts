/**
 * Replication steps shared by the failover tests (servers they start themselves).
 */
import type { Redis } from "ioredis";
import { eventually } from "../../contract/contract-helpers.js";

/** Makes `replica` replicate the server on `primaryPort` and waits until its link is up. */
export async function replicate(replica: Redis, primaryPort: number): Promise<void> {
  await replica.call("REPLICAOF", "127.0.0.1", String(primaryPort));
  await eventually(async () => /master_link_status:up/.test(String(await replica.call("INFO", "replication"))), 10_000);
}

/** Waits until `replica` holds everything written to `primary` so far. */
export async function caughtUp(primary: Redis, replica: Redis): Promise<void> {
  const offset = async (admin: Redis) =>
    /master_repl_offset:(\d+)/.exec(String(await admin.call("INFO", "replication")))?.[1];
  await eventually(async () => (await offset(replica)) === (await offset(primary)), 10_000);
}

/** Waits until the primary has heard its replica acknowledge everything written to it so far. */
export async function acknowledged(primary: Redis): Promise<void> {
  await eventually(async () => {
    const info = String(await primary.call("INFO", "replication"));
    const acked = /slave0:[^\r\n]*\boffset=(\d+)/.exec(info)?.[1];
    return acked !== undefined && acked === /master_repl_offset:(\d+)/.exec(info)?.[1];
  }, 10_000);
}

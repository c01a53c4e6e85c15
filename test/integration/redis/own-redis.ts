/**
 * A redis-server of a test file's own (for tests that stall, fill or reconfigure a server,
 * which would disturb the others on the shared one): started before the block's tests, killed
 * after them, its data directory removed.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll } from "vitest";
import { freePort, OwnRedis } from "../../reliability/infra/redis-server.js";

/** The server and its data directory, set once the block's `beforeAll` has run. */
export interface OwnRedisHandle {
  readonly server: OwnRedis;
  readonly dir: string;
}

/** Registers the hooks that start and stop the server; call in a `describe` block. */
export function useOwnRedis(name: string): OwnRedisHandle {
  const own: { server?: OwnRedis; dir?: string } = {};
  beforeAll(async () => {
    own.dir = mkdtempSync(join(tmpdir(), `chicory-${name}-`));
    own.server = new OwnRedis(await freePort(), own.dir, "none");
    await own.server.start();
  });
  afterAll(async () => {
    await own.server?.kill();
    if (own.dir) rmSync(own.dir, { recursive: true, force: true });
  });
  return {
    get server(): OwnRedis {
      if (!own.server) throw new Error("the own redis-server is not started (use it inside a test)");
      return own.server;
    },
    get dir(): string {
      if (!own.dir) throw new Error("the own redis-server is not started (use it inside a test)");
      return own.dir;
    },
  };
}

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Chicory } from "../../src/index.js";
import { runWorkerE2E } from "./worker-e2e.js";

const dirs = new WeakMap<Chicory, string>();

runWorkerE2E({
  name: "sqlite broker + sqlite backend (embedded default)",
  createApp: () => {
    const dir = mkdtempSync(join(tmpdir(), "chicory-e2e-"));
    const app = new Chicory({
      config: {
        env: {
          CHICORY_BROKER_URL: `sqlite:${join(dir, "chicory.db")}`,
          CHICORY_BROKER_SQLITE_CLAIM_MIN_IDLE_MS: "1000",
        },
      },
    });
    dirs.set(app, dir);
    return app;
  },
  destroy: async (app) => rmSync(dirs.get(app) ?? "/nonexistent", { recursive: true, force: true }),
});

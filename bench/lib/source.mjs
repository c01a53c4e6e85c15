// Loads one of Chicory's internal modules from its TypeScript sources (through tsx), for the
// diagnostics that need what the package does not export (the Redis scripts as composed, the
// script runner). The bundled build (dist/) has no file per module to import instead.
// CHICORY_SRC: another source tree (default: this checkout's src/), e.g. a what-if copy.
import path from "node:path";
import { pathToFileURL } from "node:url";
import { tsImport } from "tsx/esm/api";
import { ROOT } from "./common.mjs";

const SRC = process.env.CHICORY_SRC ? path.resolve(process.env.CHICORY_SRC) : path.join(path.dirname(ROOT), "src");

/** The module at `file` (relative to the source tree, e.g. `redis/redis-client.ts`). */
export function importSource(file) {
  return tsImport(pathToFileURL(path.join(SRC, file)).href, import.meta.url);
}

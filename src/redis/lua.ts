/**
 * The Lua scripts the Redis adapters run, by their path under `src/` (for example
 * `brokers/redis/scripts/ack.lua`). Run from the sources, the files are read as they are asked
 * for. The package build (`scripts/build.mjs`) replaces this module with one that holds every
 * script's text, so the built code reads no file and does not depend on where the bundler puts
 * it.
 * @module
 */
import { readFileSync } from "node:fs";

/** The text of the Lua script at `path` (relative to `src/`, `/`-separated). */
export function readLua(path: string): string {
  return readFileSync(new URL(`../${path}`, import.meta.url), "utf8");
}

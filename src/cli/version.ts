/**
 * The package version, read at runtime from the package.json two levels above this file
 * (`dist/cli/version.js` -> `package.json`).
 * @module
 */
import { readFileSync } from "node:fs";

let cached: string | undefined;

/** The version of the installed `chicory` package. */
export function packageVersion(): string {
  if (cached === undefined) {
    try {
      const text = readFileSync(new URL("../../package.json", import.meta.url), "utf8");
      const version = (JSON.parse(text) as { version?: unknown }).version;
      cached = typeof version === "string" ? version : "0.0.0";
    } catch {
      cached = "0.0.0";
    }
  }
  return cached;
}

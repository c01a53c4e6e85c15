/**
 * Temporary database files for the SQLite broker tests: one per test in `os.tmpdir()`,
 * removed (with its `-wal` and `-shm` companions) afterwards.
 */
import { rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { uniqueName } from "../../helpers/services.js";

/** A fresh database path in the temp directory (the file does not exist yet). */
export function tempDbPath(prefix = "chicory-sqlite-"): string {
  return join(tmpdir(), `${uniqueName(prefix)}.db`);
}

/** Removes a database file and its WAL companions; missing files are fine. */
export function removeDb(path: string): void {
  for (const suffix of ["", "-wal", "-shm", "-journal"]) rmSync(`${path}${suffix}`, { force: true });
}

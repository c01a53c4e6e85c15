import { SqliteBackend } from "../../src/sqlite.js";
import { tempSqliteFile } from "../integration/sql/sql-test-helpers.js";
import { runBackendContract } from "./backend-contract.js";

const files = new WeakMap<object, () => void>();

runBackendContract({
  name: "sqlite",
  create: () => {
    const file = tempSqliteFile();
    const backend = new SqliteBackend({ path: file.path, env: {} });
    files.set(backend, file.remove);
    return backend;
  },
  destroy: async (backend) => files.get(backend)?.(),
});

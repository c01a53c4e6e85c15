import { describe } from "vitest";
import { PostgresBackend } from "../../src/sql.js";
import { SERVICES, skipUnless } from "../helpers/services.js";
import { dropPgTables, freshPrefix } from "../integration/sql/sql-test-helpers.js";
import { runBackendContract } from "./backend-contract.js";

const skip = await skipUnless("postgres");
const prefixes = new WeakMap<object, string>();

describe.skipIf(skip)("postgres backend", () => {
  runBackendContract({
    name: "postgres",
    create: () => {
      const tablePrefix = freshPrefix();
      const backend = new PostgresBackend({ url: SERVICES.postgres, tablePrefix, poolSize: 2, env: {} });
      prefixes.set(backend, tablePrefix);
      return backend;
    },
    destroy: async (backend) => {
      const prefix = prefixes.get(backend);
      if (prefix) await dropPgTables(prefix);
    },
  });
});

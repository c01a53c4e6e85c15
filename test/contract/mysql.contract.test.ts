import { describe } from "vitest";
import { MysqlBackend } from "../../src/sql.js";
import { SERVICES, skipUnless } from "../helpers/services.js";
import { dropMysqlTables, freshPrefix } from "../integration/sql/sql-test-helpers.js";
import { runBackendContract } from "./backend-contract.js";

const skip = await skipUnless("mysql");
const prefixes = new WeakMap<object, string>();

describe.skipIf(skip)("mysql backend", () => {
  runBackendContract({
    name: "mysql (MariaDB)",
    create: () => {
      const tablePrefix = freshPrefix();
      const backend = new MysqlBackend({ url: SERVICES.mysql, tablePrefix, poolSize: 2, env: {} });
      prefixes.set(backend, tablePrefix);
      return backend;
    },
    destroy: async (backend) => {
      const prefix = prefixes.get(backend);
      if (prefix) await dropMysqlTables(prefix);
    },
  });
});

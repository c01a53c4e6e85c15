/**
 * The broker contract on the SQLite broker: a temporary database file per test.
 */
import type { Broker } from "../../src/brokers/broker.js";
import { SqliteBroker } from "../../src/brokers/sqlite/index.js";
import { removeDb, tempDbPath } from "../integration/sqlite/sqlite-test-files.js";
import { runBrokerContract } from "./broker-contract.js";

const CLAIM_MIN_IDLE_MS = 1000;

runBrokerContract({
  name: "sqlite",
  listsDlqAfter: true,
  claimMinIdleMs: CLAIM_MIN_IDLE_MS,
  create: () => new SqliteBroker({ path: tempDbPath("chicory-contract-"), claimMinIdleMs: CLAIM_MIN_IDLE_MS }),
  destroy: async (broker: Broker) => {
    if (broker instanceof SqliteBroker) removeDb(broker.path);
  },
});

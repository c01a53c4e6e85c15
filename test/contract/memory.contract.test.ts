import { MemoryBackend } from "../../src/backends/memory.js";
import { MemoryBroker } from "../../src/brokers/memory.js";
import { runBackendContract } from "./backend-contract.js";
import { runBrokerContract } from "./broker-contract.js";

const claimMinIdleMs = 1000;

runBrokerContract({
  name: "memory",
  create: () => new MemoryBroker({ claimMinIdleMs }),
  claimMinIdleMs,
  listsDlqAfter: true,
});
runBackendContract({ name: "memory", create: () => new MemoryBackend() });

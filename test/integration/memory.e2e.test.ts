import { Chicory, MemoryBackend, MemoryBroker } from "../../src/index.js";
import { runWorkerE2E } from "./worker-e2e.js";

runWorkerE2E({
  name: "memory broker + memory backend",
  createApp: () =>
    new Chicory({
      broker: new MemoryBroker({ claimMinIdleMs: 1000 }),
      backend: new MemoryBackend(),
      config: { env: {} },
    }),
});

// Worker-process entry: node worker.mjs <driver>. Forked by the benchmark scripts (one process
// per worker); stops on an IPC 'stop' message, when the parent goes away, or after WORKER_MAX_MS.
import { hardDeadline } from "./lib/common.mjs";

const driverName = process.argv[2];
hardDeadline(Number(process.env.WORKER_MAX_MS || 30 * 60 * 1000), `worker ${driverName}`);
const driver = await import(`./drivers/${driverName}.mjs`);
const handle = await driver.startWorker({ queue: process.env.QUEUE_NAME || "bench" });
const stop = async () => {
  try {
    await Promise.race([handle.close(), new Promise((r) => setTimeout(r, 5000))]);
  } catch {}
  process.exit(0);
};
process.on("message", (m) => {
  if (m === "stop") void stop();
});
process.on("disconnect", () => void stop());
process.send("ready");

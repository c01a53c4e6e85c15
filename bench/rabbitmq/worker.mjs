// Worker-process entry: node worker.mjs <system>. Forked by throughput.mjs (one process per
// worker); stops on an IPC 'stop' message, when the parent goes away, or after WORKER_MAX_MS.
import { hardDeadline } from "./lib.mjs";

const system = process.argv[2];
hardDeadline(Number(process.env.WORKER_MAX_MS || 20 * 60 * 1000), `worker ${system}`);
const driver = await import(
  `./drivers/${system.startsWith("chicory") ? "chicory" : system.startsWith("amqplib") ? "amqplib" : system}.mjs`
);
const handle = await driver.startWorker({ prefix: process.env.BENCH_RMQ_PREFIX, system });
let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  try {
    await Promise.race([handle.close(), new Promise((r) => setTimeout(r, 6000))]);
  } catch {}
  process.exit(0);
};
process.on("message", (m) => {
  if (m === "stop") void stop();
  // CPU accounting for throughput.mjs (user + system microseconds of this process so far)
  else if (m === "cpu") process.send({ type: "cpu", ...process.cpuUsage() });
});
process.on("disconnect", () => void stop());
process.send("ready");

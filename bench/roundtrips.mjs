// Redis cost per job: runs one batch of N increment jobs per system (1 worker process) and diffs
// INFO commandstats and INFO cpu around it: commands per job (commandstats counts the commands a
// Lua script runs as well as the EVALSHA itself, as in the peers' numbers), Redis CPU µs per job,
// network bytes per job, and the per-command mix. commandstats is server-wide: run this when the
// Redis server is otherwise quiet (other users of the server add noise).
// With --monitor, also runs a smaller batch under MONITOR to split client-issued commands from
// commands run inside scripts (MONITOR slows Redis: its timings are not used).
// Usage: node bench/roundtrips.mjs [--systems=chicory,bullmq,bare-ioredis,beequeue] [--n=4096] [--reps=3] [--order=rotate|fixed]
//          [--monitor] [--monitor-n=1024] [--out=bench/results/roundtrips.json]
import {
  hardDeadline,
  median,
  orderArg,
  orderFor,
  parseArgs,
  procCpuSeconds,
  REDIS,
  sleep,
  startWorkers,
  withTimeout,
  writeJson,
} from "./lib/common.mjs";
import { commandStats, connect, flushBenchDb, redisInfo } from "./lib/redis.mjs";

const a = parseArgs();
const order = orderArg(a);
const systems = String(a.systems || "chicory,bullmq,bare-ioredis,beequeue").split(",");
const N = Number(a.n || 4096);
const reps = Number(a.reps || 3);
const monitorN = Number(a["monitor-n"] || 1024);
const out = a.out || `bench/results/tmp/roundtrips-${Date.now()}.json`;
hardDeadline(Number(a["max-minutes"] || 12) * 60000, "roundtrips");
const rows = [];
const monitorRows = [];
const started = new Date().toISOString();
const save = () => writeJson(out, { started, node: process.version, order, N, reps, rows, monitorN, monitorRows });

/** Runs fn() with a batch of the system's producer and 1 worker. */
async function withSystem(sys, tag, fn) {
  await flushBenchDb();
  const queue = `rt-${sys}-${tag}-${process.pid}`;
  const [base, ...experiments] = sys.split("+"); // e.g. chicory+no-started (see drivers/chicory.mjs)
  const driver = await import(`./drivers/${base}.mjs`);
  const producer = await driver.createProducer({ queue });
  let workers = null;
  try {
    workers = await startWorkers(base, 1, { QUEUE_NAME: queue, CHICORY_BENCH_EXPERIMENT: experiments.join(",") });
    await withTimeout(producer.runBatch("increment", 64), 30000, "warmup");
    await sleep(1500); // let idle polling settle
    return await fn(producer, workers.pids);
  } finally {
    if (workers) await workers.stop();
    await Promise.race([producer.close(), sleep(5000)]).catch(() => {});
  }
}

for (let rep = 1; rep <= reps; rep++) {
  for (const sys of orderFor(systems, rep, order)) {
    try {
      await withSystem(sys, rep, async (producer, pids) => {
        const w0 = pids.reduce((t, pid) => t + procCpuSeconds(pid), 0);
        const p0 = process.cpuUsage();
        const before = await commandStats();
        const i0 = await redisInfo("all");
        await withTimeout(producer.runBatch("increment", N), 120000, sys);
        const i1 = await redisInfo("all");
        const after = await commandStats();
        const pcpu = process.cpuUsage(p0);
        const w1 = pids.reduce((t, pid) => t + procCpuSeconds(pid), 0);
        const d = (k) => Number(i1[k]) - Number(i0[k]);
        const redisCpuUsPerJob = ((d("used_cpu_user") + d("used_cpu_sys")) * 1e6) / N;
        const per = {};
        const usecPer = {};
        let calls = 0;
        let usec = 0;
        for (const [k, v] of Object.entries(after)) {
          const dc = v.calls - (before[k]?.calls || 0);
          const du = v.usec - (before[k]?.usec || 0);
          if (dc > 0) {
            per[k] = +(dc / N).toFixed(3);
            usecPer[k] = +(du / N).toFixed(2);
            calls += dc;
            usec += du;
          }
        }
        const row = {
          system: sys,
          rep,
          N,
          commandsPerJob: calls / N,
          redisCpuUsPerJob,
          commandUsecPerJob: usec / N,
          producerCpuUsPerJob: (pcpu.user + pcpu.system) / N,
          workerCpuUsPerJob: ((w1 - w0) * 1e6) / N,
          netInPerJob: d("total_net_input_bytes") / N,
          netOutPerJob: d("total_net_output_bytes") / N,
          perCommand: per,
          usecPerCommand: usecPer,
        };
        rows.push(row);
        console.log(
          `rep${rep} ${sys.padEnd(13)} cmds/job=${row.commandsPerJob.toFixed(2)} redisCPU=${redisCpuUsPerJob.toFixed(1)}us/job ` +
            `producerCPU=${row.producerCpuUsPerJob.toFixed(0)}us/job workerCPU=${row.workerCpuUsPerJob.toFixed(0)}us/job ` +
            `net=${row.netInPerJob.toFixed(0)}B in ${row.netOutPerJob.toFixed(0)}B out ${JSON.stringify(per)}`,
        );
      });
    } catch (e) {
      console.error(`!! ${sys} rep${rep}: ${e.message}`);
      rows.push({ system: sys, rep, error: e.message });
    }
    save();
  }
}

if (a.monitor) {
  for (const sys of systems) {
    try {
      await withSystem(sys, "mon", async (producer) => {
        const base = connect();
        const mon = await base.monitor(); // a separate connection in MONITOR mode
        base.disconnect();
        mon.on("error", (e) => console.error(`monitor connection: ${e.message}`)); // diagnostic only: never crash
        const client = {};
        const script = {};
        mon.on("monitor", (_time, args, source, database) => {
          if (Number(database) !== REDIS.db) return; // other databases' traffic is not ours
          const cmd = String(args[0]).toLowerCase();
          const bucket = source === "lua" ? script : client;
          bucket[cmd] = (bucket[cmd] || 0) + 1;
        });
        await sleep(200);
        await withTimeout(producer.runBatch("increment", monitorN), 120000, `${sys} monitor`);
        await sleep(200);
        mon.disconnect();
        const per = (o) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, +(v / monitorN).toFixed(3)]));
        const sum = (o) => Object.values(o).reduce((s, x) => s + x, 0) / monitorN;
        const row = {
          system: sys,
          N: monitorN,
          clientCommandsPerJob: sum(client),
          scriptCommandsPerJob: sum(script),
          client: per(client),
          script: per(script),
        };
        monitorRows.push(row);
        console.log(
          `monitor ${sys.padEnd(13)} client=${row.clientCommandsPerJob.toFixed(2)}/job script=${row.scriptCommandsPerJob.toFixed(2)}/job client:${JSON.stringify(row.client)} script:${JSON.stringify(row.script)}`,
        );
      });
    } catch (e) {
      console.error(`!! monitor ${sys}: ${e.message}`);
      monitorRows.push({ system: sys, error: e.message });
    }
    save();
  }
}
await flushBenchDb();
save();
for (const sys of systems) {
  const rs = rows.filter((r) => r.system === sys && !r.error);
  console.log(
    sys.padEnd(13),
    "median cmds/job",
    median(rs.map((r) => r.commandsPerJob)).toFixed(2),
    "redis CPU us/job",
    median(rs.map((r) => r.redisCpuUsPerJob)).toFixed(1),
  );
}
console.log(`wrote ${out}`);
process.exit(0);

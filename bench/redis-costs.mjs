// What Redis-side steps cost on this machine, outside any queue (a diagnostic for PROFILE.md):
//   round trip  sequential PINGs: round-trip time, and CPU per round trip of this process and
//               of Redis (each write wakes the other side; on loopback the sender's write also
//               runs the receiver's TCP path)
//   publish     100,000 SPEC-shaped messages (≈ 160 B) as pipelined XADDs, or as
//               publish-batch.lua calls of 500 (what the Redis broker sends): Redis CPU per message
//   settle      rounds of 32 deliveries (fill and read included in every variant), settled with
//               the broker's ack-with-records script (records + PUBLISH + fenced XACK/XDEL), the
//               same writes as native commands in MULTI (SET x32, PUBLISH, then ack.lua for the
//               fence), or a bare XACK without results: Redis CPU per job, and this process's
//               CPU per job (building the records and commands, reading the replies)
// The scripts are composed by the broker's own module, loaded from the sources (src/, or
// CHICORY_SRC: the bundled build has no module of its own for it), so they are the scripts the
// broker built from that tree loads. Redis CPU is the used_cpu_user+sys difference of INFO cpu
// around each phase.
// Usage: node bench/redis-costs.mjs [--reps=2] [--out=bench/results/tmp/redis-costs.json]
import { median, parseArgs, writeJson } from "./lib/common.mjs";
import { connect, flushBenchDb } from "./lib/redis.mjs";
import { importSource } from "./lib/source.mjs";

const a = parseArgs();
const REPS = Number(a.reps || 2);
const { brokerScriptSource } = await importSource("brokers/redis/redis-scripts.ts");
const ACK = brokerScriptSource("chicoryAck");
const ACK_WITH_RECORDS = brokerScriptSource("chicoryAckWithRecords");
const PUBLISH_BATCH = brokerScriptSource("chicoryPublishBatch");

const r = connect();
const sha = {
  ack: await r.script("LOAD", ACK),
  ackWithRecords: await r.script("LOAD", ACK_WITH_RECORDS),
  publishBatch: await r.script("LOAD", PUBLISH_BATCH),
};
const redisCpuS = async () => {
  const info = await r.info("cpu");
  const field = (k) => Number(info.match(new RegExp(`${k}:([\\d.]+)`))[1]);
  return field("used_cpu_user") + field("used_cpu_sys");
};
const cpuUs = (from) => {
  const u = process.cpuUsage(from);
  return u.user + u.system;
};
const body = (i) =>
  JSON.stringify({
    v: 1,
    id: `4f5f0513-80c5-4a4e-a110-${String(i).padStart(12, "0")}`,
    name: "increment",
    args: [i],
    retries: 0,
    eta: null,
    priority: null,
    firstFailureAt: null,
    lastError: null,
  });
const record = (taskId) =>
  JSON.stringify({
    taskId,
    state: "SUCCESS",
    result: 6,
    retries: 0,
    taskName: "increment",
    updatedAt: new Date().toISOString(),
  });

async function roundTrip(calls = 5000) {
  const s0 = await redisCpuS();
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < calls; i++) await r.ping();
  const ms = performance.now() - t0;
  const clientUs = cpuUs(c0);
  const redisUs = ((await redisCpuS()) - s0) * 1e6;
  return { rttUs: (ms * 1000) / calls, clientCpuUs: clientUs / calls, redisCpuUs: redisUs / calls };
}

async function publish(mode, n = 100000, batch = 500) {
  await flushBenchDb();
  const s0 = await redisCpuS();
  for (let i = 0; i < n; i += batch) {
    const bodies = Array.from({ length: batch }, (_, j) => body(i + j));
    if (mode === "xadd") {
      const p = r.pipeline();
      for (const b of bodies) p.xadd("costs:stream", "*", "data", b);
      await p.exec();
    } else await r.evalsha(sha.publishBatch, 2, "costs:stream", `costs:sent:${i}`, 60000, ...bodies);
  }
  return (((await redisCpuS()) - s0) * 1e6) / n;
}

async function settle(mode, rounds = 2000, batch = 32) {
  await flushBenchDb();
  await r.xgroup("CREATE", "costs:stream", "g", "0", "MKSTREAM");
  const s0 = await redisCpuS();
  const c0 = process.cpuUsage();
  for (let k = 0; k < rounds; k++) {
    const p = r.pipeline();
    for (let i = 0; i < batch; i++) p.xadd("costs:stream", "*", "data", body(i));
    p.xreadgroup("GROUP", "g", "c", "COUNT", batch, "STREAMS", "costs:stream", ">");
    const replies = await p.exec();
    const ids = replies[batch][1][0][1].map(([id]) => id);
    const keys = ids.map((_, i) => `costs:result:t${k}-${i}`);
    const records = keys.map((key) => record(key.slice("costs:result:".length)));
    const ackArgs = ["g", "c", ids[0], ids[ids.length - 1], ...ids];
    if (mode === "script") {
      const storeArgs = [86400, "costs:done", "costs:result:".length, 4096, ...records];
      await r.evalsha(
        sha.ackWithRecords,
        keys.length + 2,
        ...keys,
        "costs:stream",
        "costs:unique",
        keys.length,
        ...storeArgs,
        ...ackArgs,
      );
    } else if (mode === "multi") {
      const m = r.multi();
      for (let i = 0; i < records.length; i++) m.set(keys[i], records[i], "EX", 86400);
      m.publish("costs:done", `[${records.join(",")}]`);
      m.evalsha(sha.ack, 2, "costs:stream", "costs:unique", ...ackArgs);
      await m.exec();
    } else await r.xack("costs:stream", "g", ...ids);
  }
  const clientUs = cpuUs(c0);
  return { redis: (((await redisCpuS()) - s0) * 1e6) / (rounds * batch), client: clientUs / (rounds * batch) };
}

const rows = [];
for (let rep = 1; rep <= REPS; rep++) {
  const row = {
    rep,
    roundTrip: await roundTrip(),
    publishUsPerMessage: { xadd: await publish("xadd"), script: await publish("script") },
    settleUsPerJob: { script: await settle("script"), multi: await settle("multi"), xackOnly: await settle("xack") },
  };
  rows.push(row);
  const rt = row.roundTrip;
  const f = (x) => x.toFixed(2);
  const st = row.settleUsPerJob;
  console.log(
    `rep${rep} round trip ${rt.rttUs.toFixed(0)} µs (CPU: client ${rt.clientCpuUs.toFixed(0)}, Redis ${rt.redisCpuUs.toFixed(0)} µs) | ` +
      `publish µs/msg: XADD ${f(row.publishUsPerMessage.xadd)}, script ${f(row.publishUsPerMessage.script)} | ` +
      `settle µs/job Redis (client): script ${f(st.script.redis)} (${f(st.script.client)}), MULTI ${f(st.multi.redis)} (${f(st.multi.client)}), XACK only ${f(st.xackOnly.redis)} (${f(st.xackOnly.client)})`,
  );
}
const med = (pick) => median(rows.map(pick)).toFixed(2);
console.log(
  `median: round trip ${med((x) => x.roundTrip.rttUs)} µs, client CPU ${med((x) => x.roundTrip.clientCpuUs)} µs, ` +
    `Redis CPU ${med((x) => x.roundTrip.redisCpuUs)} µs | publish XADD ${med((x) => x.publishUsPerMessage.xadd)} / ` +
    `script ${med((x) => x.publishUsPerMessage.script)} µs/msg | settle, Redis CPU (client CPU) µs/job: script ` +
    `${med((x) => x.settleUsPerJob.script.redis)} (${med((x) => x.settleUsPerJob.script.client)}) / MULTI ` +
    `${med((x) => x.settleUsPerJob.multi.redis)} (${med((x) => x.settleUsPerJob.multi.client)}) / XACK only ` +
    `${med((x) => x.settleUsPerJob.xackOnly.redis)} (${med((x) => x.settleUsPerJob.xackOnly.client)})`,
);
if (a.out) writeJson(a.out, { started: new Date().toISOString(), node: process.version, rows });
await flushBenchDb();
r.disconnect();

import fs from "node:fs";
import { Redis } from "ioredis";

const r = new Redis({ db: 2 });
const lua = fs.readFileSync("src/backends/redis/scripts/store-results.lua", "utf8");
r.defineCommand("sr", { lua });
const cpu = async () => {
  const s = await r.info("cpu");
  const m = (k) => Number(new RegExp(k + ":([\\d.]+)").exec(s)[1]);
  return m("used_cpu_sys") + m("used_cpu_user");
};
const rec = (id) =>
  JSON.stringify({
    state: "SUCCESS",
    taskId: id,
    result: 2,
    retries: 0,
    taskName: "work",
    updatedAt: new Date().toISOString(),
  });
const N = 64000,
  B = 32;
async function run(label, fn) {
  const c0 = await cpu();
  const p0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < N; i += B * 20) {
    const ps = [];
    for (let b = 0; b < 20; b++) {
      const ids = Array.from(
        { length: B },
        (_, j) => `3f1b2c4d-1234-4abc-9def-${String(i + b * B + j).padStart(12, "0")}`,
      );
      ps.push(fn(ids));
    }
    await Promise.all(ps);
  }
  const c1 = await cpu();
  const p = process.cpuUsage(p0);
  console.log(
    label.padEnd(12),
    "redis",
    (((c1 - c0) * 1e6) / N).toFixed(1),
    "µs/job  client",
    ((p.user + p.system) / N).toFixed(1),
    "µs/job",
  );
}
for (let k = 0; k < 2; k++) {
  await run("lua", (ids) =>
    r.sr(ids.length, ...ids.map((id) => `pfx:result:${id}`), 86400, "pfx:done", 11, 2048, ...ids.map(rec)),
  );
  await run("pipeline", (ids) => {
    const p = r.pipeline();
    for (const id of ids) p.set(`pfx:result:${id}`, rec(id), "EX", 86400);
    p.publish("pfx:done", JSON.stringify(ids));
    return p.exec();
  });
  await run("pipe+recs", (ids) => {
    const p = r.pipeline();
    const js = ids.map(rec);
    ids.forEach((id, j) => p.set(`pfx:result:${id}`, js[j], "EX", 86400));
    p.publish("pfx:done", "[" + js.join(",") + "]");
    return p.exec();
  });
}
await r.flushdb();
r.disconnect();

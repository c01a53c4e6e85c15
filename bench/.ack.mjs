import fs from "node:fs";
import { Redis } from "ioredis";

const r = new Redis({ db: 2 });
const variants = { cur: fs.readFileSync("src/brokers/redis/scripts/ack.lua", "utf8") };
if (fs.existsSync("/tmp/ack2.lua")) variants.new = fs.readFileSync("/tmp/ack2.lua", "utf8");
for (const [k, lua] of Object.entries(variants)) r.defineCommand("ack_" + k, { lua, numberOfKeys: 2 });
const cpu = async () => {
  const s = await r.info("cpu");
  const m = (k) => Number(new RegExp(k + ":([\\d.]+)").exec(s)[1]);
  return m("used_cpu_sys") + m("used_cpu_user");
};
const N = 32000,
  B = 32;
const cmp = (a, b) => {
  const [am, as] = a.split("-");
  const [bm, bs] = b.split("-");
  return am.length !== bm.length ? am.length - bm.length : am !== bm ? (am < bm ? -1 : 1) : Number(as) - Number(bs);
};
for (let rep = 0; rep < 2; rep++)
  for (const k of Object.keys(variants)) {
    await r.del("s");
    const p = r.pipeline();
    for (let i = 0; i < N; i++) p.xadd("s", "*", "data", "x".repeat(150));
    await p.exec();
    await r.xgroup("CREATE", "s", "g", "0");
    const batches = [];
    for (let i = 0; i < N; i += B) {
      const res = await r.xreadgroup("GROUP", "g", "c1", "COUNT", B, "STREAMS", "s", ">");
      batches.push(res[0][1].map((e) => e[0]));
    }
    const c0 = await cpu();
    await Promise.all(
      batches.map((ids) =>
        k === "cur"
          ? r["ack_" + k]("s", "u", "g", "c1", ...ids)
          : (() => {
              let lo = ids[0],
                hi = ids[0];
              for (const id of ids) {
                if (cmp(id, lo) < 0) lo = id;
                if (cmp(hi, id) < 0) hi = id;
              }
              return r["ack_" + k]("s", "u", "g", "c1", lo, hi, ...ids);
            })(),
      ),
    );
    const c1 = await cpu();
    console.log(k, "redis", (((c1 - c0) * 1e6) / N).toFixed(2), "µs/job", await r.xlen("s"));
  }
await r.del("s");
r.disconnect();

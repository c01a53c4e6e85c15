// The same API on Redis. Needs a Redis server.
// Run: CHICORY_BROKER_URL=redis://127.0.0.1:6379/0 npx tsx examples/04-redis.ts   (that URL is the default)
import { Chicory, Worker } from "chicory";

const app = new Chicory({ broker: process.env.CHICORY_BROKER_URL ?? "redis://127.0.0.1:6379/0" });

const resize = app.task({ name: "resize", queue: "images" }, async (url: string, width: number) => ({ url, width }));

const worker = new Worker(app, { queue: ["images"], concurrency: 16, logLevel: "WARNING" });
await worker.start();
const results = await Promise.all(Array.from({ length: 100 }, (_, i) => resize.delay(`img-${i}.png`, 640)));
const values = await Promise.all(results.map((r) => r.get({ timeout: 10 })));
console.log(`resized ${values.length} images on Redis`);
await worker.stop();

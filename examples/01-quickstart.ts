// The README's quick example in one file: define tasks, start a worker, dispatch, wait.
// Run: npx tsx examples/01-quickstart.ts   (uses ./chicory.db; no server needed)
import { Chicory, Worker } from "chicory";

const app = new Chicory();

const add = app.task(async function add(a: number, b: number) {
  return a + b;
});

const worker = new Worker(app, { concurrency: 4, logLevel: "WARNING" });
await worker.start();

const result = await add.delay(2, 3);
console.log("2 + 3 =", await result.get({ timeout: 10 }));

await worker.stop();

// Dispatches a few tasks and prints their results (run a worker first, see tasks.ts).
import { add, app, flaky, greet } from "./tasks.js";

const results = await Promise.all([add.delay(2, 3), greet.delay("Chicory"), flaky.delay("flaky job")]);
for (const result of results) {
  console.log(result.taskId, "->", await result.get({ timeout: 30 }));
}
await app.disconnect();

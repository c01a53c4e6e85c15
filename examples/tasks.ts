// Tasks shared by the two-terminal example: `node dist/cli/main.js worker examples/tasks.ts`
// in a clone (`npx chicory worker …` where chicory is installed) in one terminal,
// `npx tsx examples/producer.ts` in another. Both use the embedded default (./chicory.db), so
// no server is needed.
import { Chicory, type TaskContext } from "chicory";

export const app = new Chicory();

export const add = app.task(async function add(a: number, b: number) {
  return a + b;
});

export const greet = app.task({ name: "greet", queue: "default" }, async (name: string) => `Hello, ${name}!`);

export const flaky = app.task(
  { name: "flaky", context: true, retryPolicy: { maxRetries: 3, retryDelay: "200ms" } },
  async (ctx: TaskContext, label: string) => {
    if (ctx.retries < 2) throw new Error(`${label}: not yet (attempt ${ctx.retries + 1})`);
    return `${label} succeeded after ${ctx.retries} retries`;
  },
);

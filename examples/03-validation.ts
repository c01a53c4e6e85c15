// Standard Schema validation of arguments (with coercion) and results, here with zod.
// Needs zod (`npm install zod`; any Standard Schema library works the same way).
// Run: npx tsx examples/03-validation.ts
import { Chicory, ValidationError, Worker } from "chicory";
import { z } from "zod";

const app = new Chicory({ broker: "memory://", validationMode: "strict" });

const schedule = app.task(
  {
    name: "schedule",
    args: z.tuple([z.email(), z.coerce.date()]),
    result: z.object({ to: z.string(), at: z.string() }),
  },
  async (to, at) => ({ to, at: at.toISOString() }), // `at` arrives as a Date
);

const worker = new Worker(app, { logLevel: "ERROR" });
await worker.start();

console.log(await (await schedule.delay("ada@example.org", "2030-01-01T09:00:00Z")).get({ timeout: 5 }));
try {
  await schedule.delay("not an email", "2030-01-01T09:00:00Z");
} catch (error) {
  if (error instanceof ValidationError) console.log("rejected before publishing:", error.message);
}
await worker.stop();

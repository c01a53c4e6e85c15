// Retries with backoff, a task that gives up into the dead-letter queue, and a replay.
// Run: npx tsx examples/02-retries-and-dlq.ts
import { Chicory, type TaskContext, TaskFailedError, Worker } from "chicory";

const app = new Chicory({ broker: "sqlite:chicory-example-02.db" });
let paymentsUp = false;

const charge = app.task(
  { name: "charge", context: true, retryPolicy: { maxRetries: 2, retryDelay: "100ms", backoff: "exponential" } },
  async (ctx: TaskContext, orderId: string) => {
    if (!paymentsUp) throw new Error(`payment service down (attempt ${ctx.retries + 1})`);
    return { orderId, charged: true };
  },
);

const worker = new Worker(app, { useDeadLetterQueue: true, logLevel: "ERROR" });
await worker.start();

const result = await charge.delay("order-1");
try {
  await result.get({ timeout: 10 });
} catch (error) {
  if (error instanceof TaskFailedError) console.log("failed after retries:", error.remoteMessage);
}
console.log("state:", await result.state());

const [dead] = await app.broker.getDlqMessages("default");
console.log("in the DLQ:", dead?.originalMessage?.name, dead?.error);

paymentsUp = true;
await app.broker.replayFromDlq(dead?.messageId ?? "", "default");
for (let i = 0; i < 100 && (await result.state()) !== "SUCCESS"; i++) await new Promise((r) => setTimeout(r, 50));
console.log("after replay:", await result.get({ timeout: 10 }));

await worker.stop();

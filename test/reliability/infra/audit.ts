/**
 * In-process audit of the at-least-once ordering rule "a message is acknowledged only after
 * its result is durable": the backend's `storeResult` and every delivery's `ack` are wrapped
 * (instance properties shadowing the methods; behaviour unchanged) so the test can check, at
 * the moment of each ack, that a SUCCESS write of that task already returned.
 */
import type { Backend, TaskRecord } from "../../../src/backends/backend.js";
import type { Broker, Consumer, ConsumerOptions, Delivery } from "../../../src/brokers/broker.js";
import { peekMessage } from "../../../src/core/message.js";

/** What the audit saw. */
export interface AckAudit {
  /** Task ids whose SUCCESS write returned. */
  readonly durable: Set<string>;
  /** Task ids acknowledged. */
  readonly acked: Set<string>;
  /** Task ids acknowledged while no SUCCESS write of theirs had returned. */
  readonly ackedBeforeDurable: string[];
  /** storeResult calls that rejected (the worker retries them). */
  storeFailures: number;
  /** First error text of a failed storeResult. */
  firstStoreError: string | null;
}

/** Wraps `backend.storeResult` and the acks of `broker`'s deliveries; returns the audit. */
export function auditAcks(broker: Broker, backend: Backend): AckAudit {
  const audit: AckAudit = {
    durable: new Set(),
    acked: new Set(),
    ackedBeforeDurable: [],
    storeFailures: 0,
    firstStoreError: null,
  };
  const storeResult = backend.storeResult.bind(backend);
  backend.storeResult = async (record: TaskRecord) => {
    try {
      await storeResult(record);
    } catch (error) {
      audit.storeFailures++;
      audit.firstStoreError ??= error instanceof Error ? error.message : String(error);
      throw error;
    }
    if (record.state === "SUCCESS") audit.durable.add(record.taskId);
  };
  const consumer = broker.consumer.bind(broker);
  broker.consumer = (options: ConsumerOptions): Consumer => {
    const c = consumer(options);
    const fetch = c.fetch.bind(c);
    c.fetch = async (max: number, signal: AbortSignal): Promise<Delivery[]> => {
      const deliveries = await fetch(max, signal);
      for (const d of deliveries) {
        const ack = d.ack.bind(d);
        const id = peekMessage(d.body)?.id ?? "";
        Object.defineProperty(d, "ack", {
          configurable: true,
          value: async () => {
            if (!audit.durable.has(id)) audit.ackedBeforeDurable.push(id);
            await ack();
            audit.acked.add(id);
          },
        });
      }
      return deliveries;
    };
    return c;
  };
  return audit;
}

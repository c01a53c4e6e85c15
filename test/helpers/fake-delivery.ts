/**
 * A fake broker delivery for settle tests: records the settle calls it gets, and can refuse
 * them (see {@link FakeOptions}).
 * @module
 */
import type { TaskRecord } from "../../src/backends/backend.js";
import type { Delivery } from "../../src/brokers/broker.js";
import { DeadLetterQueueFullError } from "../../src/errors.js";

/** How the fake delivery behaves beyond recording its calls. */
export interface FakeOptions {
  /** `holdsLease()` answers this (absent: the delivery has no such method). */
  readonly holdsLease?: boolean;
  /** `leaseState()` answers this (absent: the delivery has no such method). */
  readonly leaseState?: "held" | "taken" | "ownerless";
  /** Every settle call rejects. */
  readonly failing?: boolean;
  /** The DLQ move rejects as a full DLQ refuses it. */
  readonly dlqFull?: boolean;
  /** The one-call settles that carry a record reject (the record is refused). */
  readonly recordsRefused?: boolean;
  /** A SUCCESS record is refused as Redis refuses an argument over `proto-max-bulk-len`. */
  readonly resultTooLarge?: boolean;
  /**
   * The backend refuses SUCCESS records as MySQL refuses a packet over `max_allowed_packet`
   * (`afterTransient`: the first write fails as a dropped connection does).
   */
  readonly backendRefuses?: "always" | "afterTransient";
}

/** How a broker passes on Redis's refusal of a too long argument (the driver's error as cause). */
const bulkTooLong = () =>
  new Error("redis broker ack failed (redis://h:6379/0): ERR Protocol error: invalid bulk length", {
    cause: Object.assign(new Error("ERR Protocol error: invalid bulk length"), { name: "ReplyError" }),
  });

/** A delivery that records which settle calls it got. */
export function fakeDelivery(withRecords: boolean, options: FakeOptions = {}) {
  const calls: string[] = [];
  const records: TaskRecord[] = [];
  const call = async (name: string) => {
    calls.push(name);
    if (options.failing) throw new Error(`${name} failed`);
  };
  const delivery: Delivery = {
    queue: "q",
    deliveryId: "1-0",
    body: "{}",
    deliveryCount: 1,
    ack: () => call("ack"),
    retry: () => call("retry"),
    deadLetter: async () => {
      await call("deadLetter");
      if (options.dlqFull) throw new DeadLetterQueueFullError("the DLQ of q is full (its cap: 1)");
    },
    release: (release) => call(release?.countDelivery ? "release(counted)" : "release"),
    ...(options.holdsLease === undefined ? {} : { holdsLease: async () => options.holdsLease === true }),
    ...(options.leaseState === undefined ? {} : { leaseState: async () => options.leaseState ?? "held" }),
    ...(withRecords
      ? {
          ackWithRecord: async (record: TaskRecord) => {
            calls.push("ackWithRecord");
            if (options.recordsRefused) throw new Error("record refused");
            if (options.resultTooLarge && record.state === "SUCCESS") throw bulkTooLong();
            records.push(record);
          },
          deadLetterWithRecord: async (_error: string, record: TaskRecord) => {
            calls.push("deadLetterWithRecord");
            if (options.recordsRefused) throw new Error("record refused");
            records.push(record);
          },
          writeDeadLetterWithRecord: async (_error: string, record: TaskRecord) => {
            calls.push("writeDeadLetterWithRecord");
            if (options.recordsRefused) throw new Error("record refused");
            records.push(record);
          },
        }
      : {}),
  };
  return { delivery, calls, records };
}

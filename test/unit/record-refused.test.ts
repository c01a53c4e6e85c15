import { describe, expect, it } from "vitest";
import { recordRefusal } from "../../src/core/record-refused.js";
import { BackendConnectionError } from "../../src/errors.js";

const driverError = (message: string, fields: Record<string, unknown>) => Object.assign(new Error(message), fields);

describe("recordRefusal: a server's refusal of a record for its size", () => {
  it("recognizes MySQL/MariaDB, PostgreSQL, SQLite and Redis refusals, through wrapping causes", () => {
    const mysql = driverError("Got a packet bigger than 'max_allowed_packet' bytes", {
      code: "ER_NET_PACKET_TOO_LARGE",
      errno: 1153,
    });
    expect(recordRefusal(mysql)).toBe("Got a packet bigger than 'max_allowed_packet' bytes");
    expect(recordRefusal(new BackendConnectionError("storeResult failed", { cause: mysql }))).toMatch(
      /max_allowed_packet/,
    );
    expect(
      recordRefusal(driverError("Result of repeat() was larger than max_allowed_packet", { errno: 1301 })),
    ).toMatch(/larger than/);
    expect(recordRefusal(driverError("string too long", { code: "54000" }))).toBe("string too long");
    expect(recordRefusal(driverError("string or blob too big", { code: "SQLITE_TOOBIG" }))).toBe(
      "string or blob too big",
    );
    const redis = new Error("wrapped", { cause: new Error("ERR Protocol error: invalid bulk length") });
    expect(recordRefusal(new Error("outer", { cause: redis }))).toBe("ERR Protocol error: invalid bulk length");
  });

  it("does not take a lost connection, a full server or any other error for a refusal", () => {
    for (const error of [
      driverError("write ECONNRESET", { code: "ECONNRESET" }),
      driverError("Connection lost: The server closed the connection.", {
        code: "PROTOCOL_CONNECTION_LOST",
        fatal: true,
      }),
      new Error("OOM command not allowed when used memory > 'maxmemory'."),
      driverError("terminating connection due to administrator command", { code: "57P01" }),
      driverError("database is locked", { code: "SQLITE_BUSY" }),
      new BackendConnectionError("no answer within 10 s"),
      "a string",
      null,
      undefined,
    ]) {
      expect(recordRefusal(error)).toBeUndefined();
    }
  });

  it("stops at a cycle of causes", () => {
    const a = new Error("a") as Error & { cause?: unknown };
    const b = new Error("b", { cause: a });
    a.cause = b;
    expect(recordRefusal(a)).toBeUndefined();
  });
});

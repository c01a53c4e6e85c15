import { describe, expect, it } from "vitest";
import { DriverNotInstalledError } from "../../src/index.js";

describe("DriverNotInstalledError", () => {
  it("names the package to install, or every one of several at once", () => {
    expect(new DriverNotInstalledError("ioredis@6", "the Redis broker").message).toBe(
      'the Redis broker needs the package "ioredis@6": run npm install ioredis@6',
    );
    expect(new DriverNotInstalledError("tedious@19 tarn@3", "the MSSQL result backend").message).toBe(
      'the MSSQL result backend needs the packages "tedious@19" and "tarn@3": run npm install tedious@19 tarn@3',
    );
  });
});

import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { createLogger } from "../../node/observability/logger.ts";

/** The node's logger writing to memory: what a line would carry. */
function capture() {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk, _encoding, done) {
      lines.push(String(chunk));
      done();
    },
  });
  return { logger: createLogger({ level: "info", operatorId: "001-01", destination }), lines };
}

describe("the node's logs", () => {
  it("redact a token, credential, cookie or activation code at the top of a log object, in a body and in headers, and keep an error's or a refusal's code readable", () => {
    const { logger, lines } = capture();
    logger.warn(
      {
        token: "tok-top",
        access_token: "tok-oauth",
        body: { credential: "cred-body", code: "123456", activationCode: "654321" },
        headers: { authorization: "Bearer tok-header", cookie: "session=tok-cookie" },
        req: { headers: { authorization: "Basic tok-basic" } },
        err: { code: "SQLITE_FULL", message: "database or disk is full" },
      },
      "by mistake",
    );
    logger.warn({ code: "replayed jti", peer: "002-01" }, "federation message rejected");
    const [line, refusal] = lines;
    // A refusal's reason, at the top of its line, stays readable (an activation code is never logged there).
    expect(JSON.parse(refusal!).code).toBe("replayed jti");
    for (const secret of ["tok-top", "tok-oauth", "cred-body", "123456", "654321", "tok-header", "tok-cookie", "tok-basic"]) expect(line).not.toContain(secret);
    expect(JSON.parse(line!).err.code).toBe("SQLITE_FULL");
  });
});

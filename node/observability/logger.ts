import pino, { type Logger } from "pino";

/**
 * JSON logs (pino). Headers that carry credentials are redacted at the source, so a token,
 * code or key can never reach a log line even if a caller logs a request by mistake.
 */
export function createLogger(options: { level: string; operatorId: string; destination?: pino.DestinationStream }): Logger {
  return pino(
    {
      level: options.level,
      base: { operatorId: options.operatorId },
      redact: {
        paths: ["req.headers.authorization", "headers.authorization", "*.accessToken", "*.access_token", "*.code", "*.credential", "*.token"],
        censor: "[redacted]",
      },
    },
    options.destination,
  );
}

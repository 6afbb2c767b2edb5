import type { Logger } from "pino";
import type { Principal } from "../tokens/scopes.ts";

/** Per-request variables set by middleware. */
export interface AppEnv {
  Variables: {
    requestId: string;
    logger: Logger;
    principal: Principal;
  };
}

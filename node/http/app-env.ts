import type { Principal } from "../tokens/scopes.ts";

/** Per-request variables set by middleware. */
export interface AppEnv {
  Variables: {
    requestId: string;
    principal: Principal;
  };
}

import type { HttpBindings } from "@hono/node-server";
import type { Principal } from "../tokens/scopes.ts";

/** Per-request variables set by middleware. */
export interface AppEnv {
  /** The Node request and response (@hono/node-server), for what the Fetch API cannot do: an SSE stream written as events commit. */
  Bindings: HttpBindings;
  Variables: {
    requestId: string;
    principal: Principal;
    /** Set by reusableJson: this 200 answer may be kept in ReadyAnswers. */
    reusableBody: string;
  };
}

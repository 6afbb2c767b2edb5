import { z } from "@hono/zod-openapi";
import { isValidTwinName, TWIN_NAME } from "../domain/twin.ts";

/** Shared request/response schemas of the device API (DESIGN "Device API"). */
export const operatorIdSchema = z.string().regex(/^\d{3}-\d{2,3}$/).openapi({ example: "001-01" });
export const clientCorrelatorSchema = z.string().min(1).max(128);
export const addressSchema = z.string().openapi({ example: "tel:+15550001" });
export const statusSchema = z.enum(["On", "Off"]);

export const errorSchema = z
  .object({
    requestError: z.object({
      serviceException: z.object({ messageId: z.string(), text: z.string(), variables: z.array(z.string()) }).optional(),
      policyException: z.object({ messageId: z.string(), text: z.string(), variables: z.array(z.string()) }).optional(),
    }),
  })
  .openapi("RequestError");

export const twinSchema = z
  .object({
    twinId: z.uuid(),
    primaryAddress: addressSchema,
    secondaryAddress: addressSchema,
    secondaryOperatorId: operatorIdSchema,
    name: z.string(),
    status: statusSchema,
    resourceURL: z.url(),
    accessToken: z.string().optional(),
  })
  .openapi("Twin");

const timestampSchema = z.iso.datetime().openapi({ example: "2030-01-01T12:00:00.000Z" });

/** An activation code as the secondary sees it (DESIGN "Device API"; HLF-SD-001..005). */
export const activationCodeSchema = z
  .object({
    code: z.string().optional().openapi({ description: "The code the primary enters: in the answer that issued it (also when a clientCorrelator replays it), never in a read" }),
    operatorId: operatorIdSchema.openapi({ description: "The operator that issued the code (the primary names it when redeeming)" }),
    expiresAt: timestampSchema,
    status: z.enum(["Pending", "Used", "Expired"]),
    resourceURL: z.url(),
    twin: twinSchema.optional().openapi({ description: "Once Used: the twin (its resourceURL is the secondary's twinning)" }),
    accessToken: z.string().optional().openapi({ description: "Once Used: the secondary's twin-scoped (`twinning:twin`) access token" }),
  })
  .openapi("ActivationCode");

/** The answer to a code request: the code itself is there. */
export const issuedActivationCodeSchema = activationCodeSchema.extend({ code: z.string().openapi({ example: "123456" }) }).openapi("IssuedActivationCode");

/** The secondary's view of its twin (HLF-SD-006). */
export const twinningSchema = z
  .object({
    twinId: z.uuid(),
    primaryAddress: addressSchema,
    primaryOperatorId: operatorIdSchema,
    status: statusSchema,
    name: z.string(),
  })
  .openapi("Twinning");

/** HLF-SD-009: a token for the primary's services, minted by the primary's operator. */
export const primaryServicesSchema = z
  .object({
    accessToken: z.string().openapi({ description: "`primary-services` token: sub = the primary, act.sub = the secondary" }),
    expiresAt: timestampSchema,
    endpoints: z.object({ messaging: z.url(), nms: z.url() }).openapi({ description: "The primary operator's messaging and NMS services" }),
  })
  .openapi("PrimaryServices");

export const callbackReferenceSchema = z
  .object({
    notifyURL: z.url().openapi({ description: "Where the node POSTs the notifications (http or https)" }),
    callbackData: z.string().optional().openapi({ description: "Given back in every notification to this subscription" }),
  })
  .openapi("CallbackReference");

/** A callback subscription (HLF-PD-007, HLF-SD-008, HLF-CM-005). */
export const subscriptionSchema = z
  .object({
    callbackReference: callbackReferenceSchema,
    duration: z.number().int().optional().openapi({ description: "Seconds the subscription lasts from its creation (as granted: capped by policy)" }),
    resourceURL: z.url(),
    clientCorrelator: z.string().optional().openapi({ description: "In the answer to a POST that gave one" }),
  })
  .openapi("Subscription");

export const subscriptionListSchema = z
  .object({ subscription: z.array(subscriptionSchema), resourceURL: z.url() })
  .openapi("SubscriptionList");

/** DESIGN "Notifications": what each of the three notification types carries (node/domain/notification.ts). */
export const notificationSchema = z
  .object({
    twinId: z.uuid(),
    primaryAddress: addressSchema,
    secondaryAddress: addressSchema,
    status: statusSchema.openapi({ description: "The twin's status at the change; a deactivation keeps the last one" }),
    changedBy: z.enum(["primary", "secondary"]),
    timestamp: timestampSchema,
    callbackData: z.string().optional().openapi({ description: "The subscription's callbackData, in callbacks to a subscription that gave one (never on the event stream)" }),
  })
  .openapi("TwinningNotification");

export const notificationTypes = ["twinningStatusNotification", "twinningActivatedNotification", "twinningDeactivatedNotification"] as const;
const notificationOf = (type: (typeof notificationTypes)[number], component: string, description: string) =>
  z.object({ [type]: notificationSchema }).openapi(component, { description });

/** A notification's JSON body (one root key naming its type): a callback's body, an event's `data`. */
export const notificationBodySchema = z
  .union([
    notificationOf("twinningStatusNotification", "TwinningStatusNotification", "The other side toggled the twin On or Off (HLF-PD-007, HLF-SD-008)"),
    notificationOf("twinningActivatedNotification", "TwinningActivatedNotification", "The primary activated a twin with this secondary (to the secondary; changedBy primary)"),
    notificationOf("twinningDeactivatedNotification", "TwinningDeactivatedNotification", "The other side deactivated the twin (HLF-PD-004, HLF-SD-007)"),
  ])
  .openapi("TwinningNotificationBody", { description: "One notification, as sent to a callback's notifyURL and as an event stream's `data`" });

// A name is neither a UUID nor a tel: URI: a twin is named by its twinId, name or secondary address (HLF-PD-003).
const NAME_RULE = "1-64 letters, digits, space . _ ' -; not a twin id, not starting with tel:";
// The document carries the regex's source: the generator would print the literal (with its `/u`
// flag), which no string matches. The source uses Unicode property escapes (`u` semantics, as
// JSON Schema's ECMA-262 patterns are read).
export const nameSchema = z
  .string()
  .regex(TWIN_NAME, NAME_RULE)
  .refine(isValidTwinName, NAME_RULE)
  .openapi({ pattern: TWIN_NAME.source, description: `${NAME_RULE} (the pattern uses Unicode property escapes: compile it with the \`u\` flag)` });

const errorContent = { "application/json": { schema: errorSchema } };
const retryAfterHeader = {
  "Retry-After": { description: "Seconds to wait before trying again", schema: { type: "integer", minimum: 1 } },
} as const;

/**
 * The error answers every route can give (DESIGN "Errors"). 408 and 431 come from the node's
 * HTTP layer before any route (the OMA body still), 500 from anything unforeseen.
 */
export const errorResponses = {
  400: { description: "Invalid input (SVC0002, SVC0004, SVC1014, SVC3001)", content: errorContent },
  401: {
    description: "Missing, invalid, expired or revoked token (SVC2003)",
    headers: { "WWW-Authenticate": { description: 'Bearer realm="twinning", error="invalid_token"', schema: { type: "string" } } },
    content: errorContent,
  },
  403: { description: "Policy (POL0001, POL1037, POL1038, POL2001, POL2003, POL3003)", content: errorContent },
  404: { description: "Unknown resource (SVC0002)", content: errorContent },
  408: { description: "The request did not arrive in time (SVC0002 naming `request`)", content: errorContent },
  431: { description: "Request header fields too large (SVC0002 naming `headers`)", content: errorContent },
  500: { description: "Service error (SVC0001; no detail)", content: errorContent },
} as const;

/** A route that takes a request body: one over the node's limit is refused before it is read whole. */
export const bodyTooLarge = {
  413: { description: "Request body larger than allowed (SVC0002 naming `body`)", content: errorContent },
} as const;

/** 409, with the messageIds the route can answer it with. */
export const conflict = (messageIds: string) => ({ 409: { description: `Conflict (${messageIds})`, content: errorContent } }) as const;

/** 429 POL3004: failed activation attempts over the policy's limit. */
export const tooManyAttempts = {
  429: { description: "Too many failed activation attempts (POL3004); Retry-After says when to try again", headers: retryAfterHeader, content: errorContent },
} as const;

/** 503 SVC3002: what the route needs of the other operator that failed. Retry-After when the node's queue of messages for that operator is full. */
export const peerUnavailable = (when: string) =>
  ({
    503: {
      description: `Peer operator unreachable or refused (SVC3002): ${when}`,
      headers: retryAfterHeader,
      content: errorContent,
    },
  }) as const;

export const bearer = [{ bearer: [] }];
export const addrParam = z.object({ addr: z.string().openapi({ param: { name: "addr", in: "path" }, example: "tel:+15550001" }) });
